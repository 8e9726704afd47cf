"""The rule-file AST: frozen dataclasses, each node knowing where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Pos:
    """A position in a rule file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# ---- expressions -------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    """A literal: string, int, bool, none, or a list of literals."""

    value: object
    pos: Pos


@dataclass(frozen=True)
class Name:
    """A port read: an argument role or `out`."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class Attr:
    """`attr.NAME`: an attribute of the call."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class Call:
    """A call of a builtin function."""

    func: str
    args: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True)
class Index:
    """`base[index]`: a tuple field, a letter, or a list element."""

    base: Expr
    index: Expr
    pos: Pos


@dataclass(frozen=True)
class TupleExpr:
    """`(a, b, ...)`: a tuple of layouts."""

    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True)
class ListExpr:
    """`[a, b, ...]`: a list of values."""

    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True)
class Cond:
    """`test ? then : other`."""

    test: Expr
    then: Expr
    other: Expr
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    """A binary operator: `??`, `or`, `and`, comparisons and arithmetic."""

    op: str
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True)
class UnOp:
    """`not x` or `-x`."""

    op: str
    operand: Expr
    pos: Pos


Expr = Union[Lit, Name, Attr, Call, Index, TupleExpr, ListExpr, Cond, BinOp, UnOp]


def port_ref(e: Expr) -> tuple[str, int | None, Pos] | None:
    """(role, field index, position) when `e` names a port: `data`, `out`, `out[0]`
    (a non-negative integer literal index); None for any other expression."""
    if isinstance(e, Name):
        return e.name, None, e.pos
    if (
        isinstance(e, Index)
        and isinstance(e.base, Name)
        and isinstance(e.index, Lit)
        and isinstance(e.index.value, int)
        and not isinstance(e.index.value, bool)
        and e.index.value >= 0
    ):
        return e.base.name, e.index.value, e.base.pos
    return None


# ---- items ---------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """An equation target: a role or `out`, optionally one tuple field."""

    role: str
    index: int | None
    pos: Pos

    def __str__(self) -> str:
        return self.role if self.index is None else f"{self.role}[{self.index}]"


@dataclass(frozen=True)
class Equation:
    """`t1 = t2 = expr` (strong) or `t ?= expr` (weak)."""

    targets: tuple[Port, ...]
    expr: Expr
    weak: bool
    pos: Pos
    text: str


@dataclass(frozen=True)
class Family:
    """A rule body shared by many ops."""

    name: str
    roles: tuple[str, ...]
    equations: tuple[Equation, ...]
    pos: Pos


@dataclass(frozen=True)
class OpDef:
    """`op a, b : family` or `op a(roles) { ... }`, optionally `override`."""

    ops: tuple[tuple[str, Pos], ...]
    family: str | None
    roles: tuple[str, ...]
    equations: tuple[Equation, ...]
    override: bool
    pos: Pos


@dataclass(frozen=True)
class PluginDef:
    """A rule for `call_dps_packed` of one extern function, keyed by its name."""

    name: str
    roles: tuple[str, ...]
    equations: tuple[Equation, ...]
    override: bool
    pos: Pos


@dataclass(frozen=True)
class Ignore:
    """Ops deliberately left without a layout rule, with the reason."""

    patterns: tuple[tuple[str, Pos], ...]
    reason: str
    pos: Pos


@dataclass(frozen=True)
class NameDecl:
    """The base name calls of an op get."""

    op: str
    base: str
    pos: Pos


@dataclass(frozen=True)
class Include:
    """`include "file.rules"`, relative to the including file."""

    path: str
    pos: Pos


@dataclass(frozen=True)
class TensorArg:
    """An example argument `T[1, n, 4] float32 "NCH"`."""

    shape: tuple[int | str, ...]
    dtype: str
    layout: str | None
    pos: Pos


@dataclass(frozen=True)
class TupleArg:
    """An example argument `(T[..], T[..])`."""

    items: tuple[ExampleArg, ...]
    pos: Pos


@dataclass(frozen=True)
class ShapeArg:
    """An example argument `S[n, 4]`: a shape with symbolic dims."""

    dims: tuple[int | str, ...]
    pos: Pos


ExampleArg = Union[TensorArg, TupleArg, ShapeArg, Lit]


@dataclass(frozen=True)
class Example:
    """`example OP(args, attr=value) [given port = "L"] -> port = "L", ...`."""

    op: str
    args: tuple[ExampleArg, ...]
    kwargs: tuple[tuple[str, object], ...]
    given: tuple[tuple[Port, object], ...]
    checks: tuple[tuple[Port, object], ...]
    pos: Pos
    text: str


Item = Union[Family, OpDef, PluginDef, Ignore, NameDecl, Include, Example]


@dataclass(frozen=True)
class RuleFile:
    """A parsed rule file."""

    path: str
    items: tuple[Item, ...]
    lines: tuple[str, ...]

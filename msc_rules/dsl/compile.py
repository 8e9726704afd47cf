"""Compile rule-body AST into plain Python functions, checking names and arity.

The result of compiling one equation is a `CompiledEquation`: its target port, the
ports it reads (strictly or partially), and a function `fn(env)` that evaluates the
right-hand side with no tree walking at inference time. `fn` is generated Python code
(one flat expression per equation: nested closures cost a call per node); every
value it uses (literal, role, attribute name, builtin) is a parameter default, never
source text, so equations of the same shape share one compiled code object.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FunctionType
from typing import Any, NamedTuple, cast

from ..errors import Diagnostic, RuleEvaluationError, RuleFileError
from . import ast
from .functions import BUILTINS, Env, arity_text

Fn = Callable[[Env], Any]
Source = Callable[[ast.Pos], str]
"""The text of the rule-file line at a position."""
PortKey = tuple[str, int | None]


class Inputs(NamedTuple):
    """What an equation's function can read of a call (a superset): the ranks and tuple
    structure of its ports (any of them), the layouts of some ports, the shapes of some
    ports, and the call's attributes. Two calls that agree on these get the same result
    from a pure equation, so the engine memoises it per such signature."""

    layouts: tuple[str, ...]
    types: tuple[str, ...]
    """The ports whose shapes it may read."""
    attrs: bool


@dataclass(frozen=True)
class CompiledEquation:
    """One equation of one op: `target = fn(env)` once `reads` are known."""

    target: PortKey
    strict_reads: tuple[PortKey, ...]
    partial_reads: tuple[str, ...]
    fn: Fn
    weak: bool
    pos: ast.Pos
    text: str
    mints: bool = False
    copy_of: PortKey | None = None  # set when the right side is a bare port read
    late: bool = False
    """A strong equation that fires only when no other strong equation can: a
    broadcast's `tie` yields to the operand's own chain (both are identity claims,
    and the chain's is the one the operand's op makes)."""
    inputs: Inputs | None = None
    """What `fn` reads (see Inputs); None when it calls a stateful builtin (one that
    keeps per-run state, such as reshape_ids): its result is then no function of the
    call alone, and never memoised."""
    settled: Inputs | None = None
    """What `fn` reads when every stateful builtin it calls settles (Builtin.settles):
    its result on the same inputs is then fixed once an evaluation is kept, and the
    engine memoises it from then on. None otherwise (and for a pure equation)."""

    @functools.cached_property
    def read_ports(self) -> tuple[PortKey, ...]:
        """The ports whose layouts make it ready: its strict reads, then its partial
        reads (whole ports)."""
        return (*self.strict_reads, *((r, None) for r in self.partial_reads))

    @property
    def target_text(self) -> str:
        """The target port as written (`out`, `out[0]`, `weight`)."""
        role, idx = self.target
        return role if idx is None else f"{role}[{idx}]"


class CompileError(Exception):
    """An error in a rule body at a position (turned into a Diagnostic by the loader)."""

    def __init__(self, pos: ast.Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "//": operator.floordiv,
    "%": operator.mod,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _apply(op: str, f: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    try:
        return f(a, b)
    except (TypeError, ZeroDivisionError) as err:
        raise RuleEvaluationError(f"cannot apply '{op}' to {a!r} and {b!r}: {err}") from None


def _getitem(base: Any, idx: Any) -> Any:
    if base is None or idx is None:
        return None
    if isinstance(idx, bool) or not isinstance(idx, int):
        raise RuleEvaluationError(f"index must be an integer, got {idx!r}")
    try:
        return base[idx]
    except (IndexError, TypeError, KeyError):
        raise RuleEvaluationError(f"cannot index {base!r} with {idx}") from None


class _FieldCheck:
    """Called when `role[index]` reads None: raises a RuleFileError when the port is a
    tensor (of known rank), where `out[1]` reads tuple field 1 and so never decides
    anything; a tuple field that is merely unknown reads None."""

    def __init__(self, role: str, index: int, pos: ast.Pos, source: str) -> None:
        self.role = role
        self.index = index
        self.pos = pos
        self.source = source

    def __call__(self, env: Env) -> None:
        if env.nfields(self.role) or env.ndim(self.role) < 0:
            return None
        r, i = self.role, self.index
        raise RuleFileError([Diagnostic(
            self.pos.file, self.pos.line, self.pos.col,
            f"'{r}' is a tensor here, not a tuple: '{r}[{i}]' reads tuple field {i} and "
            f"never decides anything; for the letter of axis {i} write "
            f"letters({r}, {i}, {i + 1})", self.source)])


# CPython rejects source nested more than 200 parentheses deep; a node adds at most
# three, so sub-expressions deeper than this become functions of their own.
_SPLIT_DEPTH = 50

# generated code reads only its parameters (and `None`, a keyword)
_NO_GLOBALS: dict[str, Any] = {"__builtins__": {}}


class _Source:
    """The source of one generated function and the values its names `k<i>` stand for.

    Every value (literal, port or attribute name, builtin, helper) is passed in by name,
    never written into the source: the source depends only on the expression's shape.
    """

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.temps = 0

    def bind(self, value: Any) -> str:
        self.values.append(value)
        return f"k{len(self.values) - 1}"

    def temp(self) -> str:
        self.temps += 1
        return f"t{self.temps - 1}"


def _unless_none(code: str, checks: list[str]) -> str:
    """`code`, or None when a check fails; all checks are evaluated, in order."""
    if not checks:
        return code
    # `&` (unlike `and`) evaluates every operand: a None argument does not skip the rest
    test = " & ".join(f"({c})" for c in checks) if len(checks) > 1 else checks[0]
    return f"({code} if {test} else None)"


@functools.lru_cache(maxsize=4096)
def _template(body: str, nvalues: int) -> CodeType:
    """The code of `lambda env, k0, k1, ...: body`, compiled once per distinct body:
    rule bodies share shapes (families, `attr.x` seeds), and compile() is slow."""
    params = "".join(f", k{i}" for i in range(nvalues))
    fn = eval(compile(f"lambda env{params}: {body}", "<rule equation>", "eval"), {})
    return cast(CodeType, fn.__code__)


class _Compiler:
    """Compiles the equations of one rule body against its roles."""

    def __init__(self, roles: tuple[str, ...], source: Source | None = None) -> None:
        self.ports = set(roles) | {"out"}
        self.roles = roles
        self.source = source

    def _check_port(self, name: str, pos: ast.Pos) -> None:
        if name not in self.ports:
            known = ", ".join([*self.roles, "out"])
            raise CompileError(pos, f"unknown role '{name}' (this rule's ports: {known})")

    # reads: (strict port keys, partial roles)
    def reads(self, e: ast.Expr, strict: set[PortKey], partial: set[str]) -> None:
        port = ast.port_ref(e)
        if port is not None:
            strict.add((port[0], port[1]))
        elif isinstance(e, ast.Index):
            self.reads(e.base, strict, partial)
            self.reads(e.index, strict, partial)
        elif isinstance(e, ast.Call):
            b = BUILTINS[e.func]
            for i, a in enumerate(e.args):
                if i in b.port_args:
                    if b.partial and i not in b.type_ports and isinstance(a, ast.Name):
                        partial.add(a.name)
                    continue
                self.reads(a, strict, partial)
        elif isinstance(e, ast.BinOp) and e.op == "??":
            # `a ?? b`: a may stay unknown; that is the point of `??`
            left: set[PortKey] = set()
            self.reads(e.left, left, partial)
            partial.update(r for r, _ in left)
            self.reads(e.right, strict, partial)
        elif isinstance(e, ast.BinOp):
            self.reads(e.left, strict, partial)
            self.reads(e.right, strict, partial)
        elif isinstance(e, ast.UnOp):
            self.reads(e.operand, strict, partial)
        elif isinstance(e, ast.Cond):
            for sub in (e.test, e.then, e.other):
                self.reads(sub, strict, partial)
        elif isinstance(e, (ast.TupleExpr, ast.ListExpr)):
            for sub in e.items:
                self.reads(sub, strict, partial)

    def function(self, e: ast.Expr) -> Fn:
        """`fn(env)` evaluating `e`: one generated function, no tree walking."""
        src = _Source()
        body = self.expr(e, src, 0)
        # the values are the parameters' defaults: read as fast locals, never passed
        code = _template(body, len(src.values))
        return FunctionType(code, _NO_GLOBALS, "eq", tuple(src.values))

    def expr(self, e: ast.Expr, src: _Source, depth: int) -> str:
        """Python source evaluating `e` (names bound in `src`); checks names and arity."""
        if depth >= _SPLIT_DEPTH:
            return f"{src.bind(self.function(e))}(env)"
        depth += 1
        if isinstance(e, ast.Lit):
            return src.bind(e.value)
        if isinstance(e, ast.Name):
            self._check_port(e.name, e.pos)
            return f"env.layout({src.bind(e.name)})"
        if isinstance(e, ast.Attr):
            return f"env.attr({src.bind(e.name)})"
        if isinstance(e, ast.Index):
            port = ast.port_ref(e)
            if port is not None and port[1] is not None:
                self._check_port(port[0], port[2])
                role, idx = src.bind(port[0]), src.bind(port[1])
                # a field that reads None is either unknown, or the port is no tuple at
                # all: the second is a rule-file mistake, reported where it happens
                line = self.source(port[2]) if self.source is not None else ""
                v, check = src.temp(), src.bind(_FieldCheck(port[0], port[1], port[2], line))
                return (f"({v} if ({v} := env.field({role}, {idx})) is not None "
                        f"else {check}(env))")
            base = self.expr(e.base, src, depth)
            index = self.expr(e.index, src, depth)
            return f"{src.bind(_getitem)}({base}, {index})"
        if isinstance(e, ast.Call):
            return self.call(e, src, depth)
        if isinstance(e, ast.TupleExpr):
            items = [self.expr(x, src, depth) for x in e.items]
            return f"({''.join(f'{x}, ' for x in items)})"
        if isinstance(e, ast.ListExpr):
            vals, checks = self.checked(e.items, src, depth)
            return _unless_none(f"[{', '.join(vals)}]", checks)
        if isinstance(e, ast.Cond):
            t, a, b = (self.expr(x, src, depth) for x in (e.test, e.then, e.other))
            return f"({a} if {t} else {b})"
        if isinstance(e, ast.UnOp):
            x = self.expr(e.operand, src, depth)
            if e.op == "not":
                return f"(not {x})"
            v = src.temp()
            neg = f"{src.bind(_apply)}({src.bind('-')}, {src.bind(operator.sub)}, 0, {v})"
            return f"(None if ({v} := {x}) is None else {neg})"
        return self.binop(e, src, depth)

    def checked(
        self, args: tuple[ast.Expr, ...], src: _Source, depth: int
    ) -> tuple[list[str], list[str]]:
        """Sources of `args` and the checks that none of them is None (in order)."""
        vals: list[str] = []
        checks: list[str] = []
        for a in args:
            x = self.expr(a, src, depth)
            if isinstance(a, ast.Lit) and a.value is not None:
                vals.append(x)
                continue
            v = src.temp()
            checks.append(f"({v} := {x}) is not None")
            vals.append(v)
        return vals, checks

    def binop(self, e: ast.BinOp, src: _Source, depth: int) -> str:
        op = e.op
        if op in _ARITH:
            vals, checks = self.checked((e.left, e.right), src, depth)
            f = f"{src.bind(_apply)}({src.bind(op)}, {src.bind(_ARITH[op])}"
            return _unless_none(f"{f}, {vals[0]}, {vals[1]})", checks)
        a, b = self.expr(e.left, src, depth), self.expr(e.right, src, depth)
        if op == "??":
            v = src.temp()
            return f"({v} if ({v} := {a}) is not None else {b})"
        if op not in ("or", "and", "==", "!="):  # the only other operators (as Python)
            raise KeyError(op)
        return f"({a} {op} {b})"

    def call(self, e: ast.Call, src: _Source, depth: int) -> str:
        b = BUILTINS.get(e.func)
        if b is None:
            names = ", ".join(sorted(BUILTINS))
            raise CompileError(e.pos, f"unknown function '{e.func}' (known: {names})")
        if not b.min_args <= len(e.args) <= b.max_args:
            raise CompileError(
                e.pos,
                f"{e.func}() takes {arity_text(b)} argument(s), got {len(e.args)}",
            )
        args = ["env"] if b.port_args else []
        checks: list[str] = []
        for i, a in enumerate(e.args):
            if i in b.port_args:
                if not isinstance(a, ast.Name):
                    raise CompileError(
                        getattr(a, "pos", e.pos),
                        f"argument {i + 1} of {e.func}() must be a port name",
                    )
                self._check_port(a.name, a.pos)
                args.append(src.bind(a.name))  # passed as the role, never None
            elif b.none_ok:
                args.append(self.expr(a, src, depth))
            else:
                vals, more = self.checked((a,), src, depth)
                args += vals
                checks += more
        code = b.inline.format(*args) if b.inline else f"{src.bind(b.impl)}({', '.join(args)})"
        return _unless_none(code, checks)


def _mints(e: ast.Expr) -> bool:
    if isinstance(e, ast.Call):
        b = BUILTINS.get(e.func)
        return (b is not None and b.mints) or any(_mints(a) for a in e.args)
    if isinstance(e, ast.Index):
        return _mints(e.base) or _mints(e.index)
    if isinstance(e, ast.Cond):
        return _mints(e.test) or _mints(e.then) or _mints(e.other)
    if isinstance(e, ast.BinOp):
        return _mints(e.left) or _mints(e.right)
    if isinstance(e, ast.UnOp):
        return _mints(e.operand)
    if isinstance(e, (ast.TupleExpr, ast.ListExpr)):
        return any(_mints(x) for x in e.items)
    return False


def _reads(e: ast.Expr, layouts: set[str], types: set[str], flags: set[str]) -> None:
    """Collect what evaluating `e` can read (see Inputs): flags gets "attrs" for an
    attribute read, "state" for a call of a stateful builtin and "settles" for one of a
    builtin that settles (Builtin.settles)."""
    port = ast.port_ref(e)
    if port is not None:
        layouts.add(port[0])  # (a field read also checks the port's rank and fields)
        return
    if isinstance(e, ast.Attr):
        flags.add("attrs")
        return
    subs: tuple[ast.Expr, ...] = ()
    if isinstance(e, ast.Call):
        b = BUILTINS[e.func]
        if b.stateful:
            flags.add("settles" if b.settles else "state")
        for i, a in enumerate(e.args):
            if i in b.port_args and isinstance(a, ast.Name):
                if b.shapes:
                    types.add(a.name)
                if not b.type_only:
                    layouts.add(a.name)
            else:
                subs += (a,)
    elif isinstance(e, ast.Index):
        subs = (e.base, e.index)
    elif isinstance(e, ast.BinOp):
        subs = (e.left, e.right)
    elif isinstance(e, ast.UnOp):
        subs = (e.operand,)
    elif isinstance(e, ast.Cond):
        subs = (e.test, e.then, e.other)
    elif isinstance(e, (ast.TupleExpr, ast.ListExpr)):
        subs = e.items
    for sub in subs:
        _reads(sub, layouts, types, flags)


def _inputs(e: ast.Expr) -> tuple[Inputs | None, Inputs | None]:
    """What an equation of right-hand side `e` reads: as CompiledEquation.inputs (None
    when it keeps run state) and as CompiledEquation.settled."""
    layouts: set[str] = set()
    types: set[str] = set()
    flags: set[str] = set()
    _reads(e, layouts, types, flags)
    if "state" in flags:
        return None, None
    got = Inputs(tuple(sorted(layouts)), tuple(sorted(types)), "attrs" in flags)
    return (None, got) if "settles" in flags else (got, None)


def _late(e: ast.Expr) -> bool:
    b = BUILTINS.get(e.func) if isinstance(e, ast.Call) else None
    return b is not None and b.late


def _copy_of(e: ast.Expr) -> PortKey | None:
    """The port an equation copies unchanged (`out = data`), if any: the engine reads it
    directly instead of calling the closure. Not a tuple field (`data = out[0]`): the
    closure checks that the port is a tuple at all (see _FieldCheck)."""
    port = ast.port_ref(e)
    return None if port is None or port[1] is not None else (port[0], None)


def compile_equations(
    roles: tuple[str, ...], equations: tuple[ast.Equation, ...], source: Source | None = None
) -> tuple[list[CompiledEquation], list[CompileError]]:
    """Compile a rule body; return the equations and every error found. `source` gives
    the text of a line of the rule file, for errors found when the equations run."""
    comp = _Compiler(roles, source)
    out: list[CompiledEquation] = []
    errors: list[CompileError] = []
    for eq in equations:
        try:
            fn = comp.function(eq.expr)
            strict: set[PortKey] = set()
            partial: set[str] = set()
            comp.reads(eq.expr, strict, partial)
            for t in eq.targets:
                comp._check_port(t.role, t.pos)
        except CompileError as err:
            errors.append(err)
            continue
        for t in eq.targets:
            out.append(
                CompiledEquation(
                    (t.role, t.index),
                    tuple(sorted(strict, key=lambda k: (k[0], -1 if k[1] is None else k[1]))),
                    tuple(sorted(partial - {r for r, _ in strict})),
                    fn,
                    eq.weak,
                    eq.pos,
                    eq.text,
                    _mints(eq.expr),
                    _copy_of(eq.expr),
                    _late(eq.expr) and not eq.weak,
                    *_inputs(eq.expr),
                )
            )
    return out, errors

"""Compile rule-body AST into plain Python closures, checking names and arity.

The result of compiling one equation is a `CompiledEquation`: its target port, the
ports it reads (strictly or partially), and a closure `fn(env)` that evaluates the
right-hand side with no tree walking at inference time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RuleEvaluationError
from . import ast
from .functions import BUILTINS, Env, arity_text

Fn = Callable[[Env], Any]
PortKey = tuple[str, int | None]


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


def _const(v: Any) -> Fn:
    return lambda env: v


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


class _Compiler:
    """Compiles the equations of one rule body against its roles."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        self.ports = set(roles) | {"out"}
        self.roles = roles

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

    def expr(self, e: ast.Expr) -> Fn:
        if isinstance(e, ast.Lit):
            return _const(e.value)
        if isinstance(e, ast.Name):
            self._check_port(e.name, e.pos)
            role = e.name
            return lambda env: env.layout(role)
        if isinstance(e, ast.Attr):
            name = e.name
            return lambda env: env.attr(name)
        if isinstance(e, ast.Index):
            port = ast.port_ref(e)
            if port is not None and port[1] is not None:
                role, field_index, pos = port[0], port[1], port[2]
                self._check_port(role, pos)
                return lambda env: env.field(role, field_index)
            base, index = self.expr(e.base), self.expr(e.index)
            return lambda env: _getitem(base(env), index(env))
        if isinstance(e, ast.Call):
            return self.call(e)
        if isinstance(e, ast.TupleExpr):
            items = [self.expr(x) for x in e.items]
            return lambda env: tuple(f(env) for f in items)
        if isinstance(e, ast.ListExpr):
            litems = [self.expr(x) for x in e.items]

            def make_list(env: Env) -> list[Any] | None:
                vals = [f(env) for f in litems]
                return None if any(v is None for v in vals) else vals

            return make_list
        if isinstance(e, ast.Cond):
            t, a, b = self.expr(e.test), self.expr(e.then), self.expr(e.other)
            return lambda env: a(env) if t(env) else b(env)
        if isinstance(e, ast.UnOp):
            x = self.expr(e.operand)
            if e.op == "not":
                return lambda env: not x(env)

            def neg(env: Env) -> Any:
                v = x(env)
                return None if v is None else _apply("-", operator.sub, 0, v)

            return neg
        return self.binop(e)

    def binop(self, e: ast.BinOp) -> Fn:
        a, b = self.expr(e.left), self.expr(e.right)
        op = e.op
        if op == "??":
            return lambda env: v if (v := a(env)) is not None else b(env)
        if op == "or":
            return lambda env: a(env) or b(env)
        if op == "and":
            return lambda env: a(env) and b(env)
        if op == "==":
            return lambda env: a(env) == b(env)
        if op == "!=":
            return lambda env: a(env) != b(env)
        f = _ARITH[op]

        def arith(env: Env) -> Any:
            x, y = a(env), b(env)
            if x is None or y is None:
                return None
            return _apply(op, f, x, y)

        return arith

    def call(self, e: ast.Call) -> Fn:
        b = BUILTINS.get(e.func)
        if b is None:
            names = ", ".join(sorted(BUILTINS))
            raise CompileError(e.pos, f"unknown function '{e.func}' (known: {names})")
        if not b.min_args <= len(e.args) <= b.max_args:
            raise CompileError(
                e.pos,
                f"{e.func}() takes {arity_text(b)} argument(s), got {len(e.args)}",
            )
        parts: list[tuple[bool, Any]] = []
        for i, a in enumerate(e.args):
            if i in b.port_args:
                if not isinstance(a, ast.Name):
                    raise CompileError(
                        getattr(a, "pos", e.pos),
                        f"argument {i + 1} of {e.func}() must be a port name",
                    )
                self._check_port(a.name, a.pos)
                parts.append((True, a.name))
            else:
                parts.append((False, self.expr(a)))
        impl = b.impl
        needs_env = bool(b.port_args)
        none_ok = b.none_ok

        def run(env: Env) -> Any:
            args = [v if is_port else v(env) for is_port, v in parts]
            if not none_ok and any(v is None for v in args):
                return None
            return impl(env, *args) if needs_env else impl(*args)

        return run


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


def _copy_of(e: ast.Expr) -> PortKey | None:
    """The port an equation copies unchanged (`out = data`, `data = out[0]`), if any:
    the engine reads it directly instead of calling the closure."""
    port = ast.port_ref(e)
    return None if port is None else (port[0], port[1])


def compile_equations(
    roles: tuple[str, ...], equations: tuple[ast.Equation, ...]
) -> tuple[list[CompiledEquation], list[CompileError]]:
    """Compile a rule body; return the equations and every error found."""
    comp = _Compiler(roles)
    out: list[CompiledEquation] = []
    errors: list[CompileError] = []
    for eq in equations:
        try:
            fn = comp.expr(eq.expr)
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
                )
            )
    return out, errors

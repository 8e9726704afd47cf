"""Run the `example` lines of rule files through the real engine on real TVM calls.

Each example builds a one-call Relax function with the op's Python builder
(`relax.nn.conv2d` -> `tvm.relax.op.nn.conv2d`), seeds the layouts it gives, infers
the rest with the full RuleSet, and compares the ports it checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax

from .dsl import ast
from .dsl.ruleset import RuleSet
from .engine import infer_view
from .graph import Struct, build_view


@dataclass(frozen=True)
class ExampleOutcome:
    """The result of one example: ok, or what differed."""

    example: ast.Example
    ok: bool
    message: str

    def format(self) -> str:
        """`file:line:col: example ok|failed: message`."""
        status = "ok" if self.ok else "failed"
        return f"{self.example.pos}: example {status}: {self.message or self.example.text}"


def _builder(op: str) -> Any:
    parts = op.split(".")
    target: Any = relax.op
    for p in parts[1:]:
        target = getattr(target, p, None)
        if target is None:
            raise LookupError(f"no Python builder tvm.relax.op.{'.'.join(parts[1:])} for {op}")
    return target


class _ArgBuilder:
    def __init__(self) -> None:
        self.syms: dict[str, Any] = {}
        self.params: list[Any] = []
        self.seeds: list[tuple[Any, str]] = []

    def dim(self, d: int | str) -> Any:
        if isinstance(d, int):
            return d
        if d not in self.syms:
            self.syms[d] = tvm.tirx.Var(d, "int64")
        return self.syms[d]

    def arg(self, a: ast.ExampleArg) -> Any:
        if isinstance(a, ast.Lit):
            return a.value
        if isinstance(a, ast.ShapeArg):
            return relax.ShapeExpr([self.dim(d) for d in a.dims])
        if isinstance(a, ast.TupleArg):
            return relax.Tuple([self.arg(x) for x in a.items])
        var = relax.Var(f"arg{len(self.params)}",
                        relax.TensorType([self.dim(d) for d in a.shape], a.dtype))
        self.params.append(var)
        if a.layout is not None:
            self.seeds.append((var, a.layout))
        return var


def _port_struct(port: ast.Port, roles: tuple[str, ...], args: list[Struct], out: Struct) -> Struct:
    if port.role == "out":
        st = out
    elif port.role in roles and roles.index(port.role) < len(args):
        st = args[roles.index(port.role)]
    else:
        raise LookupError(f"the example names port '{port.role}', which the rule does not have")
    if port.index is not None:
        if not isinstance(st, tuple) or port.index >= len(st):
            raise LookupError(f"port '{port}' is not a tuple field")
        st = st[port.index]
    return st


def run_example(ex: ast.Example, rules: RuleSet) -> ExampleOutcome:
    """Build, infer and compare one example."""
    try:
        builder = _builder(ex.op)
        ab = _ArgBuilder()
        args = [ab.arg(a) for a in ex.args]
        call = builder(*args, **dict(ex.kwargs))
        bb = relax.BlockBuilder()
        with bb.function("main", ab.params):
            with bb.dataflow():
                out = bb.emit(call)
                gv = bb.emit_output(out)
            bb.emit_func_output(gv)
        mod = bb.get()
    except Exception as err:  # the example itself is malformed for this op
        return ExampleOutcome(ex, False, f"cannot build the call: {err}")
    view = build_view(mod, "main")
    site = next((s for s in view.sites if s.op == ex.op), None)
    rule = rules.lookup(ex.op)
    if site is None or rule is None:
        return ExampleOutcome(ex, False, f"no rule for {ex.op}")
    seeds: dict[int, str] = {}
    for var, seed in ab.seeds:
        st = view.values[view.value_of[var.__chandle__()]].struct
        if isinstance(st, int):
            seeds[st] = seed
    try:
        for port, given in ex.given:
            st = _port_struct(port, rule.roles, site.args, site.out)
            if isinstance(st, int) and isinstance(given, str):
                seeds[st] = given
    except LookupError as err:
        return ExampleOutcome(ex, False, str(err))
    result = infer_view(view, rules, seeds)
    problems: list[str] = []
    for port, want in ex.checks:
        try:
            st = _port_struct(port, rule.roles, site.args, site.out)
        except LookupError as err:
            problems.append(str(err))
            continue
        got = result.struct_layout(st)
        if got != want:
            problems.append(f"{port} is {got!r}, expected {want!r}")
    for c in result.conflicts:
        problems.append(f"conflict: {c.message} ({c.equation.text})")
    return ExampleOutcome(ex, not problems, "; ".join(problems))


def run_examples(rules: RuleSet) -> list[ExampleOutcome]:
    """Run every example of a RuleSet, in file order."""
    return [run_example(ex, rules) for ex in rules.examples]

"""The reference page of the rule language's builtin functions (docs/functions.md),
generated from the registry in functions.py: each function's signature, its one-line
doc and one example, which is evaluated here (parsed and compiled as a rule equation
and run on the ports it names), so the page shows what the function really returns.

Regenerate with `python -m msc_rules.dsl.reference docs/functions.md`; a test checks
that the page is current and that every builtin has an example.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, cast

from .. import layout as L
from .compile import compile_equations
from .functions import BUILTINS, Builtin
from .parse import parse_text

Tensor = tuple[str | None, list[Any]]
"""A tensor port of an example: (layout or None, shape)."""


@dataclass(frozen=True)
class DocExample:
    """One example call: the expression, the ports it reads and the call's attributes."""

    expr: str
    ports: dict[str, Tensor | tuple[Tensor, ...]] = field(default_factory=dict)
    """Each port the expression reads: a tensor (layout, shape) or a tuple of them."""
    attrs: dict[str, Any] = field(default_factory=dict)


def _t(layout: str | None, *shape: Any) -> Tensor:
    return (layout, list(shape))


EXAMPLES: dict[str, DocExample] = {
    "ndim": DocExample("ndim(data)", {"data": _t("NCHW", 1, 3, 8, 8)}),
    "shape": DocExample("shape(data)", {"data": _t("NCHW", "n", 3, 8, 8)}),
    "nfields": DocExample("nfields(out)", {"out": (_t("NC", 2, 3), _t("N", 2))}),
    "first_known": DocExample("first_known(out)", {"out": (_t(None, 2, 3), _t("NC", 2, 3))}),
    "broadcast": DocExample("broadcast(out, lhs, rhs)", {
        "out": _t(None, 1, 8, 4, 4), "lhs": _t("NCHW", 1, 8, 4, 4), "rhs": _t("CHW", 8, 1, 1)}),
    "tie": DocExample("tie(out, rhs)", {"out": _t("NCHW", 2, 8, 4, 4), "rhs": _t(None, 8, 1, 1)}),
    "borrow": DocExample("borrow(rhs, lhs)", {
        "lhs": _t("NSC", 2, 5, 16), "rhs": _t(None, 5, 1)}),
    "fresh_beside": DocExample("fresh_beside(indices, 2)", {"indices": _t("NC", 2, 5)}),
    "permute": DocExample('permute("NCHW", [0, 2, 3, 1])'),
    "unpermute": DocExample('unpermute("NHWC", [0, 2, 3, 1])'),
    "drop": DocExample('drop("NCHW", [2, 3])'),
    "insert": DocExample('insert("NC", [2, 3])'),
    "align_right": DocExample('align_right("HW", 4)'),
    "initial": DocExample("initial(3)"),
    "default_layout": DocExample("default_layout(4)"),
    "last": DocExample('last("NCHW")'),
    "suffix": DocExample('suffix("NCHW", 2)'),
    "prefix": DocExample('prefix("NCHW", 2)'),
    "fresh": DocExample('fresh("NCHW", 2)'),
    "unique": DocExample('unique("NCNC")'),
    "splice": DocExample('splice("NCL", 1, "GC")'),
    "unsplice": DocExample('unsplice("NGCL", 1, 2)'),
    "letters": DocExample('letters("NCHW", 1, 2)'),
    "unit_axes": DocExample("unit_axes(shape(data))", {"data": _t("NCHW", 1, 8, 1, 1)}),
    "reshape": DocExample("reshape(data, shape(data), shape(out))",
                          {"data": _t("NCHW", 1, 2048, 1, 1), "out": _t(None, 1, 2048)}),
    "each": DocExample('each("NC", 2)'),
    "reversed": DocExample("reversed(3)"),
    "range": DocExample("range(1, 4)"),
    "len": DocExample('len("NCHW")'),
    "axis": DocExample("axis(-1, 4)"),
    "axes": DocExample("axes([-1, 1], 4)"),
    "is_none": DocExample("is_none(attr.axis)", attrs={"axis": None}),
    "contains": DocExample('contains("NCHW", "C")'),
    "min": DocExample("min(2, 3)"),
    "max": DocExample("max(2, 3)"),
    "reshape_ids": DocExample("reshape_ids(data, shape(data), shape(out))",
                              {"data": _t("NSE", 1, 16, 64), "out": _t(None, 1, 16, 4, 16)}),
    "einsum_out": DocExample('einsum_out("ij,jk->ik", operands)',
                             {"operands": (_t("AB", 2, 3), _t("BC", 3, 4))}),
    "einsum_in": DocExample('einsum_in("ij,jk->ik", operands, out)',
                            {"operands": (_t(None, 2, 3), _t("BC", 3, 4)), "out": _t("AC", 2, 4)}),
    "bcast_fields": DocExample("bcast_fields(tensors, 2)",
                               {"tensors": (_t("NC", 2, 3), _t("C", 3))}),
    "remove": DocExample('remove("NCHW", "HW")'),
    "concat_fields": DocExample("concat_fields(tensors)", {"tensors": (_t("H", 2), _t("W", 3))}),
    "split_letters": DocExample('split_letters("HW")'),
    "index_map_out": DocExample('index_map_out("NCHW", "lambda n, c, h, w: (n, h, w, c)")'),
    "index_map_in": DocExample('index_map_in("NHWC", "lambda n, c, h, w: (n, h, w, c)")'),
}


Port = Tensor | tuple[Tensor, ...]


def _is_tensor(value: Port) -> TypeGuard[Tensor]:
    return len(value) == 2 and isinstance(value[1], list)


class _DocEnv:
    """The Env of one example: its ports, given as layouts and shapes."""

    def __init__(self, example: DocExample) -> None:
        self.ports = example.ports
        self.attrs = example.attrs
        self.state: dict[str, Any] = {}

    def _tensor(self, role: str) -> Tensor | None:
        value = self.ports.get(role)
        return value if value is not None and _is_tensor(value) else None

    def _fields(self, role: str) -> tuple[Tensor, ...]:
        value = self.ports.get(role)
        if value is None or _is_tensor(value):
            return ()
        return cast(tuple[Tensor, ...], value)

    def layout(self, role: str) -> Any:
        t = self._tensor(role)
        if t is not None:
            return t[0]
        return tuple(f[0] for f in self._fields(role)) if role in self.ports else None

    def field(self, role: str, index: int) -> Any:
        fields = self._fields(role)
        return fields[index][0] if index < len(fields) else None

    def ndim(self, role: str) -> int:
        t = self._tensor(role)
        return len(t[1]) if t is not None else -1

    def shape(self, role: str) -> list[L.Dim] | None:
        t = self._tensor(role)
        return [_dim(d) for d in t[1]] if t is not None else None

    def field_shape(self, role: str, index: int) -> list[L.Dim] | None:
        fields = self._fields(role)
        return [_dim(d) for d in fields[index][1]] if index < len(fields) else None

    def nfields(self, role: str) -> int:
        return len(self._fields(role))

    def attr(self, name: str) -> Any:
        return self.attrs.get(name)

    def run_state(self, key: str, factory: Callable[[], Any]) -> Any:
        return self.state.setdefault(key, factory())


def _dim(d: Any) -> L.Dim:
    """A shape entry as layout.Dim: a symbolic name is a one-factor product."""
    return d if isinstance(d, int) else (d,)


def evaluate(example: DocExample) -> Any:
    """What the example's expression returns: it is compiled as the right side of a rule
    equation over the ports it names, then run on them."""
    roles = [r for r in example.ports if r != "out"]
    head = f"op relax.example({', '.join([*roles, 'result'])})"
    text = f"{head} {{\n    result = {example.expr}\n}}\n"
    rf = parse_text(text, "<example>")
    item = rf.items[0]
    assert hasattr(item, "equations")
    eqs, errors = compile_equations((*roles, "result"), item.equations)
    if errors:
        raise ValueError(f"example {example.expr!r}: {errors[0].message}")
    return eqs[0].fn(_DocEnv(example))


def _value_text(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "(" + ", ".join(_value_text(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_dim_text(x) for x in v) + "]"
    return str(v)


def _dim_text(d: Any) -> str:
    if isinstance(d, tuple):
        return " * ".join(str(x) for x in d)
    return _value_text(d)


def _port_text(value: Port) -> str:
    if _is_tensor(value):
        lay, shape = value
        dims = ", ".join(str(d) for d in shape)
        return f"T[{dims}]" + (f' "{lay}"' if lay else "")
    return "(" + ", ".join(_port_text(v) for v in cast(tuple[Tensor, ...], value)) + ")"


def signature(b: Builtin) -> str:
    """`name(arg, ...)` from the implementation's parameters (the Env left out)."""
    params = list(inspect.signature(b.impl).parameters.values())
    if b.port_args:
        params = params[1:]  # the Env
    names = []
    for p in params:
        name = p.name.lstrip("_")
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            names.append(f"{name}...")
        elif p.default is not inspect.Parameter.empty:
            names.append(f"[{name}]")
        else:
            names.append(name)
    return f"{b.name}({', '.join(names)})"


def _kind(b: Builtin) -> str:
    notes = []
    if b.port_args:
        ports = ", ".join(f"argument {i + 1}" for i in b.port_args if i < b.max_args)
        notes.append(f"port names: {ports}" + ("; fires when any is known" if b.partial else ""))
    if b.mints:
        notes.append("may mint fresh letters (which claim no axis identity)")
    if b.none_ok:
        notes.append("takes `none` arguments")
    return "; ".join(notes)


def full_doc(b: Builtin) -> str:
    """The implementation's whole docstring as one paragraph."""
    return " ".join((inspect.getdoc(b.impl) or b.doc).split())


def render() -> str:
    """The markdown page."""
    out = [
        "# Builtin functions of the rule language",
        "",
        "Generated from the registry in `msc_rules/dsl/functions.py` by",
        "`python -m msc_rules.dsl.reference docs/functions.md`; do not edit by hand.",
        "Each example was evaluated when the page was generated; `T[dims] \"LAYOUT\"`",
        "describes a port the example reads. A port argument is a bare port name",
        "(`data`, `out`); every other argument is a value, and a `none` value makes the",
        "call `none` unless the function takes `none`.",
        "",
    ]
    for name in sorted(BUILTINS):
        b = BUILTINS[name]
        ex = EXAMPLES[name]
        out.append(f"## `{signature(b)}`")
        out.append("")
        out.append(full_doc(b))
        kind = _kind(b)
        if kind:
            out += ["", f"*{kind[0].upper() + kind[1:]}.*"]
        out += ["", "```", f"{ex.expr}  ->  {_value_text(evaluate(ex))}"]
        for role, value in ex.ports.items():
            out.append(f"#   {role} = {_port_text(value)}")
        for attr, value in ex.attrs.items():
            out.append(f"#   attr.{attr} = {_value_text(value)}")
        out += ["```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Write the page to the path given (default: print it)."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["EXAMPLES", "DocExample", "evaluate", "full_doc", "main", "render", "signature"]

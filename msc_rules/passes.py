"""The module passes: SetExprLayout (and the marker plan it writes)."""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax

from . import span
from .dsl.ruleset import RuleSet
from .engine import InferenceResult, infer_layouts
from .errors import MissingLayoutError
from .rewrite import SpanEdits, rewrite_module

_MARKED_VALUES = (tvm.ir.expr.Call, tvm.ir.expr.Tuple, tvm.ir.expr.TupleGetItem,
                  tvm.ir.expr.GenericConst)


def layout_edits(result: InferenceResult) -> dict[str, SpanEdits]:
    """The Layout markers to write, per global function, from an inference result."""
    edits: dict[str, SpanEdits] = {}
    for v in result.view.values:
        text = result.marker(v.struct)
        if not text:
            continue
        e = edits.setdefault(v.top, SpanEdits())
        if v.kind == "const":
            e.add_value(v.expr, span.LAYOUT, text)
            continue
        e.add_var(v.expr, span.LAYOUT, text)
        if v.kind == "binding" and isinstance(v.value, _MARKED_VALUES):
            e.add_value(v.value, span.LAYOUT, text)
    return edits


def missing_layouts(result: InferenceResult) -> list[str]:
    """Bindings and constants left without a layout, or computed by an op without a rule."""
    missing: list[str] = []
    for v in result.view.values:
        leaves: list[int] = []
        _collect(v.struct, leaves)
        if any(result.layouts[x] is None and result.view.leaf_ndim[x] >= 0 for x in leaves):
            missing.append(f"{v.func}:{v.name}")
    for site in result.view.sites:
        if site.op == "<link>" or site.call is None:
            continue
        if site.op.startswith("plugin:"):
            ruled = result.rules.plugin(site.op[7:]) is not None
        else:
            ruled = bool(site.op) and result.rules.status(site.op) != "undecided"
        if not ruled:
            v = result.view.values[site.value_id]
            missing.append(f"{v.func}:{v.name} (no rule for {site.op or 'an opaque call'})")
    return missing


def _collect(struct: Any, out: list[int]) -> None:
    if isinstance(struct, int):
        out.append(struct)
    elif isinstance(struct, tuple):
        for s in struct:
            _collect(s, out)


@tvm.transform.module_pass(opt_level=0, name="SetExprLayout")
class SetExprLayout:
    """Write a `<Layout>` marker on every param, binding var, bound value and constant."""

    def __init__(self, allow_missing: bool = True, entry_name: str = "main",
                 rules: RuleSet | None = None) -> None:
        self.allow_missing = allow_missing
        self.entry_name = entry_name
        self.rules = rules

    def transform_module(self, mod: tvm.IRModule, ctx: Any) -> tvm.IRModule:
        """Infer layouts for the entry function (and its callees) and write them."""
        result = infer_layouts(mod, self.rules, self.entry_name)
        if not self.allow_missing:
            missing = missing_layouts(result)
            if missing:
                raise MissingLayoutError(self.entry_name, missing)
        return rewrite_module(mod, layout_edits(result))


__all__ = ["SetExprLayout", "layout_edits", "missing_layouts"]

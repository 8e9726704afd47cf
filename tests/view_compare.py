"""A dependency view as plain data, to compare views built two ways (the Python read
and the native one, msc_rules/native/read.cc): IR nodes by handle, everything else as
it is, and every leaf's shape."""

from __future__ import annotations

from typing import Any

from msc_rules.graph import DependencyView, Value


def _h(node: Any) -> int | None:
    return None if node is None else int(node.__chandle__())


def _value(v: Value) -> tuple[Any, ...]:
    return (v.id, v.kind, _h(v.expr), v.func, v.struct, _h(v.value), v.top, _h(v.binding),
            None if v.args is None else [_h(a) for a in v.args], _h(v.op), _h(v.ty), v.name)


def view_data(view: DependencyView) -> dict[str, Any]:
    """Everything the view holds, comparable with ==."""
    return {
        "entry": view.entry,
        "values": [_value(v) for v in view.values],
        "leaf_ndim": list(view.leaf_ndim),
        "leaf_type": [_h(t) for t in view.leaf_type],
        "leaf_value": list(view.leaf_value),
        "shapes": [view.shape(leaf) for leaf in range(len(view.leaf_ndim))],
        "sites": [(s.value_id, _h(s.call), s.op, s.args, s.out, _h(s.attrs))
                  for s in view.sites],
        "value_of": list(view.value_of.items()),
        "functions": list(view.functions),
        "edges": list(zip(view.edge_src, view.edge_dst)),
        "tops": list(view.tops),
        "others": list(view.others),
        "block_records": [(h, _h(block), [r.id if isinstance(r, Value) else ("b", _h(r))
                                          for r in recs])
                          for h, (block, recs) in view.block_records.items()],
    }

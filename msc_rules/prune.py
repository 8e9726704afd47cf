"""Prune channel groups: slice every weight member, rewrite what carries the shapes.

`prune(mod, {group_id: kept_indices})` keeps the listed channels of each chosen group:
constants of the group are sliced along their member axes, reshapes whose output axis
is a member get the new extent, depthwise convs get the new group count, and the
module is re-normalised (types of the activations follow from the ops). Names and
layout markers in spans survive: calls and constants keep their spans.

`mask_consumers` builds the numeric oracle's reference: the original module with the
consumers' input slices of the removed channels set to zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .channel_graph import ChannelGraph, channel_graph
from .channels import CONSUMER, ChannelGroup, Member, _Namer, build_groups
from .dsl.ruleset import RuleSet
from .errors import PruneError
from .layout import reshape_groups
from .prune_edits import ParamEdit, split_attrs
from .util import paused_gc

Selection = Mapping[int, Sequence[int]]


def _removed_indices(m: Member, removed: Sequence[int]) -> list[int]:
    return m.indices(removed)


def check_selection(groups: Sequence[ChannelGroup], selection: Selection,
                    allow_io: bool = False) -> dict[int, list[int]]:
    """Validate a selection; return the removed channels per group id."""
    by_id = {gr.id: gr for gr in groups}
    out: dict[int, list[int]] = {}
    for gid, kept in selection.items():
        gr = by_id.get(gid)
        if gr is None:
            raise PruneError(f"unknown group id {gid} (groups: 0..{len(groups) - 1})")
        try:
            keep = [int(k) for k in kept]
        except (TypeError, ValueError):
            raise PruneError(f"group {gid}: kept indices must be integers") from None
        if any(k != x for k, x in zip(keep, kept, strict=True)):
            raise PruneError(f"group {gid}: kept indices must be integers")
        if not keep:
            raise PruneError(f"group {gid}: the kept set is empty")
        if len(set(keep)) != len(keep):
            dup = sorted({k for k in keep if keep.count(k) > 1})
            raise PruneError(f"group {gid}: kept indices repeated: {dup}")
        bad = [k for k in keep if not 0 <= k < gr.size]
        if bad:
            raise PruneError(f"group {gid}: kept indices out of range 0..{gr.size - 1}: {bad}")
        if not gr.exact:
            raise PruneError(f"group {gid} is not exact: {'; '.join(gr.reasons)}")
        if gr.touches_io and not allow_io:
            raise PruneError(f"group {gid} reaches a model input or output "
                             "(pass allow_io=True to prune it anyway)")
        kept_set = set(keep)
        out[gid] = [c for c in range(gr.size) if c not in kept_set]
    return out


def plan_prune(groups: Sequence[ChannelGroup], removed: Mapping[int, Sequence[int]],
               consumers_only: bool = False) -> dict[tuple[int, int], set[int]]:
    """Removed indices per (leaf, axis) over the chosen groups' members."""
    by_id = {gr.id: gr for gr in groups}
    cut: dict[tuple[int, int], set[int]] = {}
    for gid, rem in removed.items():
        for m in by_id[gid].members:
            if consumers_only and m.role != CONSUMER:
                continue
            cut.setdefault((m.leaf, m.axis), set()).update(_removed_indices(m, rem))
    return cut


@mutator
class _Rewriter(PyExprMutator):  # type: ignore[misc]
    """Replaces constants, reshape shapes and conv group counts by handle."""

    def __init__(self, mod: tvm.IRModule, consts: dict[int, Any],
                 shapes: dict[int, list[Any]], conv_groups: dict[int, int],
                 new_attrs: dict[int, Any] | None = None,
                 params: ParamEdit | None = None) -> None:
        super().__init__(mod)
        self.consts = consts
        self.shapes = shapes
        self.conv_groups = conv_groups
        self.new_attrs = new_attrs or {}  # call handle -> its attrs (split indices)
        self.params = params

    def visit_constant_(self, op: Any) -> Any:
        """A sliced constant, or the original."""
        return self.consts.get(op.__chandle__(), op)

    def visit_call_(self, op: Any) -> Any:
        """Rebuild calls that read sliced constants or carry pruned extents, then let
        the default visit remap their vars and infer their types."""
        # (constants reach here as arguments: the mutator has no hook for TVM 0.27's
        # GenericConst, so they are swapped before the default visit)
        h = op.__chandle__()
        args = list(op.args)
        new_args = [self.consts.get(a.__chandle__(), a) for a in args]
        changed = any(x is not a for x, a in zip(new_args, args, strict=True))
        attrs = op.attrs
        if h in self.shapes and isinstance(args[1], relax.ShapeExpr):
            vals = list(args[1].values)
            for axis, extent in enumerate(self.shapes[h]):
                if extent is not None:
                    vals[axis] = extent
            new_args[1] = relax.ShapeExpr(vals)
            changed = True
        if h in self.conv_groups:
            a = op.attrs
            conv = getattr(relax.op.nn, str(op.op.name).split(".")[-1])
            rebuilt = conv(new_args[0], new_args[1], strides=a.strides, padding=a.padding,
                           dilation=a.dilation, groups=self.conv_groups[h],
                           data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                           out_layout=a.out_layout, out_dtype=a.out_dtype)
            attrs = rebuilt.attrs
            changed = True
        if h in self.new_attrs:
            attrs = self.new_attrs[h]
            changed = True
        if changed:
            op = relax.Call(op.op, new_args, attrs, op.ty_args, op.span)
        return super().visit_call_(op)

    def run(self, mod: tvm.IRModule) -> tvm.IRModule:
        """Rewrite every Relax function of the module."""
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                if self.params is not None and gv.name_hint == self.params.entry:
                    func = self.params.retype(self, func)
                self.builder_.update_func(gv, self.visit_expr(func))
        out: tvm.IRModule = self.builder_.get()
        return out


def _new_shape(view: Any, site: Any, data: int | None,
               cut: dict[int, dict[int, set[int]]]) -> list[Any] | None:
    """The shape argument of a reshape or broadcast_to whose input or output lost
    channels: an output axis that is a member loses its removed count; a reshape's
    axis merged from inputs that lost some is the product of the inputs' new extents."""
    out = site.out
    old = list(site.call.args[1].values)
    new: list[Any] = [None] * len(old)
    out_cut = cut.get(out, {})
    for axis, idx in out_cut.items():
        new[axis] = int(old[axis]) - len(idx)
    in_cut = cut.get(data, {}) if data is not None else {}
    if site.op != "relax.reshape" or not in_cut:
        return new
    in_ty = view.leaf_type[data]
    in_vals = list(in_ty.shape.values) if getattr(in_ty, "shape", None) is not None else None
    src, dst = view.shape(data), view.shape(out)
    if in_vals is None or src is None or dst is None:
        raise PruneError("a reshape of a tensor of unknown shape merges pruned channels")
    plan = reshape_groups(tuple(src), tuple(dst))
    if plan is None:
        raise PruneError("a reshape of pruned channels whose sizes do not line up")
    for s_axes, d_axes in plan:
        if len(d_axes) != 1 or new[d_axes[0]] is not None:
            continue
        if not any(a in in_cut for a in s_axes):
            continue
        prod: Any = 1
        for a in s_axes:
            v = int(in_vals[a]) - len(in_cut[a]) if a in in_cut else in_vals[a]
            prod = prod * v
        new[d_axes[0]] = prod
    return new


def _apply(g: ChannelGraph, mod: tvm.IRModule, cut: dict[tuple[int, int], set[int]],
           zero: bool, names: Any) -> tvm.IRModule:
    view = g.view
    per_leaf: dict[int, dict[int, set[int]]] = {}
    for (leaf, axis), idx in cut.items():
        per_leaf.setdefault(leaf, {})[axis] = idx
    consts: dict[int, Any] = {}
    shapes: dict[int, list[Any]] = {}
    conv_groups: dict[int, int] = {}
    new_attrs: dict[int, Any] = {}
    params = ParamEdit(view.entry)
    site_of = {s.value_id: s for s in view.sites if s.call is not None}
    for leaf, axes in sorted(per_leaf.items()):
        v = view.values[view.leaf_value[leaf]]
        if v.kind == "param":
            if leaf in g.io_leaves:
                raise PruneError(f"the channels reach the model input '{names(leaf)}': "
                                 "a prune cannot change what callers pass")
            if v.func != view.entry or not isinstance(v.struct, int):
                raise PruneError(f"weight '{names(leaf)}' is a parameter of the called "
                                 f"function '{v.func}': only the entry function's weight "
                                 "parameters can be sliced")
            params.add(v.expr, axes, zero)
            continue
        if v.kind == "const":
            arr = v.expr.value.numpy()
            if zero:
                arr = arr.copy()
                for axis, idx in axes.items():
                    sl: list[Any] = [slice(None)] * arr.ndim
                    sl[axis] = sorted(idx)
                    arr[tuple(sl)] = 0
            else:
                for axis, idx in sorted(axes.items()):
                    arr = np.delete(arr, sorted(idx), axis=axis)
            data = tvm.runtime.tensor(np.ascontiguousarray(arr))
            ty = relax.const(arr).ty
            consts[v.expr.__chandle__()] = tvm.ir.GenericConst(data, ty, v.expr.span)
            continue
        if zero:
            continue
        site = site_of.get(v.id)
        if site is None:
            continue
        if site.op in ("relax.full", "relax.zeros", "relax.ones"):
            raise PruneError(f"'{names(leaf)}' ({site.op}) carries a pruned extent in its "
                             "shape argument")
    if not zero:
        for site in view.sites:
            if site.op in ("relax.reshape", "relax.broadcast_to") and isinstance(
                    site.out, int):
                data = site.args[0] if isinstance(site.args[0], int) else None
                if site.out in per_leaf or data in per_leaf:
                    new = _new_shape(view, site, data, per_leaf)
                    if new is not None:
                        shapes[site.call.__chandle__()] = new
            elif site.op == "relax.split" and site.args[0] in per_leaf:
                split = split_attrs(view, site, per_leaf)
                if split is not None:
                    new_attrs[site.call.__chandle__()] = split
    for weight, vid in g.depthwise.items():
        cut_w = per_leaf.get(weight)
        if cut_w and not zero:
            site = site_of[vid]
            dims = view.shape(weight) or []
            o = str(site.attrs.kernel_layout).index("O")
            e = dims[o]
            if isinstance(e, int):
                conv_groups[site.call.__chandle__()] = e - len(cut_w.get(o, ()))
    return _Rewriter(mod, consts, shapes, conv_groups, new_attrs,
                     params if params.cuts else None).run(mod)


def prune(mod: tvm.IRModule, selection: Selection, allow_io: bool = False,
          entry_name: str = "main", rules: RuleSet | None = None) -> tvm.IRModule:
    """Keep `selection[group_id]` channels of each chosen group; a new module that
    builds and runs (the input module is unchanged)."""
    with paused_gc():
        g = channel_graph(mod, entry_name, rules)
        names = _Namer(mod, g.result, entry_name, planned=False)
        groups = build_groups(g, names)
        removed = check_selection(groups, selection, allow_io)
        return _apply(g, mod, plan_prune(groups, removed), False, names)


def mask_consumers(mod: tvm.IRModule, selection: Selection, allow_io: bool = False,
                   entry_name: str = "main", rules: RuleSet | None = None) -> tvm.IRModule:
    """The original module with the consumers' input slices of the channels *not* kept
    set to zero: the reference a prune of the same selection must match exactly.
    (Weights that are parameters are zeroed in the function's "params" attribute, the
    frontend's copy; `detach_params` of the result gives them.)"""
    with paused_gc():
        g = channel_graph(mod, entry_name, rules)
        names = _Namer(mod, g.result, entry_name, planned=False)
        groups = build_groups(g, names)
        removed = check_selection(groups, selection, allow_io)
        return _apply(g, mod, plan_prune(groups, removed, consumers_only=True), True, names)

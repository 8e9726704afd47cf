"""Prune channel groups: slice every weight member, rewrite what carries the shapes.

`prune(mod, {group_id: kept_indices})` keeps the listed channels of each chosen group:
constants of the group are sliced along their member axes, every tensor axis of the
groups (and an axis a reshape merged from them) gets its new extent, reshapes and
broadcasts get their output's new shape, depthwise convs get the new group count, and
the changed bindings are rebuilt with those types (prune_rebuild.py). Names and
layout markers in spans survive: calls and constants keep their spans.

`mask_consumers` builds the numeric oracle's reference: the original module with the
consumers' input slices of the removed channels set to zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .channel_graph import ChannelGraph, channel_graph
from .channels import (
    CONSUMER,
    ChannelGroup,
    _Namer,
    build_groups,
    covered,
    member_axes,
    member_rows,
)
from .dsl.ruleset import RuleSet
from .errors import PruneError
from .ffi import items
from .prune_consts import Consts, host_array
from .prune_cut import ByLeaf, const_slices, plan_cut
from .prune_edits import ParamEdit, split_attrs
from .prune_rebuild import _MAKE_SHAPE, CallEdit, Retyper, const_nodes, rebuild
from .util import paused_gc

Selection = Mapping[int, Sequence[int]]
_PARAM = 2  # (a leaf kind, as channel_native's)
_INTS = {int}


def check_selection(groups: Sequence[ChannelGroup], selection: Selection,
                    allow_io: bool = False) -> dict[int, list[int]]:
    """Validate a selection; return the removed channels per group id."""
    by_id = {gr.id: gr for gr in groups}
    out: dict[int, list[int]] = {}
    ints = _INTS
    for gid, kept in selection.items():
        gr = by_id.get(gid)
        if gr is None:
            raise PruneError(f"unknown group id {gid} (groups: 0..{len(groups) - 1})")
        # (the common case, a list of ints: nothing to convert)
        if type(kept) is list and kept and {*map(type, kept)} == ints:
            keep = kept
        else:
            try:
                keep = [int(k) for k in kept]
            except (TypeError, ValueError):
                raise PruneError(f"group {gid}: kept indices must be integers") from None
            if any(k != x for k, x in zip(keep, kept, strict=True)):
                raise PruneError(f"group {gid}: kept indices must be integers")
        if not keep:
            raise PruneError(f"group {gid}: the kept set is empty")
        kept_set = set(keep)
        if len(kept_set) != len(keep):
            dup = sorted({k for k in keep if keep.count(k) > 1})
            raise PruneError(f"group {gid}: kept indices repeated: {dup}")
        size = gr.size
        if min(keep) < 0 or max(keep) >= size:
            bad = [k for k in keep if not 0 <= k < size]
            raise PruneError(f"group {gid}: kept indices out of range 0..{size - 1}: {bad}")
        if not gr.exact:
            raise PruneError(f"group {gid} is not exact: {'; '.join(gr.reasons)}")
        if gr.touches_io and not allow_io:
            raise PruneError(f"group {gid} reaches a model input or output "
                             "(pass allow_io=True to prune it anyway)")
        out[gid] = [c for c in range(size) if c not in kept_set]
    return out


Cut = dict[int, dict[int, list[int]]]
"""Removed indices (sorted) per leaf and axis."""


def _ranged_axes(group: ChannelGroup, consumers_only: bool
                 ) -> Iterable[tuple[tuple[int, int, int, int], Sequence[tuple[int, int]]]]:
    """The members' ((offset, block, stride, repeat), their (leaf, axis) pairs): from
    the group's walks when its rows are not made (member_axes), else row by row (only
    the consumers' with `consumers_only`)."""
    found = None if consumers_only else member_axes(group)
    if found is not None:
        return found
    return (((off, blk, st, rep), ((leaf, axis),))
            for leaf, axis, role, _, off, blk, st, rep in member_rows(group)
            if not consumers_only or role == CONSUMER)


def plan_prune(groups: Sequence[ChannelGroup], removed: Mapping[int, Sequence[int]],
               consumers_only: bool = False) -> Cut:
    """Removed indices per leaf and axis over the chosen groups' members (members of a
    group with the same range share one list)."""
    by_id = {gr.id: gr for gr in groups}
    cut: Cut = {}
    for gid, rem in removed.items():
        # most members share a range
        ranges: dict[tuple[int, int, int, int], list[int]] = {}
        for rng, at in _ranged_axes(by_id[gid], consumers_only):
            idx = ranges.get(rng)
            if idx is None:
                idx = ranges[rng] = covered(*rng, rem)
            for leaf, axis in at:
                axes = cut.get(leaf)
                if axes is None:
                    cut[leaf] = {axis: idx}
                    continue
                got = axes.get(axis)
                axes[axis] = idx if got is None or got is idx else sorted({*got, *idx})
    return cut


@mutator
class _Rewriter(PyExprMutator):  # type: ignore[misc]
    """Replaces constants and edits calls by handle, letting TVM infer every changed
    call's type: the fallback for what prune_rebuild does not handle."""

    def __init__(self, mod: tvm.IRModule, consts: dict[int, Any],
                 calls: dict[int, CallEdit], params: ParamEdit | None = None) -> None:
        super().__init__(mod)
        self.consts = consts
        self.calls = calls
        self.params = params

    def visit_constant_(self, op: Any) -> Any:
        """A sliced constant, or the original."""
        return self.consts.get(op.__chandle__(), op)

    def visit_call_(self, op: Any) -> Any:
        """Rebuild calls that read sliced constants or carry pruned extents, then let
        the default visit remap their vars and infer their types."""
        # (constants reach here as arguments: the mutator has no hook for TVM 0.27's
        # GenericConst, so they are swapped before the default visit)
        args = list(op.args)
        new_args = [self.consts.get(a.__chandle__(), a) for a in args]
        changed = any(x is not a for x, a in zip(new_args, args, strict=True))
        attrs = op.attrs
        edit = self.calls.get(op.__chandle__())
        if edit is not None:
            new_args, attrs = edit(op, new_args, attrs)
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


def _reshape_edit(extents: list[Any]) -> CallEdit:
    """Set the pruned extents of a reshape's or broadcast_to's shape argument."""
    def edit(call: Any, args: list[Any], attrs: Any) -> tuple[list[Any], Any]:
        shape = args[1]
        if isinstance(shape, relax.ShapeExpr):
            vals = items(shape.values)
            for axis, extent in enumerate(extents):
                if extent is not None:
                    vals[axis] = extent
            args = [args[0], _MAKE_SHAPE(vals, shape.span), *args[2:]]
        return args, attrs
    return edit


def _conv_groups_attrs(call: Any, groups: int) -> Any:
    """A (depthwise) conv's attributes with a new group count."""
    a = call.attrs
    conv = getattr(relax.op.nn, str(call.op.name).split(".")[-1])
    return conv(call.args[0], call.args[1], strides=a.strides, padding=a.padding,
                dilation=a.dilation, groups=groups, data_layout=a.data_layout,
                kernel_layout=a.kernel_layout, out_layout=a.out_layout,
                out_dtype=a.out_dtype).attrs


def _attrs_edit(attrs: Any) -> CallEdit:
    """An edit that gives a call new attributes (a split's indices, a conv's groups)."""

    def edit(call: Any, args: list[Any], old: Any) -> tuple[list[Any], Any]:
        return args, attrs

    return edit


def _call_edits(view: Any, attrs: Mapping[int, Any], shaped: Sequence[tuple[int, int]],
                extents: Mapping[int, Mapping[int, Any]]) -> dict[int, CallEdit]:
    """The edits of calls for the Python rebuilds: new attributes, and the shape
    argument of each reshape or broadcast_to (by site index) whose output lost
    channels."""
    calls: dict[int, CallEdit] = {h: _attrs_edit(a) for h, a in attrs.items()}
    for i, made in shaped:
        new = extents[made]
        calls[view.sites.call_of(i).__chandle__()] = _reshape_edit(
            [new.get(i) for i in range(view.leaf_ndim[made])])
    return calls


def _extent_expr(view: Any, leaf: int, axis: int) -> Any:
    """The extent of `axis` of `leaf` as its type says (a PrimExpr), None if unknown."""
    shape = getattr(view.leaf_type[leaf], "shape", None)
    values = getattr(shape, "values", None)
    return values[axis] if values is not None and axis < len(values) else None


def _new_extents(g: ChannelGraph, cut: Mapping[int, Mapping[int, list[int]]]
                 ) -> dict[int, dict[int, Any]]:
    """The new extent of every tensor axis the prune shrinks, by leaf and axis: the cut
    axes lose their removed indices, and an axis a reshape merged from cut ones (batch
    times heads) is the product of their new extents, on every axis of its class."""
    view = g.view
    out: dict[int, dict[int, Any]] = {}
    shape, find, base = view.shape, g.find, g.base
    # the new extent of each cut class, for the merged axes below (if any)
    by_class: dict[Any, Any] | None = {} if g.composite else None
    for leaf, axes in cut.items():
        dims = shape(leaf)
        if dims is None:
            continue
        row = out[leaf] = {}
        b = base[leaf]
        for axis, idx in axes.items():
            e = dims[axis]
            if type(e) is int:
                row[axis] = left = e - len(idx)
                if by_class is not None:
                    by_class[find(b + axis)] = left
    if by_class is None:
        return out
    merged: dict[int, int] = {}
    changed = True
    while changed:  # (a merge of merged axes takes one more round)
        changed = False
        for root, parts in g.composite.items():
            if root in merged:
                continue
            for n, _ in parts:
                if find(n) in by_class:
                    break
            else:
                continue  # (none of its parts is cut)
            size: Any = None
            for n, old in parts:
                new = by_class.get(g.find(n), old)
                if not isinstance(new, int):
                    # a symbolic extent (batch merged with pruned heads): its expression
                    new = _extent_expr(view, *g.axis_of(n))
                    if new is None:
                        name = view.values[view.leaf_value[g.axis_of(root)[0]]].name
                        raise PruneError(f"a reshape merges pruned channels with an axis "
                                         f"of unknown extent (into {name})")
                size = new if size is None else size * new
            merged[root] = by_class[root] = size
            changed = True
    if merged:
        node_leaf, base = g.node_leaf, g.base
        g.flatten()  # (no union comes after the walk)
        for r in sorted(merged):
            size = merged[r]
            for n in g.members(r):
                leaf = node_leaf[n]
                out.setdefault(leaf, {})[n - base[leaf]] = size
    return out


def _weights(g: ChannelGraph, per_leaf: Mapping[int, Any], consts: Consts | None = None
             ) -> list[int]:
    """The cut leaves that are not bindings' (constants, parameters), sorted; given
    `consts`, a cut the native walk planned has its constants added to it at once
    (their records made with numpy) and they are left out."""
    if isinstance(per_leaf, ByLeaf) and g.leaf_kind is not None:
        leaves = per_leaf.leaves
        kinds = g.leaf_kind[leaves]
        if consts is not None and per_leaf.counts is not None:
            packed, records = const_slices(g, per_leaf, per_leaf.counts)
            if len(packed):
                values, leaf_value = g.view.values, g.view.leaf_value

                def listed() -> list[tuple[Any, int, Mapping[int, Sequence[int]]]]:
                    return [(values[leaf_value[leaf]].expr, leaf, per_leaf[leaf])
                            for leaf in packed.tolist()]

                consts.add_packed(records, listed)
            out: list[int] = leaves[kinds == _PARAM].tolist()
            return out
        out = leaves[kinds != 0].tolist()
        return out
    values, leaf_value = g.view.values, g.view.leaf_value
    return sorted(leaf for leaf in per_leaf if values[leaf_value[leaf]].kind != "binding")


def _apply(g: ChannelGraph, mod: tvm.IRModule, per_leaf: Mapping[int, Mapping[int, list[int]]],
           zero: bool, names: Any, new_extents: Mapping[int, Any] | None = None
           ) -> tvm.IRModule:
    view = g.view
    attrs: dict[int, Any] = {}  # call handle -> its new attributes
    shaped: list[tuple[int, int]] = []  # (reshape or broadcast_to site, its output leaf)
    # (a mask keeps every type: its constants keep their shapes)
    extents: Mapping[int, Any] = {} if zero else new_extents if new_extents is not None \
        else _new_extents(g, per_leaf)
    retype = Retyper(extents)
    values, leaf_value = view.values, view.leaf_value
    params = ParamEdit(view.entry)
    consts = Consts(view)
    for leaf in _weights(g, per_leaf, None if zero else consts):
        axes = per_leaf[leaf]
        v = values[leaf_value[leaf]]
        kind = v.kind
        if kind == "param":
            if leaf in g.io_leaves:
                raise PruneError(f"the channels reach the model input '{names(leaf)}': "
                                 "a prune cannot change what callers pass")
            if v.func != view.entry or not isinstance(v.struct, int):
                raise PruneError(f"weight '{names(leaf)}' is a parameter of the called "
                                 f"function '{v.func}': only the entry function's weight "
                                 "parameters can be sliced")
            params.add(v.expr, axes, zero)
            continue
        if kind == "const":
            if zero:
                arr = host_array(v.expr.value).copy()
                for axis, idx in axes.items():
                    sl: list[Any] = [slice(None)] * arr.ndim
                    sl[axis] = idx
                    arr[tuple(sl)] = 0
                consts.add_data(v.expr, leaf, arr)
            else:
                consts.add_cut(v.expr, leaf, axes)
    sites = view.sites
    site_ops, site_outs = sites.op, sites.out
    for i in () if zero else g.shape_sites:
        op = site_ops[i]
        if op == "relax.split" and sites.args_of(i)[0] in per_leaf:
            site = sites[i]
            split = split_attrs(view, site, per_leaf)
            if split is not None:  # (before the test below: a split makes a tuple)
                attrs[site.call.__chandle__()] = split
        made = site_outs[i]
        # (a ByLeaf's leaves all have extents: no dict made to know)
        if type(made) is not int or made not in extents or (
                type(extents) is dict and not extents[made]):
            continue
        if op in ("relax.full", "relax.zeros", "relax.ones"):
            raise PruneError(f"'{names(made)}' ({op}) carries a pruned extent in its "
                             "shape argument")
        # a reshape's or broadcast_to's shape argument is its output's new shape
        if op in ("relax.reshape", "relax.broadcast_to"):
            shaped.append((i, made))
    for weight, vid in g.depthwise.items():
        cut_w = per_leaf.get(weight)
        if cut_w and not zero:
            site = sites[g.depthwise_sites[vid]]
            dims = view.shape(weight) or []
            o = str(site.attrs.kernel_layout).index("O")
            e = dims[o]
            if isinstance(e, int):
                attrs[site.call.__chandle__()] = _conv_groups_attrs(
                    site.call, e - len(cut_w.get(o, ())))

    def calls() -> dict[int, CallEdit]:
        return _call_edits(view, attrs, shaped, extents)

    if params.cuts:  # new parameter vars: the mutator rebuilds the signature
        return _Rewriter(mod, const_nodes(view, consts.made(), retype), calls(),
                         params).run(mod)
    out = rebuild(mod, view, consts, attrs, retype, calls)
    return out if out is not None else _Rewriter(
        mod, const_nodes(view, consts.made(), retype), calls()).run(mod)


def _graph_and_groups(mod: tvm.IRModule, entry_name: str, rules: RuleSet | None,
                      groups: Sequence[ChannelGroup] | None
                      ) -> tuple[ChannelGraph, Any, Sequence[ChannelGroup]]:
    """The channel graph, namer and groups of `mod`: those `groups` came with when
    channel_groups found them on this very module, else found anew."""
    g = getattr(groups, "graph", None)
    if groups is not None and isinstance(g, ChannelGraph) and g.built_on(
            mod, entry_name, rules):
        return g, _Namer(mod, g.result, entry_name, planned=False), groups
    g = channel_graph(mod, entry_name, rules, layouts=False)
    names = _Namer(mod, g.result, entry_name, planned=False)
    return g, names, build_groups(g, names)


def prune(mod: tvm.IRModule, selection: Selection, allow_io: bool = False,
          entry_name: str = "main", rules: RuleSet | None = None,
          groups: Sequence[ChannelGroup] | None = None) -> tvm.IRModule:
    """Keep `selection[group_id]` channels of each chosen group; a new module that
    builds and runs (the input module is unchanged). `groups`: what channel_groups
    returned for this module, to reuse its walk (ignored if it is not of `mod`)."""
    with paused_gc():
        g, names, gs = _graph_and_groups(mod, entry_name, rules, groups)
        removed = check_selection(gs, selection, allow_io)
        planned = plan_cut(g, gs, removed)
        if planned is not None:
            return _apply(g, mod, planned[0], False, names, planned[1])
        return _apply(g, mod, plan_prune(gs, removed), False, names)


def mask_consumers(mod: tvm.IRModule, selection: Selection, allow_io: bool = False,
                   entry_name: str = "main", rules: RuleSet | None = None,
                   groups: Sequence[ChannelGroup] | None = None) -> tvm.IRModule:
    """The original module with the consumers' input slices of the channels *not* kept
    set to zero: the reference a prune of the same selection must match exactly
    (`groups` as for prune). Weights that are parameters are zeroed in the function's
    "params" attribute, the frontend's copy; `detach_params` of the result gives them."""
    with paused_gc():
        g, names, gs = _graph_and_groups(mod, entry_name, rules, groups)
        removed = check_selection(gs, selection, allow_io)
        return _apply(g, mod, plan_prune(gs, removed, consumers_only=True), True, names)

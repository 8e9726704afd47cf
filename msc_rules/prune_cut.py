"""A prune's cut as arrays, for a channel graph the native ties walk found (every
extent static): the removed indices of every tensor axis the chosen groups reach, the
new extents, and the new types as the native rebuild takes them, found with numpy
passes over the groups' classes instead of a Python loop per axis.

`plan_cut` gives what prune.py's `plan_prune` and `_new_extents` give (the same
removed indices and extents, as read-only mappings by leaf that make a leaf's axes
when first asked for), or None for what it does not take (a graph the Python walk
found, a reshape that merges pruned channels with another axis, members already
made), and the caller takes the dict path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from .channel_graph import ChannelGraph
from .channels import ChannelGroup, covered, member_walks
from .graph import DependencyView

_CONST, _PARAM = 1, 2  # (leaf kinds, as channel_native's)


class ByLeaf(Mapping[int, dict[int, Any]]):
    """Per leaf, its cut axes -> a value (removed indices, or new extents): rows
    `starts[k]:ends[k]` of node arrays sorted by node, a leaf's dict made when first
    read. A row's value is `values[row]`, or `values[pick[row]]` given `pick` (the
    nodes of a class share its value)."""

    def __init__(self, leaves: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 axes: np.ndarray, values: Sequence[Any],
                 row: dict[int, int] | None = None, pick: np.ndarray | None = None) -> None:
        self.leaves, self.starts, self.ends = leaves, starts, ends
        self.axes, self.data, self.pick = axes, values, pick
        self.row = row if row is not None else dict(
            zip(leaves.tolist(), range(len(leaves)), strict=True))
        self.made: dict[int, dict[int, Any]] = {}
        self.counts: np.ndarray | None = None  # (removed indices: the lengths of values)

    def values_of(self, rows: np.ndarray) -> list[Any]:
        """The values of these rows."""
        data = self.data
        at = rows if self.pick is None else self.pick[rows]
        return [data[k] for k in at.tolist()]

    def __getitem__(self, leaf: int) -> dict[int, Any]:
        got = self.made.get(leaf)
        if got is None:
            k = self.row[leaf]
            lo, hi = int(self.starts[k]), int(self.ends[k])
            vals = self.data[lo:hi] if self.pick is None else \
                self.values_of(np.arange(lo, hi))
            got = self.made[leaf] = dict(zip(self.axes[lo:hi].tolist(), vals, strict=True))
        return got

    def __contains__(self, leaf: object) -> bool:
        return leaf in self.row

    def __iter__(self) -> Iterator[int]:
        return iter(self.row)

    def __len__(self) -> int:
        return len(self.row)


class NewExtents(ByLeaf):
    """The new extents (all static), and the records of the native rebuild."""

    def __init__(self, cut: ByLeaf, new: np.ndarray, g: ChannelGraph) -> None:
        super().__init__(cut.leaves, cut.starts, cut.ends, cut.axes, new.tolist(), cut.row)
        self.g, self.new = g, new

    def records(self) -> np.ndarray:
        """(handle, static shape id, n, n (axis, extent) pairs) per binding or constant
        whose tensor lost channels (aliases share their source's leaf: each gets its
        own record, without the id: see static_shape_id)."""
        g = self.g
        leaf_of, kind_of, handle_of, _ = _values(g)
        row = np.full(len(g.view.leaf_ndim), -1, dtype=np.int64)
        row[self.leaves] = np.arange(len(self.leaves))
        vids = np.flatnonzero(leaf_of >= 0)
        vids = vids[(kind_of[vids] != _PARAM) & (row[leaf_of[vids]] >= 0)]
        leaves = leaf_of[vids]
        rows = row[leaves]
        n = (self.ends - self.starts)[rows]
        sizes = 3 + 2 * n
        at = np.cumsum(sizes) - sizes
        out = np.empty(int(sizes.sum()), dtype=np.int64)
        out[at] = handle_of[vids]
        view = g.view
        static = np.full(len(view.leaf_ndim), -1, dtype=np.int64)
        ids = view.static_shape_ids()
        static[:len(ids)] = ids[:len(static)]
        owner = np.frombuffer(view.leaf_value, dtype=np.int32)
        out[at + 1] = np.where(owner[leaves] == vids, static[leaves], -1)
        out[at + 2] = n
        which = np.repeat(np.arange(len(vids)), n)
        k = np.arange(len(which)) - np.repeat(np.cumsum(n) - n, n)
        src = self.starts[rows][which] + k
        pos = at[which] + 3 + 2 * k
        out[pos] = self.axes[src]
        out[pos + 1] = self.new[src]
        return out

    def tuples(self) -> list[int]:
        """The value ids of the bindings of tuples."""
        return _values(self.g)[3]


def const_slices(g: ChannelGraph, cut: ByLeaf, counts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The cut leaves that are constants, and their records as prune.cc slices them
    (handle, cut axes, then per axis: axis, count, removed indices), made at once.
    `counts`: the number of removed indices of each of the cut's rows."""
    assert g.leaf_kind is not None
    rows = np.flatnonzero(g.leaf_kind[cut.leaves] == _CONST)
    leaves = cut.leaves[rows]
    if not len(rows):
        return leaves, np.zeros(0, dtype=np.int64)
    value_of = np.frombuffer(g.view.leaf_value, dtype=np.int32)
    handles = _values(g)[2][value_of[leaves]]
    starts, n_ax = cut.starts[rows], (cut.ends - cut.starts)[rows]
    # the cut's rows of these leaves, in order
    first_ax = np.cumsum(n_ax) - n_ax
    at_row = np.repeat(starts - first_ax, n_ax) + np.arange(int(n_ax.sum()))
    cnt = counts[at_row]
    per_axis = 2 + cnt
    axis_at = np.cumsum(per_axis) - per_axis  # (within all the axis records)
    words = 2 + np.add.reduceat(per_axis, first_ax)
    const_at = np.cumsum(words) - words
    owner = np.repeat(np.arange(len(rows)), n_ax)
    at = const_at[owner] + 2 + axis_at - axis_at[first_ax][owner]
    out = np.empty(int(words.sum()), dtype=np.int64)
    out[const_at] = handles
    out[const_at + 1] = n_ax
    out[at] = cut.axes[at_row]
    out[at + 1] = cnt
    flat = np.fromiter(chain.from_iterable(cut.values_of(at_row)), dtype=np.int64,
                       count=int(cnt.sum()))
    out[np.repeat(at + 2 - (np.cumsum(cnt) - cnt), cnt) + np.arange(len(flat))] = flat
    return leaves, out


def static_shape_id(view: DependencyView, vid: int, leaf: int) -> int:
    """The id the native read gave the static shape of value `vid`'s tensor `leaf`
    (prune.cc memoises new types by it), -1 when it has none or the value is not the
    leaf's own (an alias: its var's type may say less than its source's)."""
    if view.leaf_value[leaf] != vid:
        return -1
    return int(view.static_shape_id(leaf))


def _values(g: ChannelGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Per value of the view: its leaf (-1: not one tensor), kind, node handle (the
    var's, or the constant's); and the bindings of tuples. Made once per graph."""
    got = g.value_arrays
    if got is None:
        view: DependencyView = g.view
        values = view.values
        codes, handle_of = values.codes()
        kind_of = np.zeros(len(codes), dtype=np.int64)
        for vid in view.others:  # (the rest are bindings of calls)
            kind = values[vid].kind
            kind_of[vid] = 0 if kind == "binding" else 1 if kind == "const" else _PARAM
        tuples = [vid for vid in np.flatnonzero(codes == -2).tolist()
                  if type(values[vid].struct) is tuple and values[vid].kind == "binding"]
        got = g.value_arrays = (np.where(codes >= 0, codes, -1).astype(np.int64), kind_of,
                                handle_of, tuples)
    return got


def plan_cut(g: ChannelGraph, groups: Sequence[ChannelGroup],
             removed: Mapping[int, Sequence[int]]) -> tuple[ByLeaf, NewExtents] | None:
    """The removed indices and new extents by leaf and axis (see the module docstring);
    None when the dict path must do it."""
    node_ext = g.node_ext
    if node_ext is None:
        return None
    by_id = {gr.id: gr for gr in groups}
    cls_of: list[int] = []
    idx_of: list[list[int]] = []
    for gid, rem in removed.items():
        walks = member_walks(by_id[gid])
        if walks is None:
            return None
        ranges: dict[tuple[int, int, int, int], list[int]] = {}
        for w in walks:
            for c, off, blk, _, st, rep in w.visits:
                rng = (off, blk, st, rep)
                idx = ranges.get(rng)
                if idx is None:
                    idx = ranges[rng] = covered(off, blk, st, rep, rem)
                cls_of.append(c)
                idx_of.append(idx)
    roots = g.root_array
    if roots is None:
        roots = g.root_array = np.array(g.flatten(), dtype=np.int64)
    # per visited class, the removed indices of its visits (merged when they differ)
    cls = np.array(cls_of, dtype=np.int64)
    order = np.argsort(cls, kind="stable")
    ranked = cls[order]
    new = np.ones(len(ranked), dtype=bool)
    new[1:] = ranked[1:] != ranked[:-1]
    firsts = np.flatnonzero(new)
    classes = ranked[firsts]
    merged = [idx_of[v] for v in order[firsts].tolist()]
    for k in np.flatnonzero(np.diff(np.append(firsts, len(ranked))) > 1).tolist():
        got = merged[k]
        end = firsts[k + 1] if k + 1 < len(firsts) else len(ranked)
        for v in order[firsts[k] + 1:end].tolist():
            idx = idx_of[v]
            if idx is not got:
                got = sorted({*got, *idx})
        merged[k] = got
    slot = np.full(len(roots), -1, dtype=np.int64)  # class root -> its row in merged
    slot[classes] = np.arange(len(classes))
    if g.composite:
        # (a reshape that merged a pruned axis with another: the dict path multiplies
        # their new extents)
        parts = np.fromiter((n for ps in g.composite.values() for n, _ in ps), dtype=np.int64)
        if len(parts) and (slot[roots[parts]] >= 0).any():
            return None
    at = slot[roots]
    nodes = np.flatnonzero(at >= 0)  # (ascending: a leaf's axes together, in order)
    pick = at[nodes]
    leaves = g.leaf_array()[nodes]
    axes = nodes - g.base_array()[leaves]
    first = np.ones(len(leaves), dtype=bool)
    first[1:] = leaves[1:] != leaves[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(leaves))
    cut = ByLeaf(leaves[starts], starts, ends, axes, merged, pick=pick)
    cut.counts = np.fromiter(map(len, merged), dtype=np.int64, count=len(merged))[pick]
    left = node_ext[nodes] - cut.counts
    return cut, NewExtents(cut, left, g)

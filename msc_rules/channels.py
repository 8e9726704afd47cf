"""Channel groups: which weight axes must be pruned together, and per-channel quant axes.

The ties come from `channel_graph.py` (one walk over the call sites of the inference
result's dependency view; no second graph walker): union-find classes of tensor axes,
the producer weight axes, the consumer attachments, the derived edges (concat ranges,
flatten blocks, head splits) and the blocked axes. The design is Torch-Pruning's
DepGraph, restated on axes: a producer's output channels flow through the axes tied to
them and stop at each consumer, whose weight's input-channel axis (`I`) joins the
group as a consumer member; concat and flatten map them into a range or blocks of
another class (`Member.offset`, `Member.block`).

A group is the class of a producer, the classes reached from it over derived edges,
and the consumer classes attached to any of them. Walks of several producers that
cover the same range of a class are one group (q, k and v reaching the same heads);
where their blocks differ the finer one is coarsened (a GQA kv head covers several
query heads: the group's channel is a kv head). A group reaching a blocked axis (a
reduction, softmax or norm over it, a grouped conv, an op without a channel rule) is
not exact, with the reasons. Each member reports its layout letter; the ties
themselves come from the ops' attributes and shapes, which the letters encode. So a
member's name and letter are found when first read (the names planned for the whole
module, the layouts inferred on the same view, once): a prune that picks its groups
by id pays for neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import tvm

from .channel_graph import ChannelGraph, _Edge, _extent, _leaves, channel_graph
from .dsl.ruleset import RuleSet
from .engine import InferenceResult
from .graph import DependencyView
from .util import paused_gc

PRODUCER = "producer"
FOLLOW = "follow"
ACTIVATION = "activation"
CONSUMER = "consumer"
class _Lazy:
    """A member field looked up on first read: naming a whole module, or inferring its
    layouts, costs as much as the walk, and a prune that picks its groups by id never
    reads a name or a letter. Given a str it is that; given a source (a namer, a
    letters), what `read(source, member)` says, then kept."""

    def __init__(self, name: str, read: Callable[[Any, Any], str]) -> None:
        self.slot, self.read = "_" + name, read

    def __get__(self, obj: Any, owner: type | None = None) -> str:
        if obj is None:
            raise AttributeError(self.slot)  # (no default for the dataclass field)
        got = obj.__dict__[self.slot]
        if type(got) is not str:
            got = obj.__dict__[self.slot] = self.read(got, obj)
        return got

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclass(frozen=True)
class Member:
    """One tensor axis in a group: group channel c is the index range
    `[offset + c * block, offset + (c + 1) * block)` of `axis` of `tensor`, repeated
    `repeat` times `stride` apart (a grouped conv: the same position in each of its
    groups; an NHWC flatten: every C-th input of the linear)."""

    tensor: str  # (read through _Lazy, installed below)
    axis: int
    role: str  # producer | follow | activation | consumer
    kind: str  # const | param | binding
    offset: int = 0
    block: int = 1
    # the layout letter of the axis ("" when the tensor has no layout; through _Lazy)
    letter: str = ""
    leaf: int = field(default=-1, compare=False, repr=False)
    stride: int = 0
    repeat: int = 1

    def indices(self, channels: Iterable[int]) -> list[int]:
        """The indices of `axis` that the given group channels cover, sorted."""
        return covered(self.offset, self.block, self.stride, self.repeat, channels)


def covered(offset: int, block: int, stride: int, repeat: int,
            channels: Iterable[int]) -> list[int]:
    """The indices a member's range covers for the given group channels, sorted (see
    Member)."""
    if block == 1 and repeat == 1:  # (most members: one index per channel)
        return sorted([offset + c for c in channels])
    return sorted(offset + c * block + j + r * stride
                  for c in channels for r in range(repeat) for j in range(block))


# (installed after the dataclass is made: its __init__ sets them through the descriptor)
Member.tensor = _Lazy("tensor", lambda names, m: names(m.leaf))  # type: ignore[assignment]
Member.letter = _Lazy("letter", lambda letters, m: letters(m.leaf, m.axis))  # type: ignore[assignment]


def _lazy(source: Any) -> str:
    """A namer or letters passed as a member's tensor name or letter: what it gives the
    member, asked for on the first read (see _Lazy)."""
    return source


class _Letters:
    """The layout letters of a view's tensor axes, inferred on the first letter asked
    for (the groups come from the ops alone)."""

    def __init__(self, view: DependencyView, rules: RuleSet) -> None:
        self.view, self.rules = view, rules
        self.layouts: list[str | None] | None = None

    def __call__(self, leaf: int, axis: int) -> str:
        if self.layouts is None:
            from .engine import infer_view

            with paused_gc():
                self.layouts = infer_view(self.view, self.rules).layouts
        lay = self.layouts[leaf] or ""
        return lay[axis] if axis < len(lay) else ""


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together, with the reason when pruning is not exact."""

    id: int
    size: int
    members: tuple[Member, ...]
    exact: bool
    reasons: tuple[str, ...] = ()
    touches_io: bool = False

    @property
    def producers(self) -> tuple[Member, ...]:
        """The producer weights' output-channel axes."""
        return tuple(m for m in self.members if m.role == PRODUCER)

    @property
    def consumers(self) -> tuple[Member, ...]:
        """The consumer weights' input-channel axes (with their ranges)."""
        return tuple(m for m in self.members if m.role == CONSUMER)

    def describe(self) -> str:
        """One line: id, size, producers, and exactness."""
        prods = ", ".join(sorted({m.tensor for m in self.producers}))
        state = "exact" if self.exact else "not exact: " + "; ".join(self.reasons)
        io = " (reaches model input/output)" if self.touches_io else ""
        return f"group {self.id}: {self.size} channels from {prods}{io}, {state}"


_Row = tuple[int, int, str, str, int, int, int, int]
"""A member before it is made: (leaf, axis, role, kind, offset, block, stride, repeat)."""


class _Rows:
    """A group's members as the walk found them (its walks' visits), made into rows
    when first asked for and into Members (sorted by role, tensor, axis, offset) when
    first read: a prune reads the visits alone, and making a member costs more than
    finding it."""

    __slots__ = ("_rows", "grouper", "layouts", "letters", "names", "walks")

    def __init__(self, walks: list[_Walk], grouper: _Grouper, names: Any, letters: Any,
                 layouts: list[str | None]) -> None:
        self.walks, self.grouper = walks, grouper
        self.names, self.letters, self.layouts = names, letters, layouts
        self._rows: list[_Row] | None = None

    def rows(self) -> list[_Row]:
        """(leaf, axis, role, kind, offset, block, stride, repeat) per member."""
        if self._rows is None:
            self._rows = self.grouper.rows(self.walks)
        return self._rows

    def axes(self) -> Iterator[tuple[tuple[int, int, int, int], list[tuple[int, int]]]]:
        """See member_axes."""
        g = self.grouper.g
        classes, node_leaf, base = self.grouper.classes, g.node_leaf, g.base
        for w in self.walks:
            for cls, off, blk, _, st, rep in w.visits:
                at = []
                for n in classes[cls]:
                    leaf = node_leaf[n]
                    at.append((leaf, n - base[leaf]))
                yield (off, blk, st, rep), at

    def members(self) -> tuple[Member, ...]:
        """The Members, in order."""
        name, letters, layouts = self.names, self.letters, self.layouts
        order = _ROLE_ORDER
        keyed = []
        for k, (leaf, axis, role, kind, off, blk, st, rep) in enumerate(self.rows()):
            if letters is None:
                lay = layouts[leaf] or ""
                got = lay[axis] if axis < len(lay) else ""
            keyed.append(((order[role], leaf, axis, off, k), _member(
                name, axis, role, kind, off, blk, got if letters is None else letters, leaf,
                st, rep)))
        keyed.sort(key=_first)
        return tuple(m for _, m in keyed)


class _LazyMembers:
    """ChannelGroup.members: a tuple, or _Rows made into one on first read."""

    def __get__(self, obj: Any, owner: type | None = None) -> tuple[Member, ...]:
        if obj is None:
            raise AttributeError("members")  # (no default for the dataclass field)
        got = obj.__dict__["_members"]
        if type(got) is _Rows:
            got = obj.__dict__["_members"] = got.members()
        return got

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_members"] = value if type(value) is _Rows else tuple(value)


ChannelGroup.members = _LazyMembers()  # type: ignore[assignment]


def member_rows(group: ChannelGroup) -> list[_Row]:
    """(leaf, axis, role, kind, offset, block, stride, repeat) of each member, in no
    particular order, without making the members if they are not made yet."""
    got = group.__dict__.get("_members")
    if type(got) is _Rows:
        return got.rows()
    return [(m.leaf, m.axis, m.role, m.kind, m.offset, m.block, m.stride, m.repeat)
            for m in group.members]


def member_walks(group: ChannelGroup) -> list[_Walk] | None:
    """The walks a group's members come from; None when its members are made already
    (see member_rows)."""
    got = group.__dict__.get("_members")
    return got.walks if type(got) is _Rows else None


def member_axes(group: ChannelGroup) -> Iterator[tuple[tuple[int, int, int, int],
                                                       list[tuple[int, int]]]] | None:
    """The members' ranges as ((offset, block, stride, repeat), their (leaf, axis)
    pairs), a range possibly more than once, found from the group's walks without
    making its rows; None when its members are made already (see member_rows)."""
    got = group.__dict__.get("_members")
    if type(got) is not _Rows:
        return None
    return got.axes()


@dataclass(frozen=True)
class QuantAxes:
    """Per-channel quantization axes: each weight's output-channel axis and each
    activation's channel axis, keyed by tensor name."""

    weights: dict[str, int]
    activations: dict[str, int]


class _Namer:
    """Tensor names for members: the names SetExprName would write (`planned`: planned
    for the whole module on the first name asked for), or variable names (cheaper: for
    a prune, whose groups are chosen by id)."""

    def __init__(self, mod: tvm.IRModule, result: InferenceResult, entry: str,
                 planned: bool = True) -> None:
        # (the module's functions as they are now: the plan may come later)
        self.mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs,
                                global_infos=mod.global_infos) if planned else None
        self.rules, self.entry = result.rules, entry
        self.by_handle: dict[int, str] | None = None if planned else {}
        self.view = result.view
        self.cache: dict[int, str] = {}

    def plan(self) -> dict[int, str]:
        """Expression handle -> planned name."""
        from .naming import plan_names

        if self.by_handle is None:
            assert self.mod is not None
            with paused_gc():  # (as the passes: the plan makes many objects)
                plan = plan_names(self.mod, self.rules, self.entry)
            self.by_handle = dict(zip(plan.handles, plan.labels))
            self.mod = None
        return self.by_handle

    def __call__(self, leaf: int) -> str:
        got = self.cache.get(leaf)
        if got is not None:
            return got
        by_handle = self.by_handle if self.by_handle is not None else self.plan()
        view = self.view
        v = view.values[view.leaf_value[leaf]]
        name = ""
        if v.kind == "const":
            name = by_handle.get(v.expr.__chandle__(), "")
        elif v.kind == "binding" and v.value is not None:
            name = by_handle.get(v.value.__chandle__(), "")
        if not name:
            name = v.name if v.kind != "const" else f"const{v.id}"
        if isinstance(v.struct, tuple):
            path = [i for i, x in enumerate(v.struct) if leaf in set(_leaves(x))]
            name += "".join(f"[{i}]" for i in path)
        self.cache[leaf] = name
        return name


def _kind(view: DependencyView, leaf: int) -> str:
    return str(view.values[view.leaf_value[leaf]].kind)


_Visit = tuple[int, int, int, bool, int, int]


@dataclass(slots=True)
class _Walk:
    """What one producer class reaches, with its channel unit (whole heads: the head
    size; otherwise 1) and its fold (a grouped conv's group count: channel c is then
    the same position in each group): visits are (class, offset, block, through a
    consumer, stride, repeat), see Member."""

    root: int
    unit: int
    size: int
    visits: list[_Visit] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    coarsen: int = 1  # > 1: walk again with unit * coarsen
    fold: int = 1
    refold: int = 1  # > 1: walk again with lcm(fold, refold)

    def why(self, reason: str) -> None:
        """Record a reason the walk is not exact (once)."""
        if reason not in self.reasons:
            self.reasons.append(reason)


def _through(v: _Visit, e: _Edge) -> _Visit | None:
    """The visit an edge with a positive block leads to; None when two repeats do not
    nest into one (the channel's indices would not be one strided set)."""
    cls, off, blk, _, st, rep = v
    inner = (st * e.block, rep) if rep > 1 else None
    outer = (e.stride, e.repeat) if e.repeat > 1 else None
    if inner is not None and outer is not None:
        if inner[0] * inner[1] != outer[0]:
            return None
        inner = (inner[0], inner[1] * outer[1])
    st2, rep2 = inner or outer or (0, 1)
    return cls, e.offset + off * e.block, blk * e.block, False, st2, rep2


class _Classes:
    """A class's nodes by its root (ChannelGraph.members), kept once asked for: the
    walks read only the classes they reach."""

    def __init__(self, g: ChannelGraph) -> None:
        self.g = g
        self.memo: dict[int, list[int]] = {}

    def __getitem__(self, cls: int) -> list[int]:
        got = self.memo.get(cls)
        if got is None:
            got = self.memo[cls] = self.g.members(cls)
        return got


class _Grouper:
    """Walks each producer class over the derived edges and consumer attachments, then
    merges the walks that reach the same channels (attention heads: q, k and v; GQA:
    a kv head and its query heads)."""

    def __init__(self, g: ChannelGraph, names: Any, letters: _Letters | None = None) -> None:
        self.g, self.names, self.letters = g, names, letters
        # (every node points at its root: a find is one step, an index)
        root = self.root_of = g.flatten()
        self.classes = _Classes(g)
        self.consumers_of: dict[int, list[int]] = {}
        for act, w, _ in g.consumers:
            got = self.consumers_of.get(root[act])
            if got is None:
                self.consumers_of[root[act]] = [root[w]]
            else:
                got.append(root[w])
        self.derived_of: dict[int, list[_Edge]] = {}
        for e in g.derived:
            self.derived_of.setdefault(root[e.src], []).append(e)
        self.parts_of: dict[int, list[tuple[int, int, int]]] = {}
        for n, parts in g.parts.items():
            self.parts_of.setdefault(root[n], []).extend(
                (root[f], start, length) for f, start, length in parts)
        self.fold_of: dict[int, int] = {}
        for n, groups in g.folds.items():
            c = root[n]
            self.fold_of[c] = math.lcm(self.fold_of.get(c, 1), groups)
        # a producer class that a split cuts into parts (a fused qkv projection): each
        # part is a root of its own, reaching the producer's range back over its edge
        roots: set[int] = set()
        todo, seen = [root[n] for n in g.producers], set()
        if not self.parts_of:  # (no split: the producers' classes are the roots)
            todo, roots = [], set(todo)
        while todo:
            r = todo.pop()
            if r not in seen:
                seen.add(r)
                if r in self.parts_of:
                    todo.extend(f for f, _, _ in self.parts_of[r])
                else:
                    roots.add(r)
        self.roots = sorted(roots)

    def extent(self, cls: int) -> int | None:
        """The first static extent of the class's nodes (the root's, when the native
        walk gives them all)."""
        if self.g.node_ext is not None:
            return int(self.g.node_ext[cls])
        for n in self.classes[cls]:
            e = _extent(self.g.view, *self.g.axis_of(n))
            if isinstance(e, int):
                return e
        return None

    def walk(self, root: int, unit: int, fold: int = 1) -> _Walk | None:
        ext = self.extent(root)
        if ext is None or ext % (unit * fold):
            return None
        w = _Walk(root, unit, ext // (unit * fold), fold=fold)
        stack: list[_Visit] = [(root, 0, unit, False, ext // fold if fold > 1 else 0, fold)]
        seen: set[_Visit] = set()
        visits = w.visits
        consumers_of, derived_of, parts_of = self.consumers_of, self.derived_of, self.parts_of
        fold_of, find = self.fold_of, self.root_of
        while stack:
            item = stack.pop()
            if item in seen:
                continue
            seen.add(item)
            visits.append(item)
            cls, off, blk, consumer, st, rep = item
            if consumer:
                continue
            for c in consumers_of.get(cls, ()):
                groups = fold_of.get(c, 1)
                if groups == 1:
                    stack.append((c, off, blk, True, st, rep))
                else:
                    self.grouped_consumer(w, item, c, groups, stack)
            for e in derived_of.get(cls, ()):
                dst = find[e.dst]
                if e.block > 0:
                    nxt = _through(item, e)
                    if nxt is None:
                        w.why("a reshape interleaves its channels with another repeat")
                    else:
                        stack.append((dst, *nxt[1:]))
                    continue
                split = -e.block  # a reshape splitting the axis into (outer, split)
                if blk % split:
                    w.coarsen = max(w.coarsen, split // math.gcd(blk, split))
                    continue
                if off % split or st % split:
                    w.why("a reshape splits it off a block boundary")
                    continue
                stack.append((dst, off // split, blk // split, False, st // split, rep))
            for part, start, length in parts_of.get(cls, ()):
                hi = off + (rep - 1) * st + w.size * blk
                if start <= off and hi <= start + length:
                    stack.append((part, off - start, blk, False, st, rep))
                elif off < start + length and start < hi:
                    w.why("a split cuts across its channels")
        return w

    def grouped_consumer(self, w: _Walk, v: _Visit, cls: int, groups: int,
                         stack: list[_Visit]) -> None:
        """A grouped conv reads input i of every group through its weight's input
        index i: the channel must be the same positions in each group (a fold of the
        walk's root), which map onto one range of the weight's input axis."""
        ext = self.extent(v[0])
        _, off, blk, _, st, rep = v
        if ext is None or ext % groups:
            w.why(f"a grouped conv ({groups} groups) of a symbolic extent")
            return
        per = ext // groups
        if rep % groups == 0 and st * (rep // groups) == per:
            left = rep // groups
            if off + (left - 1) * st + w.size * blk <= per:
                stack.append((cls, off, blk, True, st if left > 1 else 0, left))
                return
        elif w.fold % groups:  # the root is not folded to this conv's groups yet
            w.refold = math.lcm(w.refold, groups)
            return
        w.why(f"a grouped conv ({groups} groups) reads its channels across groups")

    def run(self) -> list[ChannelGroup]:
        units = dict.fromkeys(self.roots, 1)
        folds = {r: self.fold_of.get(r, 1) for r in self.roots}
        for _ in range(8):
            walks: dict[int, _Walk] = {}
            for r in self.roots:
                w = self.walk(r, units[r], folds[r])
                while w is not None and (w.coarsen > 1 or w.refold > 1):
                    units[r] *= w.coarsen
                    folds[r] = math.lcm(folds[r], w.refold)
                    w = self.walk(r, units[r], folds[r])
                if w is not None:
                    walks[r] = w
            merged, changed = self.merge(walks, units)
            if not changed:
                break
        return self.groups(walks, merged)

    def merge(self, walks: dict[int, _Walk],
              units: dict[int, int]) -> tuple[dict[int, int], bool]:
        """Union the walks that cover the same range of a class, coarsening the finer
        one to the coarser block; returns root -> group leader, and whether a unit
        changed (the walks are then redone)."""
        leader = {r: r for r in walks}

        def find(r: int) -> int:
            while leader[r] != r:
                r = leader[r]
            return r

        spans: dict[int, list[tuple[int, int, int, int, int, int]]] = {}
        for r, w in walks.items():
            for cls, off, blk, _, st, rep in w.visits:
                hi = off + (rep - 1) * st + w.size * blk
                spans.setdefault(cls, []).append((off, hi, blk, r, st, rep))
        need: dict[int, int] = {}
        # (most classes: one walk reaches them, no pair to compare)
        for cls in sorted([c for c, got in spans.items() if len(got) > 1]):
            items_ = sorted(set(spans[cls]))
            for k, (lo, hi, blk, r, st, rep) in enumerate(items_):
                for lo2, hi2, blk2, r2, st2, rep2 in items_[k + 1:]:
                    if lo2 >= hi or r2 == r:
                        continue
                    if (lo, hi, st, rep) == (lo2, hi2, st2, rep2) and (
                            blk % blk2 == 0 or blk2 % blk == 0):
                        if blk != blk2:
                            fine = r if blk < blk2 else r2
                            need[fine] = math.lcm(need.get(fine, 1),
                                                  max(blk, blk2) // min(blk, blk2))
                        a, b = find(r), find(r2)
                        if a != b:
                            leader[max(a, b)] = min(a, b)
                    else:
                        for x in (r, r2):
                            walks[x].reasons.append(
                                "channel ranges of two groups overlap in "
                                + self.names(self.g.axis_of(self.classes[cls][0])[0]))
        for r, k in need.items():
            units[r] *= k
        return {r: find(r) for r in walks}, bool(need)

    def groups(self, walks: dict[int, _Walk], merged: dict[int, int]) -> list[ChannelGroup]:
        """A group per leader of merged walks: its size, whether it is exact and why
        not, whether it reaches the model's inputs or outputs; its members are made
        from the walks when asked for (see _Rows)."""
        g = self.g
        by_leader: dict[int, list[_Walk]] = {}
        for r in sorted(walks):
            by_leader.setdefault(merged[r], []).append(walks[r])
        node_leaf, base, blocked, root = g.node_leaf, g.base, g.blocked, g.parent
        # (a find is one step: see __init__)
        blocked_in: dict[int, list[int]] = {}
        for n in sorted(blocked):
            blocked_in.setdefault(root[n], []).append(n)
        io_classes: set[int] = set()
        for leaf in g.io_leaves:
            b = base[leaf]
            io_classes.update(root[b + i] for i in range(max(g.view.leaf_ndim[leaf], 0)))
        name = _lazy(self.names)
        letter = _lazy(self.letters) if self.letters is not None else None
        layouts = g.result.layouts
        out: list[ChannelGroup] = []
        for lead in sorted(by_leader):
            ws = by_leader[lead]
            size = ws[0].size
            reasons: list[str] = []
            io = has_consumer = False
            for w in ws:
                for why in w.reasons:
                    if why not in reasons:
                        reasons.append(why)
                if w.size != size:
                    reasons.append(f"tied producers differ in size ({w.size} and {size})")
                for cls, _, _, consumer, _, _ in w.visits:
                    io = io or cls in io_classes
                    if consumer:
                        has_consumer = True
                        continue
                    for n in blocked_in.get(cls, ()):
                        leaf = node_leaf[n]
                        for reason in blocked[n]:
                            text = f"{reason} ({self.names(leaf)} axis {n - base[leaf]})"
                            if text not in reasons:
                                reasons.append(text)
            if not has_consumer and not io:
                reasons.append("its channels reach no consumer weight")
            group = _new(ChannelGroup)  # (as _member: without the frozen __init__)
            group.__dict__.update(id=len(out), size=size,
                                  _members=_Rows(ws, self, name, letter, layouts),
                                  exact=not reasons, reasons=tuple(reasons), touches_io=io)
            out.append(group)
        return out

    def rows(self, ws: list[_Walk]) -> list[_Row]:
        """The member rows of a group's walks: every axis of every class they visit,
        once per range."""
        g, view = self.g, self.g.view
        producer_set = set(g.producers)
        classes, node_leaf, base = self.classes, g.node_leaf, g.base
        io_leaves = g.io_leaves
        values, leaf_value = view.values, view.leaf_value
        seen: set[tuple[int, int, int, int, int, int]] = set()
        rows: list[_Row] = []
        for w in ws:
            for cls, off, blk, consumer, st, rep in w.visits:
                for n in classes[cls]:
                    leaf = node_leaf[n]
                    axis = n - base[leaf]
                    key = (leaf, axis, off, blk, st, rep)
                    if key in seen:
                        continue
                    seen.add(key)
                    kind = values[leaf_value[leaf]].kind
                    if kind == "binding" or leaf in io_leaves:
                        role = ACTIVATION  # (a model input is an activation)
                    elif consumer:
                        role = CONSUMER
                    elif n in producer_set:
                        role = PRODUCER
                    else:
                        role = FOLLOW
                    rows.append((leaf, axis, role, kind, off, blk, st, rep))
        return rows


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


_new = object.__new__


def _member(tensor: str, axis: int, role: str, kind: str, offset: int, block: int,
            letter: str, leaf: int, stride: int, repeat: int) -> Member:
    """Member(...) without the frozen dataclass's __init__ (a setattr per field: the
    walk makes a member per axis it reaches, and this is a third of the cost)."""
    m = _new(Member)
    m.__dict__.update(_tensor=tensor, axis=axis, role=role, kind=kind, offset=offset,
                      block=block, _letter=letter, leaf=leaf, stride=stride, repeat=repeat)
    return m


def build_groups(g: ChannelGraph, names: Any,
                 letters: _Letters | None = None) -> list[ChannelGroup]:
    """The groups of a channel graph (see _Grouper), in order of their first class;
    the letters from `letters` (on first read), else from the graph's result."""
    return _Grouper(g, names, letters).run()


_ROLE_ORDER = {PRODUCER: 0, FOLLOW: 1, ACTIVATION: 2, CONSUMER: 3}


class ChannelGroups(list[ChannelGroup]):
    """What channel_groups returns: the groups, holding the channel graph they were
    found on, which `prune(mod, selection, groups=...)` reuses instead of walking the
    module again (drop the list to free it)."""

    graph: ChannelGraph | None = None


def channel_groups(mod: tvm.IRModule, entry_name: str = "main",
                   rules: RuleSet | None = None) -> ChannelGroups:
    """The channel groups of `entry_name` (see the module docstring), in program order
    of their first producer; member names and letters are found on first read."""
    with paused_gc():
        # (the ties come from the ops: the letters are inferred when first read)
        g = channel_graph(mod, entry_name, rules, layouts=False)
        out = ChannelGroups(build_groups(g, _Namer(mod, g.result, entry_name),
                                         _Letters(g.view, g.result.rules)))
        out.graph = g
        return out


def quant_axes(mod: tvm.IRModule, entry_name: str = "main",
               rules: RuleSet | None = None) -> QuantAxes:
    """Per-channel quantization axes: each producer weight's output-channel axis and
    each activation's channel axis (the axis in a producer's class), by tensor name."""
    with paused_gc():
        return _quant_axes(channel_graph(mod, entry_name, rules, layouts=False), mod,
                           entry_name)


def _quant_axes(g: ChannelGraph, mod: tvm.IRModule, entry_name: str) -> QuantAxes:
    names = _Namer(mod, g.result, entry_name)
    view = g.view
    weights: dict[str, int] = {}
    for n in sorted(g.producers):
        leaf, axis = g.axis_of(n)
        if _kind(view, leaf) != "binding":
            weights[names(leaf)] = axis
    roots = {g.find(n) for n in g.producers}
    acts: dict[str, int] = {}
    for n in range(len(g.parent)):
        leaf, axis = g.axis_of(n)
        if _kind(view, leaf) == "binding" and g.find(n) in roots and leaf not in g.weight_views:
            acts.setdefault(names(leaf), axis)
    return QuantAxes(weights, acts)

"""The channel ties of a module: one walk over the inference result's call sites.

Every axis of every tensor is a node; each op ties the nodes its semantics keep equal
(an elementwise op ties every axis of its input to the same axis of its output, a
broadcast add ties right-aligned axes of equal extent, a permute ties by its axes, a
reshape by its running products, a batch norm ties its parameters to the data's
channel axis, ...). A union-find over these ties gives the classes a letter stands
for: one logical axis, wherever it flows. What an op does not tie is recorded beside:
producer weight axes, consumer attachments (a weight's input-channel axis), derived
edges (concat ranges, flatten blocks, head splits) and blocked nodes (an op mixes the
values along the axis). `channels.py` makes groups of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import tvm

from .dsl.ruleset import RuleSet
from .engine import InferenceResult, Provenance, infer_layouts
from .ffi import items
from .graph import CallSite, DependencyView, Struct, build_view
from .layout import Dim, reshape_groups
from .util import paused_gc

_CONV_OPS = frozenset(("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d",
                       "relax.nn.conv1d_transpose", "relax.nn.conv2d_transpose",
                       "relax.nn.conv3d_transpose"))
_POOL_OPS = frozenset((
    "relax.nn.max_pool1d", "relax.nn.max_pool2d", "relax.nn.max_pool3d",
    "relax.nn.avg_pool1d", "relax.nn.avg_pool2d", "relax.nn.avg_pool3d",
    "relax.nn.adaptive_avg_pool1d", "relax.nn.adaptive_avg_pool2d",
    "relax.nn.adaptive_avg_pool3d"))
_REDUCE_OPS = frozenset(("relax.sum", "relax.mean", "relax.max", "relax.min", "relax.prod",
                         "relax.std", "relax.variance"))
_UNARY_OPS = frozenset(("relax.clip", "relax.nn.dropout", "relax.nn.prelu"))
_WEIGHT_VIEWS = frozenset(("relax.permute_dims", "relax.astype", "relax.wrap_param"))
_SHAPE_OPS = frozenset(("relax.split", "relax.reshape", "relax.broadcast_to", "relax.full",
                        "relax.zeros", "relax.ones"))


class _Edge(NamedTuple):
    """Index i of src's axis is the range [offset + i * block, ... + block) of dst's,
    repeated `repeat` times `stride` apart (an inner axis merged by a reshape: channel
    c of an NHWC flatten is every C-th input); a negative block -k: dst's index is
    src's index // k (a reshape splitting src)."""

    src: int  # node
    dst: int
    offset: int
    block: int
    stride: int = 0
    repeat: int = 1


@dataclass
class ChannelGraph:
    """The ties found on a view: union-find classes of axis nodes and what links them.
    Built once per channel_groups call; `prune` reuses it to find what carries shapes."""

    result: InferenceResult
    base: list[int]  # leaf -> its first node
    node_leaf: list[int]
    parent: list[int]
    producers: dict[int, int] = field(default_factory=dict)  # weight node -> site
    consumers: list[tuple[int, int, int]] = field(default_factory=list)  # act, weight, site
    derived: list[_Edge] = field(default_factory=list)
    blocked: dict[int, list[str]] = field(default_factory=dict)
    weight_leaves: set[int] = field(default_factory=set)  # weight params
    weight_views: set[int] = field(default_factory=set)  # bindings viewing a weight
    io_leaves: set[int] = field(default_factory=set)
    depthwise: dict[int, int] = field(default_factory=dict)  # weight leaf -> site
    # the sites (indices in the view's site table) whose attributes or arguments
    # carry extents (splits, reshapes, broadcasts, tensor creation) and the depthwise
    # convs (by value id): what a prune may have to edit besides types
    shape_sites: list[int] = field(default_factory=list)
    depthwise_sites: dict[int, int] = field(default_factory=dict)
    # class -> a known extent (noted once a tensor of unknown shape needs it)
    class_ext: dict[int, Dim] = field(default_factory=dict)
    # class of an axis merged by a reshape -> the nodes (and extents) merged into it
    composite: dict[int, list[tuple[int, Dim | None]]] = field(default_factory=dict)
    # a split's input axis -> (the part's axis, its start, its length) per part
    parts: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    # weight axis of a grouped conv (1 < groups < channels) -> groups: its channels
    # are pruned at the same positions in every group, so the group count stays
    folds: dict[int, int] = field(default_factory=dict)
    # the module's functions the ties were found on, by name (held: their handles
    # cannot be reused while the graph lives)
    funcs: tuple[tuple[str, Any], ...] = ()
    # whether every node's parent is its root (see flatten), and the roots as an array
    flat: bool = False
    root_array: np.ndarray | None = None
    _classes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # the native walk's: each node's static extent, each leaf's kind (0 a binding,
    # 1 a constant, 2 a parameter); None from the Python walk
    node_ext: np.ndarray | None = None
    leaf_kind: np.ndarray | None = None
    # per value: leaf, kind, handle; the tuple bindings (prune_cut.py's, made once)
    value_arrays: tuple[np.ndarray, np.ndarray, np.ndarray, list[int]] | None = None
    _arrays: tuple[np.ndarray, np.ndarray] | None = None

    def built_on(self, mod: tvm.IRModule, entry_name: str, rules: RuleSet | None) -> bool:
        """Whether the ties were found on `mod` as it is now (the same function
        objects), for `entry_name` and `rules` (None: any)."""
        if self.view.entry != entry_name or (rules is not None
                                             and rules is not self.result.rules):
            return False
        now = mod.functions_items()
        return len(now) == len(self.funcs) and all(
            gv.name_hint == name and f.same_as(old)
            for (gv, f), (name, old) in zip(now, self.funcs, strict=True))

    @property
    def view(self) -> DependencyView:
        """The dependency view the ties were found on."""
        return self.result.view

    def node(self, leaf: int, axis: int) -> int:
        """The node of `axis` of `leaf` (negative axes count from the end)."""
        if axis < 0:
            axis += self.result.view.leaf_ndim[leaf]
        return self.base[leaf] + axis

    def find(self, n: int) -> int:
        """The representative of n's class (with path halving)."""
        parent = self.parent
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def roots(self) -> list[int]:
        """The representative of every node, in one pass: a node's parent is smaller
        than the node (the smaller representative wins), so its root is known first."""
        if self.flat:
            return self.parent[:]
        roots = self.parent[:]
        for n, p in enumerate(roots):
            roots[n] = roots[p] if p <= n else self.find(n)
        return roots

    def flatten(self) -> list[int]:
        """Point every node at its root, so a find is one step (after the walk: no
        union comes later); the roots."""
        if not self.flat:
            self.parent = self.roots()
            self.flat = True
        return self.parent

    def class_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nodes sorted by class (each class's ascending), and per class root where
        its nodes start there and how many (one sort of the roots, made on the first
        call, after the walk)."""
        got = self._classes
        if got is None:
            roots = self.root_array
            if roots is None:
                roots = self.root_array = np.array(self.flatten(), dtype=np.int64)
            counts = np.bincount(roots, minlength=len(roots))
            got = self._classes = (np.argsort(roots, kind="stable"),
                                   np.cumsum(counts) - counts, counts)
        return got

    def leaf_array(self) -> np.ndarray:
        """node_leaf as an array."""
        return self._leaf_base()[0]

    def base_array(self) -> np.ndarray:
        """base as an array."""
        return self._leaf_base()[1]

    def _leaf_base(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (np.array(self.node_leaf, dtype=np.int64),
                            np.array(self.base, dtype=np.int64))
        return self._arrays

    def members(self, cls: int) -> list[int]:
        """The nodes of class `cls` (its root), ascending."""
        order, starts, counts = self.class_arrays()
        start = int(starts[cls])
        out: list[int] = order[start:start + int(counts[cls])].tolist()
        return out

    def union(self, a: int, b: int) -> None:
        """Tie two nodes (the smaller representative wins, so classes are deterministic);
        the class keeps a known extent and a merged axis's factors."""
        parent = self.parent  # (find inline: a walk ties every axis of every site)
        while parent[a] != a:
            parent[a] = a = parent[parent[a]]
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a != b:
            ra, rb = (a, b) if a < b else (b, a)
            parent[rb] = ra
            class_ext = self.class_ext
            if class_ext and rb in class_ext:
                ext = class_ext.pop(rb)
                if ext is not None:
                    class_ext.setdefault(ra, ext)
            composite = self.composite
            if rb in composite:
                comp = composite.pop(rb)
                mine = composite.setdefault(ra, comp)
                if mine is not comp and [e for _, e in mine] == [e for _, e in comp]:
                    # two merged axes tied (a batched matmul's batch axis): so are
                    # the axes merged into them
                    for (x, _), (y, _) in zip(mine, comp, strict=True):
                        self.union(x, y)

    def block(self, n: int, reason: str) -> None:
        """Mark a node as mixed by an op (a group containing it is not exact)."""
        got = self.blocked.setdefault(n, [])
        if reason not in got:
            got.append(reason)

    def axis_of(self, n: int) -> tuple[int, int]:
        """(leaf, axis) of a node."""
        leaf = self.node_leaf[n]
        return leaf, n - self.base[leaf]


_MISS = object()


def _product(extents: Sequence[Dim | None]) -> int:
    """The product of static extents (1 for none), 0 when one is not static (as
    _Builder.static_size)."""
    size = 1
    for e in extents:
        if not isinstance(e, int):
            return 0
        size *= e
    return size


def _leaves(struct: Struct) -> Iterator[int]:
    if isinstance(struct, int):
        yield struct
    elif isinstance(struct, tuple):
        for s in struct:
            yield from _leaves(s)


def _ints(x: Any) -> list[int] | None:
    if x is None:
        return None
    if isinstance(x, int | tvm.prim.IntImm):
        return [int(x)]
    return [int(v) for v in items(x)]


def _extent(view: DependencyView, leaf: int, axis: int) -> Dim | None:
    shape = view.shape(leaf)
    if shape is None or not 0 <= axis < len(shape):
        return None
    return shape[axis]


def mark_io(view: DependencyView, num_input: int | None) -> tuple[set[int], set[int]]:
    """The leaves of the model inputs and of the weights: entry params before
    `num_input` are inputs, the rest weights (all inputs without it)."""
    params = [view.values[vid] for vid in view.others]
    params = [v for v in params if v.kind == "param" and v.func == view.entry]
    n_input = len(params) if num_input is None else num_input
    io: set[int] = set()
    weights: set[int] = set()
    for k, v in enumerate(params):
        (io if k < n_input else weights).update(_leaves(v.struct))
    return io, weights


def op_family(rules: RuleSet, op: str) -> str | None:
    """The family of the op's rule (None without one)."""
    rule = rules.lookup(op) if op and not op.startswith(("plugin:", "@", "%")) else None
    return rule.family if rule is not None else None


class _Builder:
    """Walks the view's call sites once and records the ties of each op."""

    def __init__(self, result: InferenceResult, rules: RuleSet) -> None:
        view = result.view
        nds = np.maximum(np.array(view.leaf_ndim, dtype=np.int64), 0)
        ends = np.cumsum(nds)
        base: list[int] = (ends - nds).tolist()
        node_leaf: list[int] = np.repeat(np.arange(len(nds)), nds).tolist()
        self.g = ChannelGraph(result, base, node_leaf, list(range(len(node_leaf))))
        self.view = view
        self.rules = rules
        self.num_input: int | None = None
        self.noted = bytearray(len(view.leaf_ndim))  # leaves whose extents are noted
        self.eager = False  # (see note_ext)
        self.families: dict[str, str | None] = {}  # op -> its rule's family
        # (source, destination) static shapes -> their reshape's groups: models
        # repeat the same reshapes layer after layer
        self.plans: dict[tuple[tuple[Dim, ...], tuple[Dim, ...]], Any] = {}
        self.site_of: dict[int, CallSite] = {}  # leaf -> the site computing it
        self.pos = 0  # the index of the site being walked (see ext)
        # op -> the method recording its ties (see handler)
        self.handlers: dict[str, Callable[[CallSite, list[int | None], list[int]], None]] = {}
        site_of = self.site_of
        for site in view.sites:
            if site.call is not None:
                out = site.out
                if type(out) is int:  # (most sites: no generator)
                    if out not in site_of:
                        site_of[out] = site
                else:
                    for leaf in _leaves(out):
                        site_of.setdefault(leaf, site)

    # -- helpers
    def ndim(self, leaf: int) -> int:
        return self.view.leaf_ndim[leaf]

    def ext(self, leaf: int, axis: int) -> Dim | None:
        """The axis's extent; for a tensor of unknown shape, the extent known for its
        class (ties are recorded in program order, so its producer's are already in)."""
        shape = self.view.shape(leaf)
        if shape is not None and 0 <= axis < len(shape):
            return shape[axis]
        if 0 <= axis < self.ndim(leaf):
            if not self.eager:
                # the first tensor of unknown shape: note the extents of the tensors
                # seen so far, and of the others as they come (see note_ext)
                self.eager = True
                noted = self.noted
                for site in self.view.sites[:self.pos + 1]:
                    if site.op != "<link>":
                        for leaf in _leaves(site.out):
                            noted[leaf] = 1
                        for a in site.args:
                            if type(a) is int:
                                noted[a] = 1
                for seen, flag in enumerate(noted):
                    if flag:
                        self.note_shape(seen)
            return self.g.class_ext.get(self.g.find(self.g.node(leaf, axis)))
        return None

    def static_size(self, leaf: int, axes: Sequence[int]) -> int:
        """The product of the extents of `axes` (1 for none), 0 when one is not static."""
        return _product([self.ext(leaf, a) for a in axes])

    def note_ext(self, leaf: int) -> None:
        """Note a tensor's extents for its classes, once: the classes keep them through
        later unions, for the tensors of unknown shape tied to them. Only a module
        with such a tensor needs them, so until `ext` meets one they are not read (it
        then notes those of the sites walked so far)."""
        if self.noted[leaf]:
            return
        self.noted[leaf] = 1
        if self.eager:
            self.note_shape(leaf)

    def note_shape(self, leaf: int) -> None:
        shape = self.view.shape(leaf)
        if shape is not None:
            g = self.g
            find, class_ext, n = g.find, g.class_ext, g.base[leaf]
            for e in shape:
                class_ext.setdefault(find(n), e)
                n += 1

    def tie_all(self, a: int, b: int) -> None:
        """Tie every axis of a to the same axis of b (same rank)."""
        nd = self.ndim(a)
        if nd == self.ndim(b) and nd > 0:
            union, base = self.g.union, self.g.base
            na, nb = base[a], base[b]
            for i in range(nd):
                union(na + i, nb + i)

    def block_all(self, leaf: int, reason: str) -> None:
        for i in range(max(self.ndim(leaf), 0)):
            self.g.block(self.g.node(leaf, i), reason)

    def is_weight(self, leaf: int, depth: int = 0) -> bool:
        """A constant, a weight parameter, or a permute/astype of one."""
        v = self.view.values[self.view.leaf_value[leaf]]
        if v.kind == "const":
            return True
        if v.kind == "param":
            return leaf in self.g.weight_leaves
        site = self.site_of.get(leaf)
        if site is None or site.op not in _WEIGHT_VIEWS or depth > 8:
            return False
        arg = site.args[0] if site.args else None
        return isinstance(arg, int) and self.is_weight(arg, depth + 1)

    def base_node(self, leaf: int, axis: int) -> int:
        """The node of the constant or parameter that a weight view's axis reads."""
        for _ in range(8):
            site = self.site_of.get(leaf)
            if site is None or site.op not in _WEIGHT_VIEWS or not isinstance(
                    site.args[0] if site.args else None, int):
                break
            src = site.args[0]
            assert isinstance(src, int)
            if site.op == "relax.permute_dims":
                axes = _ints(site.attrs.axes) or list(reversed(range(self.ndim(src))))
                axis = axes[axis]
            leaf = src
        return self.g.node(leaf, axis)

    def tie_broadcast(self, out: int, args: list[int]) -> None:
        """Right-aligned axes of equal extent are one axis (extent-1 axes broadcast)."""
        on = self.ndim(out)
        shape, ext = self.view.shape, self.ext
        union, base = self.g.union, self.g.base
        so = shape(out)
        if so is not None and len(so) != on:
            so = None
        for a in args:
            an = self.ndim(a)
            sa = shape(a)
            if sa is not None and len(sa) != an:
                sa = None
            for i in range(an):
                j = i + on - an
                if j < 0:
                    continue
                # (the shapes read once: ext reads them per axis)
                e = sa[i] if sa is not None else ext(a, i)
                eo = so[j] if so is not None else ext(out, j)
                # (an operand's extent other than 1 is the output's: broadcasting
                # keeps it, so an output of unknown shape still ties)
                if e == 1 or e is None or (eo is not None and e != eo):
                    continue
                union(base[a] + i, base[out] + j)

    # -- the walk
    def run(self) -> ChannelGraph:
        """Record the ties of every call site and link."""
        view, g, noted = self.view, self.g, self.noted
        self._mark_io()
        handlers, handler = self.handlers, self.handler
        for pos, site in enumerate(view.sites):
            op = site.op
            if op == "<link>":
                src = site.args[0] if site.args else None
                for a, b in zip(_leaves(src), _leaves(site.out), strict=False):
                    self.tie_all(a, b)
                continue
            self.pos = pos
            out = site.out
            outs = [out] if type(out) is int else list(_leaves(out))
            args = [a if type(a) is int else None for a in site.args]
            if self.eager:
                for leaf in outs:
                    if not noted[leaf]:
                        self.note_ext(leaf)
                for arg in args:
                    if arg is not None and not noted[arg]:
                        self.note_ext(arg)
            if op in _SHAPE_OPS:
                g.shape_sites.append(pos)
            fn = handlers.get(op)
            if fn is None:
                fn = handlers[op] = handler(op)
            try:
                fn(site, args, outs)
            except (AttributeError, TypeError, ValueError, IndexError):
                self.opaque(site, "op " + site.op + " with attributes not understood")
        self.check_composites()
        for leaf, site in self.site_of.items():
            if site.op in _WEIGHT_VIEWS and self.is_weight(leaf):
                g.weight_views.add(leaf)
        return g

    def family(self, op: str) -> str | None:
        """The family of the op's rule (None without one)."""
        if op in self.families:
            return self.families[op]
        family = self.families[op] = op_family(self.rules, op)
        return family

    def handler(self, op: str) -> Callable[[CallSite, list[int | None], list[int]], None]:
        """The method recording the ties of `op` (`site`, which finds it by comparing the
        op with each case, for the ops without a shortcut)."""
        family = self.family(op)
        if (family in ("elementwise", "like") or op in _UNARY_OPS) and op != "relax.nn.prelu":
            return self.elementwise
        if family == "binary" or op == "relax.where":
            return self.binary
        if op in _CONV_OPS:
            return self.conv
        if op == "relax.matmul":
            return self.matmul
        if op == "relax.permute_dims":
            return self.permute
        if op in ("relax.reshape", "relax.flatten", "relax.nn.batch_flatten"):
            return self.reshape_site
        return self.site

    def elementwise(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        """Every axis of the first argument is the same axis of each output."""
        if args and args[0] is not None:
            for o in outs:
                self.tie_all(args[0], o)

    def binary(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        """Broadcast ties (see tie_broadcast)."""
        if len(outs) == 1:
            self.tie_broadcast(outs[0], [a for a in args if a is not None])

    def permute(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        """Output axis j is input axis axes[j]."""
        data, out = args[0], outs[0]
        if data is None:
            return
        axes = _ints(site.attrs.axes) or list(reversed(range(self.ndim(data))))
        union, base = self.g.union, self.g.base
        nd, bd, bo = self.ndim(data), base[data], base[out]
        for j, i in enumerate(axes):
            union(bd + i % nd, bo + j)

    def reshape_site(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        """See reshape."""
        self.reshape(site, args[0], outs[0])

    def check_composites(self) -> None:
        """A merged axis that reaches anything but ties (a weight, a concat or flatten,
        a model output, a mixing op) mixes the axes merged into it: block the inner
        ones (the outermost one already maps onto blocks of it)."""
        g = self.g
        risky = {g.find(a) for a, _, _ in g.consumers}
        risky.update(g.find(e.src) for e in g.derived)
        risky.update(g.find(n) for n in g.blocked)
        for leaf in g.io_leaves:
            risky.update(g.find(g.node(leaf, i)) for i in range(max(self.ndim(leaf), 0)))
        for root, comp in g.composite.items():
            if g.find(root) in risky:
                name = self.view.values[self.view.leaf_value[g.axis_of(root)[0]]].name
                sizes = [e for _, e in comp if isinstance(e, int)]
                for k, (n, _) in enumerate(comp[1:], 1):
                    if len(sizes) != len(comp):
                        g.block(n, f"a reshape merges it as an inner axis (into {name})")
                        continue
                    # index c of inner axis k is a block of the axes after it, once in
                    # every step of the axes before it (NHWC flatten: every C-th input)
                    inner = math.prod(sizes[k + 1:])
                    g.derived.append(_Edge(n, root, 0, inner, inner * sizes[k],
                                           math.prod(sizes[:k])))

    def _mark_io(self) -> None:
        self.g.io_leaves, self.g.weight_leaves = mark_io(self.view, self.num_input)

    def opaque(self, site: CallSite, reason: str) -> None:
        for a in site.args:
            for leaf in _leaves(a):
                self.block_all(leaf, reason)
        for leaf in _leaves(site.out):
            self.block_all(leaf, reason)

    def site(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        op, attrs, g = site.op, site.attrs, self.g
        family = self.family(op)
        if family in ("elementwise", "like") or op in _UNARY_OPS:
            if args and args[0] is not None:
                for o in outs:
                    self.tie_all(args[0], o)
                if op == "relax.nn.prelu" and len(args) > 1 and args[1] is not None:
                    # alpha: one slope per channel, a follow parameter
                    axis = int(attrs.axis) % self.ndim(args[0])
                    g.union(g.node(args[1], 0), g.node(args[0], axis))
            return
        if family == "binary" or op == "relax.where":
            if len(outs) == 1:
                self.tie_broadcast(outs[0], [a for a in args if a is not None])
            return
        if op in _CONV_OPS:
            self.conv(site, args, outs)
            return
        if op == "relax.matmul":
            self.matmul(site, args, outs)
            return
        if op in ("relax.reshape", "relax.flatten", "relax.nn.batch_flatten"):
            self.reshape(site, args[0], outs[0])
            return
        if op == "relax.nn.batch_norm":
            data = args[0]
            if data is None:
                return
            axis = int(attrs.axis) % self.ndim(data)
            self.tie_all(data, outs[0])
            for p in args[1:]:
                if p is not None:
                    g.union(g.node(p, 0), g.node(data, axis))
            for o in outs[1:]:
                g.union(g.node(o, 0), g.node(data, axis))
            return
        if op in ("relax.nn.layer_norm", "relax.nn.rms_norm", "relax.nn.group_norm",
                  "relax.nn.instance_norm"):
            self.norm(site, args, outs)
            return
        if op in ("relax.nn.softmax", "relax.nn.log_softmax"):
            data = args[0]
            if data is None:
                return
            self.tie_all(data, outs[0])
            axis = int(attrs.axis) % self.ndim(data)
            g.block(g.node(data, axis), f"{op.split('.')[-1]} over the axis")
            return
        if op in _REDUCE_OPS:
            self.reduce(site, args[0], outs[0])
            return
        if op in _POOL_OPS or op in ("relax.image.resize2d", "relax.image.resize3d"):
            data = args[0]
            if data is None:
                return
            lay = str(attrs.layout)
            out_lay = str(getattr(attrs, "out_layout", lay) or lay)
            for i, ch in enumerate(lay):
                if ch in "NC" and ch in out_lay:
                    g.union(g.node(data, i), g.node(outs[0], out_lay.index(ch)))
                else:
                    g.block(g.node(data, i), f"{op.split('.')[-1]} mixes along the axis")
            return
        if op == "relax.concat":
            self.concat(site, outs[0])
            return
        if op == "relax.split":
            self.split(site, args[0], outs)
            return
        if op == "relax.call_tir":
            fn = site.call.args[0] if site.call is not None and site.call.args else None
            name = getattr(fn, "name_hint", "") or "a PrimFunc"
            self.opaque(site, f"call_tir of {name}: a TIR function's loops are not read, "
                              "so which output channel reads which input is unknown")
            return
        if op in ("relax.expand_dims", "relax.squeeze"):
            self.squeeze_like(site, args[0], outs[0])
            return
        if op in ("relax.strided_slice", "relax.nn.pad"):
            data = args[0]
            if data is None:
                return
            for i in range(self.ndim(data)):
                if self.ext(data, i) == self.ext(outs[0], i):
                    g.union(g.node(data, i), g.node(outs[0], i))
                else:
                    g.block(g.node(data, i), f"{op.split('.')[-1]} changes the axis")
            return
        if op == "relax.broadcast_to":
            if args[0] is not None:
                self.tie_broadcast(outs[0], [args[0]])
            return
        if op == "relax.take":
            self.take(site, args, outs)
            return
        if family == "create":
            return  # new tensors: their axes are tied by their users, if at all
        self.opaque(site, f"op {op or 'call'} has no channel rule")

    # -- op families
    def conv(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        g, attrs = self.g, site.attrs
        data, weight = args[0], args[1]
        out = outs[0]
        dl, kl = str(attrs.data_layout), str(attrs.kernel_layout)
        ol = str(attrs.out_layout or dl)
        groups = int(attrs.groups)
        if data is None or weight is None or "C" not in dl or "O" not in kl:
            self.opaque(site, "conv without channel axes")
            return
        base = g.base
        bd, bw, bo = base[data], base[weight], base[out]
        if "N" in dl and "N" in ol:
            g.union(bd + dl.index("N"), bo + ol.index("N"))
        d_c, w_o, w_i, o_c = dl.index("C"), kl.index("O"), kl.index("I"), ol.index("C")
        for i, ch in enumerate(dl):
            if ch not in "NC":
                g.block(bd + i, "a conv window slides over the axis")
        if not self.is_weight(weight):
            self.opaque(site, "conv with a computed weight")
            return
        c_in = self.ext(data, d_c)
        c_out = self.ext(weight, w_o)
        if groups == 1:
            g.union(bw + w_o, bo + o_c)
            g.producers[bw + w_o] = site.value_id
            g.consumers.append((bd + d_c, bw + w_i, site.value_id))
        elif groups == c_in and groups == c_out and not site.op.endswith("_transpose"):
            # depthwise: channel c in, channel c out, weight row c
            g.union(bd + d_c, bo + o_c)
            g.union(bw + w_o, bo + o_c)
            g.depthwise[weight] = self.view.leaf_value[out]
            g.depthwise_sites[site.value_id] = self.pos
        elif (not site.op.endswith("_transpose") and isinstance(c_in, int)
              and isinstance(c_out, int) and c_in % groups == 0 and c_out % groups == 0):
            # grouped conv: as Torch-Pruning, prune the same positions in every group
            # (weight I index i reads input i of each group), the group count stays
            g.union(bw + w_o, bo + o_c)
            g.producers[bw + w_o] = site.value_id
            g.consumers.append((bd + d_c, bw + w_i, site.value_id))
            g.folds[bw + w_o] = groups
            g.folds[bw + w_i] = groups
        else:
            reason = f"grouped conv ({groups} groups) ties channels in groups"
            g.block(bd + d_c, reason)
            g.block(bo + o_c, reason)
            g.union(bw + w_o, bo + o_c)
            g.producers[bw + w_o] = site.value_id

    def matmul(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        g = self.g
        lhs, rhs, out = args[0], args[1], outs[0]
        if lhs is None or rhs is None:
            self.opaque(site, "matmul of non-tensors")
            return
        ln, rn, on = self.ndim(lhs), self.ndim(rhs), self.ndim(out)
        if ln < 2 or rn < 2:
            self.opaque(site, "matmul with a vector operand")
            return
        # batch axes broadcast, right-aligned before the two matrix axes
        for a, an in ((lhs, ln), (rhs, rn)):
            for i in range(an - 2):
                j = i + (on - 2) - (an - 2)
                e = self.ext(a, i)
                if j >= 0 and e != 1 and e == self.ext(out, j):
                    g.union(g.node(a, i), g.node(out, j))
        g.union(g.node(lhs, ln - 2), g.node(out, on - 2))
        if self.is_weight(rhs):
            g.union(g.node(rhs, rn - 1), g.node(out, on - 1))
            g.producers[self.base_node(rhs, rn - 1)] = site.value_id
            g.consumers.append((g.node(lhs, ln - 1), g.node(rhs, rn - 2), site.value_id))
            return
        g.union(g.node(rhs, rn - 1), g.node(out, on - 1))
        reason = "contracted by a matmul of two activations"
        g.block(g.node(lhs, ln - 1), reason)
        g.block(g.node(rhs, rn - 2), reason)

    def reshape(self, site: CallSite, data: int | None, out: int) -> None:
        g = self.g
        if data is None:
            return
        src, dst = self.view.shape(data), self.view.shape(out)
        if src is None:
            known = [self.ext(data, i) for i in range(self.ndim(data))]
            src = None if None in known else [k for k in known if k is not None]
        plan = None
        if src is not None and dst is not None:
            key = (tuple(src), tuple(dst))
            plan = self.plans.get(key, _MISS)
            if plan is _MISS:
                try:
                    plan = reshape_groups(*key)
                except ValueError:
                    plan = None
                # (static shapes only: a symbolic extent's == builds an expression)
                if all(type(e) is int for e in key[0]) and all(
                        type(e) is int for e in key[1]):
                    self.plans[key] = plan
        if plan is None or src is None or dst is None:
            self.opaque(site, "reshape whose sizes do not line up")
            return
        union, base = g.union, g.base
        for s_axes, d_axes in plan:
            if len(s_axes) == 1 and len(d_axes) == 1:
                union(base[data] + s_axes[0], base[out] + d_axes[0])
                continue
            # (src and dst hold the extents ext gives: the shapes, or those known)
            if len(d_axes) == 1:
                # merged axes: the outermost maps onto blocks of the merged axis; the
                # inner ones are remembered, in case a later reshape splits them back
                inner = _product([src[a] for a in s_axes[1:]])
                bd = base[data]
                if inner:
                    g.derived.append(_Edge(bd + s_axes[0], base[out] + d_axes[0], 0, inner))
                else:
                    g.block(bd + s_axes[0], "reshape merges it with a symbolic axis")
                g.composite.setdefault(g.find(base[out] + d_axes[0]), [
                    (bd + a, src[a]) for a in s_axes])
                continue
            if len(s_axes) == 1:
                comp = g.composite.get(g.find(base[data] + s_axes[0]))
                if comp is not None and [e for _, e in comp] == [dst[d] for d in d_axes]:
                    # the split undoes an earlier merge: the same axes come back
                    bo = base[out]
                    for (n, _), d in zip(comp, d_axes, strict=True):
                        union(n, bo + d)
                    continue
                # one axis split into (outer, inner...): the outer axis counts blocks
                # of the inner size (attention heads of head_dim channels)
                inner = self.static_size(out, d_axes[1:])
                if inner:
                    g.derived.append(_Edge(g.node(data, s_axes[0]), g.node(out, d_axes[0]),
                                           0, -inner))
                    continue
            reason = "reshape splits it into several axes"
            for a in s_axes:
                g.block(g.node(data, a), reason)
            for d in d_axes:
                g.block(g.node(out, d), reason)

    def norm(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        g, op = self.g, site.op
        data = args[0]
        if data is None:
            return
        nd = self.ndim(data)
        self.tie_all(data, outs[0])
        name = op.split(".")[-1]
        if op in ("relax.nn.group_norm", "relax.nn.instance_norm"):
            ch = int(site.attrs.channel_axis) % nd
            for p in args[1:]:
                if p is not None:
                    g.union(g.node(p, 0), g.node(data, ch))
            if op == "relax.nn.group_norm" and int(site.attrs.num_groups) != 1:
                g.block(g.node(data, ch), "group_norm normalises over groups of the axis")
            return
        axes = [a % nd for a in (_ints(site.attrs.axes) or [])]
        for a in axes:
            g.block(g.node(data, a), f"{name} normalises over the axis")
        for p in args[1:]:
            if p is None:
                continue
            pn = self.ndim(p)
            for k, a in enumerate(axes[-pn:] if pn <= len(axes) else axes):
                g.union(g.node(p, k), g.node(data, a))

    def reduce(self, site: CallSite, data: int | None, out: int) -> None:
        g = self.g
        if data is None:
            return
        nd = self.ndim(data)
        axes = _ints(site.attrs.axis)
        red = set(range(nd)) if axes is None else {a % nd for a in axes}
        keep = bool(site.attrs.keepdims)
        j = 0
        name = site.op.split(".")[-1]
        for i in range(nd):
            if i in red:
                g.block(g.node(data, i), f"{name} over the axis")
                j += 1 if keep else 0
                continue
            g.union(g.node(data, i), g.node(out, j))
            j += 1

    def concat(self, site: CallSite, out: int) -> None:
        g = self.g
        fields = [x for x in _leaves(site.args[0] if site.args else None)]
        nd = self.ndim(out)
        axis = int(site.attrs.axis) % nd
        offset = 0
        for f in fields:
            for i in range(nd):
                if i != axis:
                    g.union(g.node(f, i), g.node(out, i))
            e = self.ext(f, axis)
            if not isinstance(e, int):
                g.block(g.node(out, axis), "concat of a symbolic extent")
                return
            g.derived.append(_Edge(g.node(f, axis), g.node(out, axis), offset, 1))
            offset += e

    def split(self, site: CallSite, data: int | None, outs: list[int]) -> None:
        """Each part is a range of the input's axis: an edge from the part back to its
        range (a walk from the part reaches the producer), and the parts recorded on
        the input (a walk reaching the input goes on into the part its range is in)."""
        g = self.g
        if data is None:
            return
        nd = self.ndim(data)
        axis = int(site.attrs.axis) % nd
        lengths = [self.ext(o, axis) for o in outs]
        if not all(isinstance(e, int) for e in lengths):
            self.opaque(site, "split of a symbolic extent")
            return
        start = 0
        for o, length in zip(outs, lengths, strict=True):
            assert isinstance(length, int)
            for i in range(nd):
                if i != axis:
                    g.union(g.node(data, i), g.node(o, i))
            g.derived.append(_Edge(g.node(o, axis), g.node(data, axis), start, 1))
            g.parts.setdefault(g.node(data, axis), []).append((g.node(o, axis), start, length))
            start += length

    def squeeze_like(self, site: CallSite, data: int | None, out: int) -> None:
        g = self.g
        if data is None:
            return
        src = [i for i in range(self.ndim(data)) if self.ext(data, i) != 1]
        dst = [i for i in range(self.ndim(out)) if self.ext(out, i) != 1]
        if len(src) == len(dst):
            for i, j in zip(src, dst, strict=True):
                g.union(g.node(data, i), g.node(out, j))
        else:
            self.opaque(site, f"{site.op} with unmatched axes")

    def take(self, site: CallSite, args: list[int | None], outs: list[int]) -> None:
        g = self.g
        data, idx, out = args[0], args[1], outs[0]
        if data is None or idx is None:
            return
        nd = self.ndim(data)
        axis = int(site.attrs.axis) % nd if site.attrs.axis is not None else 0
        k = self.ndim(idx)
        for i in range(nd):
            if i == axis:
                g.block(g.node(data, i), "take gathers along the axis")
                continue
            j = i if i < axis else i + k - 1
            g.union(g.node(data, i), g.node(out, j))
        for i in range(k):
            g.union(g.node(idx, i), g.node(out, axis + i))
        if self.is_weight(data) and axis == 0 and nd == 2:
            g.producers[g.node(data, 1)] = site.value_id  # an embedding table's feature axis


def _without_layouts(mod: tvm.IRModule, rules: RuleSet | None,
                     entry_name: str) -> InferenceResult:
    """A result with the dependency view and no layouts (the engine not run)."""
    from .library import default_rules

    view = build_view(mod, entry_name)
    n = len(view.leaf_ndim)
    return InferenceResult(view, rules if rules is not None else default_rules(), [None] * n,
                           Provenance([None] * n, [-1] * n, [None] * n, []))


def channel_graph(mod: tvm.IRModule, entry_name: str = "main",
                  rules: RuleSet | None = None, layouts: bool = True) -> ChannelGraph:
    """Infer layouts and record the channel ties of every call site of `entry_name`.

    The ties come from the ops, not from the letters: `layouts=False` skips the
    inference (members then carry no letter), for a prune or quant axes."""
    if layouts:
        result = infer_layouts(mod, rules, entry_name)
    else:
        with paused_gc():
            result = _without_layouts(mod, rules, entry_name)
    from .channel_native import native_graph

    func = mod[entry_name]
    num_input = int(func.attrs["num_input"]) if func.attrs is not None and \
        "num_input" in func.attrs else None
    rules_ = result.rules
    families: dict[str, str | None] = {}
    g = native_graph(result, lambda op: families.setdefault(op, op_family(rules_, op)),
                     num_input)
    if g is None:
        b = _Builder(result, rules_)
        b.num_input = num_input
        g = b.run()
    g.funcs = tuple((gv.name_hint, f) for gv, f in mod.functions_items())
    ret = func.body.body
    vid = result.view.value_id(ret)
    if vid is not None:
        g.io_leaves.update(_leaves(result.view.values[vid].struct))
    return g

"""The channel ties walk in C++ (native/ties.cc): its inputs packed, its output unpacked.

`native_graph` gives the ChannelGraph that channel_graph.py's `_Builder.run` gives, field
for field, when every tensor of the view has a static shape, every call site is of an op
ties.cc knows and the native walk is available; else None, and the caller walks the
module in Python. The inputs are int64 arrays made mostly without a Python loop over
the sites (the view's columns are read as arrays): per leaf its rank, kind, flags,
shape and value; per site its op's code, value, result, arguments, decoded attributes;
the attributes it needs (conv layouts and groups, permute axes, reshape plans) are
decoded once per distinct attributes (the native read's structural hashes) or shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tvm_ffi

from . import native as _native
from .channel_graph import (
    _CONV_OPS,
    _POOL_OPS,
    _REDUCE_OPS,
    _SHAPE_OPS,
    _UNARY_OPS,
    _WEIGHT_VIEWS,
    ChannelGraph,
    _Edge,
    _ints,
    mark_io,
)
from .engine import InferenceResult
from .ffi import items
from .graph import DependencyView
from .layout import Dim, reshape_groups

# site codes (ties.cc)
(_ELEMENTWISE, _BINARY, _CONV, _CONV_T, _MATMUL, _PERMUTE, _RESHAPE, _NOTHING, _LINK,
 _OPAQUE) = range(1, 11)
_WEIGHT_VIEW, _IS_PERMUTE = 1, 2  # site flags
_CONST, _PARAM = 1, 2  # leaf kinds (0: a binding)
_IO, _WEIGHT = 1, 2  # leaf flags
# the ops _Builder.site handles by name: ties.cc does not know them
_NAMED = frozenset((
    "relax.nn.batch_norm", "relax.nn.layer_norm", "relax.nn.rms_norm", "relax.nn.group_norm",
    "relax.nn.instance_norm", "relax.nn.softmax", "relax.nn.log_softmax", *_REDUCE_OPS,
    *_POOL_OPS, "relax.image.resize2d", "relax.image.resize3d", "relax.concat",
    "relax.split", "relax.call_tir", "relax.expand_dims", "relax.squeeze",
    "relax.strided_slice", "relax.nn.pad", "relax.broadcast_to", "relax.take"))

fallbacks: list[str] = []
"""Why the last modules (up to 100) were walked in Python though the native walk was
available: what the tests check to know the native walk really ran."""


def _code(op: str, family: str | None) -> int:
    """The ties.cc code of an op (0: not one it knows), as _Builder.handler and
    _Builder.site dispatch it."""
    if op == "<link>":
        return _LINK
    if (family in ("elementwise", "like") or op in _UNARY_OPS) and op != "relax.nn.prelu":
        return _ELEMENTWISE
    if family == "binary" or op == "relax.where":
        return _BINARY
    if op in _CONV_OPS:
        return _CONV_T if op.endswith("_transpose") else _CONV
    if op == "relax.matmul":
        return _MATMUL
    if op == "relax.permute_dims":
        return _PERMUTE
    if op in ("relax.reshape", "relax.flatten", "relax.nn.batch_flatten"):
        return _RESHAPE
    if family in ("elementwise", "like") or op in _UNARY_OPS or op in _NAMED:
        return 0  # (prelu, with its alpha; the named ops)
    return _NOTHING if family == "create" else _OPAQUE


def _conv_attrs(attrs: Any) -> list[int]:
    dl, kl = str(attrs.data_layout), str(attrs.kernel_layout)
    ol = str(attrs.out_layout or dl)
    out = [int(attrs.groups)]
    for lay in (dl, kl, ol):
        out.append(len(lay))
        out.extend(map(ord, lay))
    return out


def _permute_attrs(attrs: Any) -> list[int]:
    axes = _ints(attrs.axes)
    return [len(axes), *axes] if axes else [-1]


def _plan(src: list[Any], dst: list[Any]) -> list[int]:
    try:
        plan = reshape_groups(tuple(src), tuple(dst))
    except ValueError:
        plan = None
    if plan is None:
        return [-1]
    out = [len(plan)]
    for s_axes, d_axes in plan:
        out.extend((len(s_axes), *s_axes, len(d_axes), *d_axes))
    return out


class _Pack:
    """The inputs of ties.cc for one view (see the module docstring)."""

    def __init__(self, view: DependencyView, family: Callable[[str], str | None],
                 num_input: int | None) -> None:
        self.view = view
        self.family = family
        self.io, self.weights = mark_io(view, num_input)
        self.reasons: list[str] = []  # the opaque sites' reasons (ids -1 - index)
        self.attr_words: list[int] = []

    def leaves(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per leaf (ndim, kind, flags, shape offset, value id), and the extents."""
        view = self.view
        n = len(view.leaf_ndim)
        ids = view.static_shape_ids()
        if len(ids) != n or (n and ids.min() < 0):
            return None  # (a tensor of symbolic or unknown shape, or read in Python)
        table = view.static_shapes
        lens = np.fromiter(map(len, table), dtype=np.int64, count=len(table))
        starts = np.cumsum(lens) - lens
        ndim = np.array(view.leaf_ndim, dtype=np.int64)
        if not np.array_equal(lens[ids], ndim):
            return None
        dims = np.fromiter((e for dims in table for e in dims), dtype=np.int64,
                           count=int(lens.sum()))
        leaf_value = np.frombuffer(view.leaf_value, dtype=np.int32).astype(np.int64)
        kinds = np.zeros(len(view.values), dtype=np.int64)
        values = view.values
        for vid in view.others:  # (values of calls are bindings)
            kind = values[vid].kind
            if kind != "binding":
                kinds[vid] = _CONST if kind == "const" else _PARAM
        flags = np.zeros(n, dtype=np.int64)
        flags[list(self.io)] |= _IO
        flags[list(self.weights)] |= _WEIGHT
        out = np.empty((n, 5), dtype=np.int64)
        out[:, 0] = ndim
        out[:, 1] = kinds[leaf_value]
        out[:, 2] = flags
        out[:, 3] = starts[ids]
        out[:, 4] = leaf_value
        self.ids, self.table = ids, table
        return out, dims

    def sites(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per site (code, value id, result, arguments at, attributes at, reason, flags),
        and the arguments (their count, then each leaf or -1)."""
        sites = self.view.sites
        n = len(sites)
        names = list(dict.fromkeys(sites.op))
        index = {o: k for k, o in enumerate(names)}
        op_of = np.fromiter(map(index.__getitem__, sites.op), dtype=np.int64, count=n)
        codes = np.array([_code(o, self.family(o)) for o in names], dtype=np.int64)
        if not codes.all():
            _native.note_refusal(fallbacks, "ops the native walk does not know: " + ", ".join(
                o for o, c in zip(names, codes, strict=True) if not c))
            return None
        reasons = np.zeros(len(names), dtype=np.int64)
        for k, o in enumerate(names):
            if codes[k] == _OPAQUE:
                reasons[k] = -1 - len(self.reasons)
                self.reasons.append(f"op {o or 'call'} has no channel rule")
        flags = np.array([(_WEIGHT_VIEW if o in _WEIGHT_VIEWS else 0)
                          | (_IS_PERMUTE if o == "relax.permute_dims" else 0) for o in names],
                         dtype=np.int64)
        out = np.zeros((n, 7), dtype=np.int64)
        out[:, 0] = codes[op_of]
        out[:, 1] = sites.value_id
        try:
            out[:, 2] = np.array(sites.out, dtype=np.int64)
        except (TypeError, ValueError):
            outs = sites.out
            if any(type(o) is tuple for o in outs):
                _native.note_refusal(fallbacks, "a call of a tuple result")
                return None
            out[:, 2] = [-1 if o is None else int(o) for o in outs]  # type: ignore[arg-type]
        out[:, 5] = reasons[op_of]
        out[:, 6] = flags[op_of]
        args = self.args(out)
        if args is None:
            return None
        self.site_codes, self.op_of, self.names = out[:, 0], op_of, names
        self.attrs(out, args)
        return out, args

    def args(self, out: np.ndarray) -> np.ndarray | None:
        """The arguments: the native read's flat array, then those of the sites added
        by value; sets each site's `at`."""
        sites = self.view.sites
        flat = sites.flat_args().astype(np.int64)
        at = sites.arg_starts()
        extra: list[int] = []
        base = len(flat)
        for i in np.flatnonzero(at < 0).tolist():
            args = sites.args_of(i)
            leaves = [-1 if a is None else a for a in args if not isinstance(a, tuple)]
            if len(leaves) < len(args):
                _native.note_refusal(fallbacks, "a call with a tuple argument")
                return None
            at[i] = base + len(extra)
            extra.append(len(args))
            extra.extend(leaves)
        out[:, 3] = at
        return np.concatenate([flat, np.array(extra, dtype=np.int64)]) if extra else flat

    def attrs(self, out: np.ndarray, args: np.ndarray) -> None:
        """Set each conv's, permute's and reshape's `attrs at` (their decoded attributes
        or plans, in `attr_words`)."""
        sites = self.view.sites
        codes = out[:, 0]
        memo: dict[tuple[Any, ...], int] = {}
        words = self.attr_words

        def put(key: tuple[Any, ...], decode: Callable[..., list[int]], *what: Any) -> int:
            """The entry of `decode(*what)` in `words`, made once per key."""
            got = memo.get(key)
            if got is None:
                got = memo[key] = len(words)
                words.extend(decode(*what))
            return got

        # conv and permute: by the attributes' structural hash as the native read
        # found it (per site for the others)
        entries, info = sites.attr_entries(), sites.attr_info()
        for code, decode in ((_CONV, _conv_attrs), (_CONV_T, _conv_attrs),
                             (_PERMUTE, _permute_attrs)):
            rows = np.flatnonzero(codes == code)
            if not len(rows):
                continue
            at = entries[rows]
            ok = at >= 0
            keyed = np.zeros((len(rows), 3), dtype=np.int64)
            keyed[:, 0] = self.op_of[rows]
            keyed[ok, 1:] = info[at[ok], 1:]
            hashed = ok & (keyed[:, 1] >= 0)
            if hashed.any():
                first, inverse = _distinct(keyed[hashed])
                made = np.array([put(("h", *keyed[hashed][k].tolist()), decode,
                                     sites.attrs_of(int(rows[hashed][k]))) for k in first],
                                dtype=np.int64)
                out[rows[hashed], 4] = made[inverse]
            for i in rows[~hashed].tolist():
                out[i, 4] = put(("site", i), decode, sites.attrs_of(i))
        rows = np.flatnonzero(codes == _RESHAPE)
        if len(rows):
            counts = args[out[rows, 3]]
            data = np.where(counts > 0, args[np.minimum(out[rows, 3] + 1, len(args) - 1)], -1)
            made_leaf = out[rows, 2]
            ok = (data >= 0) & (made_leaf >= 0)
            rows, data, made_leaf = rows[ok], data[ok], made_leaf[ok]
            # (by the static shapes' ids: models repeat the same reshapes)
            pairs = np.stack([self.ids[data], self.ids[made_leaf]], axis=1).astype(np.int64)
            if len(pairs):
                first, inverse = _distinct(pairs)
                made = np.array([put(("r", sd, so), _plan, self.table[sd], self.table[so])
                                 for sd, so in pairs[first].tolist()], dtype=np.int64)
                out[rows, 4] = made[inverse]


def native_graph(result: InferenceResult, family: Callable[[str], str | None],
                 num_input: int | None) -> ChannelGraph | None:
    """The ties of `result`'s view found by ties.cc (see the module docstring); None
    when it does not take the module (the Python walk then finds them)."""
    native = _native.get()
    if native is None:
        return None
    view = result.view
    pack = _Pack(view, family, num_input)
    try:  # (the view's columns are read as graph.py keeps them: see _Pack)
        got = pack.leaves()
        if got is None:
            _native.note_refusal(fallbacks, "a tensor without a static shape")
            return None
        leaves, dims = got
        got = pack.sites()
    except (AttributeError, TypeError, ValueError, IndexError) as err:
        _native.note_refusal(fallbacks, f"the view's columns not as expected: {err!r}")
        return None
    if got is None:
        return None
    sites, args = got
    try:
        # (the arrays shared, not copied: DLPack)
        out = native.channel_ties(*map(shared_words, (
            leaves, dims, sites, args, np.array(pack.attr_words, dtype=np.int64))))
    except Exception as err:  # a site it does not take: the Python walk does it
        _native.note_refusal(fallbacks, _native.refusal(err))
        return None
    parts = items(out)
    (roots, producers, consumers, derived, blocked, depthwise, depthwise_sites, folds,
     views) = (np.frombuffer(p, dtype=np.int64).tolist() for k, p in enumerate(parts[:10])
               if k != 5)
    reasons = [str(r) for r in items(parts[10])]
    nds = leaves[:, 0]
    base = np.cumsum(nds) - nds
    node_leaf = np.repeat(np.arange(len(nds)), nds)
    g = ChannelGraph(result, base.tolist(), node_leaf.tolist(), roots)
    g.flat, g.root_array = True, np.frombuffer(parts[0], dtype=np.int64)
    g._arrays = (node_leaf, base)
    g.node_ext = dims[np.repeat(leaves[:, 3] - base, nds) + np.arange(len(node_leaf))]
    g.leaf_kind = leaves[:, 1].copy()
    g.producers = dict(zip(producers[0::2], producers[1::2], strict=True))
    g.consumers = list(zip(consumers[0::3], consumers[1::3], consumers[2::3], strict=True))
    g.derived = list(map(_Edge, derived[0::6], derived[1::6], derived[2::6], derived[3::6],
                         derived[4::6], derived[5::6]))
    g.blocked = _blocked(blocked, reasons, pack.reasons)
    g.composite = _composite(parts[5])
    g.depthwise = dict(zip(depthwise[0::2], depthwise[1::2], strict=True))
    g.depthwise_sites = dict(zip(depthwise_sites[0::2], depthwise_sites[1::2], strict=True))
    g.folds = dict(zip(folds[0::2], folds[1::2], strict=True))
    g.weight_views = set(views)
    g.io_leaves, g.weight_leaves = pack.io, pack.weights
    shape_ops = np.array([o in _SHAPE_OPS for o in pack.names], dtype=bool)
    g.shape_sites = np.flatnonzero(shape_ops[pack.op_of]).tolist()
    return g


def shared_words(arr: np.ndarray) -> Any:
    """`arr` as a compact int64 TVM tensor sharing numpy's memory (DLPack): how the
    native walks take their int64 inputs (ties.cc, prune.cc), without a copy."""
    return tvm_ffi.from_dlpack(np.ascontiguousarray(arr, dtype=np.int64))


def _composite(words: bytes) -> dict[int, list[tuple[int, Dim | None]]]:
    """The merged axes ties.cc gives (per class: root, n, then n (node, extent)
    pairs) as ChannelGraph.composite, in order."""
    flat = np.frombuffer(words, dtype=np.int64)
    if not len(flat):
        return {}
    width = 2 + 2 * int(flat[1])
    if len(flat) % width == 0 and (flat[1::width] == flat[1]).all():
        # (the common case: every merge of the same number of axes, as rows)
        return {r[0]: list(zip(r[2::2], r[3::2], strict=True))
                for r in flat.reshape(-1, width).tolist()}
    out: dict[int, list[tuple[int, Dim | None]]] = {}
    words_ = flat.tolist()
    k = 0
    while k < len(words_):
        n = words_[k + 1]
        pairs = words_[k + 2:k + 2 + 2 * n]
        out[words_[k]] = list(zip(pairs[0::2], pairs[1::2], strict=True))
        k += 2 + 2 * n
    return out


def _distinct(rows: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The first row of each distinct value of the int64 rows, and each row's value's
    number (np.unique(axis=0) compares rows as bytes, several times slower)."""
    order = np.lexsort(rows.T[::-1])
    ranked = rows[order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    inverse = np.empty(len(rows), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    first: list[int] = order[new].tolist()
    return first, inverse


def _blocked(flat: list[int], mine: list[str], given: list[str]) -> dict[int, list[str]]:
    """The blocked nodes and their reasons (ties.cc's ids >= 0, the caller's < 0)."""
    if flat[1::3] == [1] * (len(flat) // 3) and len(flat) % 3 == 0:
        # (one reason per node, the common case: [node, 1, reason] each)
        texts = [mine[r] if r >= 0 else given[-1 - r] for r in dict.fromkeys(flat[2::3])]
        text_of = dict(zip(dict.fromkeys(flat[2::3]), texts, strict=True))
        return {n: [text_of[r]] for n, r in zip(flat[0::3], flat[2::3], strict=True)}
    out: dict[int, list[str]] = {}
    k = 0
    while k < len(flat):
        n = flat[k + 1]
        out[flat[k]] = [mine[r] if r >= 0 else given[-1 - r] for r in flat[k + 2:k + 2 + n]]
        k += 2 + n
    return out

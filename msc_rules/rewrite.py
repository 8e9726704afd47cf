"""Rebuild Relax functions with new spans: the one place (besides the passes) that writes IR.

IR nodes are immutable, so a marker on a Var means a new Var; every use is remapped.
Nodes are rebuilt directly (no re-normalisation, types carried over), which keeps the
cost near the price of constructing the nodes and leaves the module structurally equal.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import relax
from tvm.ir import _ffi_api as _ir_ffi
from tvm.relax import _ffi_api as _relax_ffi

from . import native as _native
from .errors import IRError
from .ffi import items
from .graph import NativeValue as _NativeValue
from .graph import Value as _Value
from .span import with_markers

# The FFI constructors directly: the Python wrappers' __init__ re-import and re-check
# their arguments on every call, which costs several times the construction itself.
_MAKE_CALL = _ir_ffi.Call
_MAKE_VAR = _ir_ffi.Var
_MAKE_DATAFLOW_VAR = _relax_ffi.DataflowVar
_MAKE_BINDING = _relax_ffi.VarBinding
_MAKE_CONST = _ir_ffi.GenericConst

Records = Mapping[int, tuple[Any, list[Any]]]
"""`DependencyView.block_records`: per block handle, the block and its bindings as read."""
Markers = tuple[tuple[str, str], ...]
"""Markers to write on one node, as (key, value) pairs in writing order."""
Var = tvm.ir.expr.Var
Call = tvm.ir.expr.Call
Tuple = tvm.ir.expr.Tuple
TupleGetItem = tvm.ir.expr.TupleGetItem
Constant = tvm.ir.expr.GenericConst
_DataflowVar = relax.DataflowVar
_Op = tvm.ir.Op
_VarBinding = relax.VarBinding
_ShapeExpr = relax.ShapeExpr


_TY_SETTER = next(
    f.setter for f in tvm.ir.expr.Expr.__tvm_ffi_type_info__.fields if f.name == "ty"
)


def _with_type(new: Any, old: Any) -> Any:
    """Give a freshly built node (SeqExpr, If) the type of the node it replaces.

    Their constructors leave the type empty and only normalisation would fill it; the
    node is ours alone, so setting the field does not touch shared IR.
    """
    _TY_SETTER(new, old.ty)
    return new


@dataclass
class SpanEdits:
    """Markers to write: on Vars (params, binding vars) and on other exprs.

    Keyed by the node's handle (`__chandle__()`): Python wrappers of one IR node are
    fresh objects on every access, and hashing them by handle avoids TVM's slow
    `__eq__` on every dictionary hit.
    """

    vars: dict[int, Markers] = field(default_factory=dict)
    values: dict[int, Markers] = field(default_factory=dict)
    records: Records | None = None
    """`DependencyView.block_records` of a view of the module to rewrite: the rebuild
    reuses what the view read of each binding instead of reading it again."""
    leaf_markers: list[Markers | None] | None = None
    """With `records`: markers per leaf (tensor) of that view. A call binding's var and
    call take those of its leaf (a list index instead of two handle lookups, and no pass
    over the values to make them); None falls back to the dicts."""
    struct_markers: Callable[[Any], Markers | None] | None = None
    """With `leaf_markers`: the markers of a call binding whose value is a tuple."""

    def add_var(self, var: Any, key: str, value: str) -> None:
        """Write marker `key` on a param or binding var."""
        if value:
            h = var.__chandle__()
            self.vars[h] = marked(self.vars.get(h), key, value)

    def add_value(self, expr: Any, key: str, value: str) -> None:
        """Write marker `key` on a bound value or constant."""
        if value:
            h = expr.__chandle__()
            self.values[h] = marked(self.values.get(h), key, value)


_INTERNED: dict[Markers, Markers] = {}


def marked(old: Markers | None, key: str, value: str) -> Markers:
    """`old` with `key` set to `value`, interned: a module has few distinct marker sets
    ("Layout=NCHW", ...), so sharing one tuple per set keeps memory per binding small."""
    pairs = ((key, value),) if not old else (
        *((k, v) for k, v in old if k != key), (key, value))
    got = _INTERNED.get(pairs)
    if got is None:
        got = pairs
        if len(_INTERNED) < 100_000:
            _INTERNED[pairs] = pairs
    return got


class _Rebuilder:
    def __init__(self, edits: SpanEdits, release: bool = False) -> None:
        self.release = release
        self.records = edits.records or {}
        self.leaf_markers = edits.leaf_markers if edits.records else None
        self.struct_markers = edits.struct_markers
        self.var_edits = edits.vars
        self.value_edits = edits.values
        self.remap: dict[int, Any] = {}
        self.memo: dict[int, Any] = {}
        self.bare: dict[Markers, Any] = {}

    def span(self, old: Any, markers: Markers) -> Any:
        """`old` (a node's span) with `markers` written; nodes without a span share one
        per marker set."""
        if old is None:
            got = self.bare.get(markers)
            if got is None:
                got = self.bare[markers] = with_markers(None, markers)
            return got
        return with_markers(old, markers)

    def var_def(self, v: Any, markers: Markers | None = None, ty: Any = None) -> Any:
        h = v.__chandle__()
        if markers is None:
            markers = self.var_edits.get(h)
        if not markers:
            return v
        make = _MAKE_DATAFLOW_VAR if type(v) is _DataflowVar else _MAKE_VAR
        old = v.span
        span = (self.bare.get(markers) if old is None else None) or self.span(old, markers)
        nv = make(v.name, v.ty if ty is None else ty, span)
        self.remap[h] = nv
        return nv

    def expr(self, e: Any) -> Any:
        # exact types first: the isinstance tests below go through ABCMeta (~0.3 us each)
        cls = type(e)
        if cls is _DataflowVar or cls is Var:
            return self.remap.get(e.__chandle__(), e)
        if cls is Call:
            return self.call(e)
        if cls is _ShapeExpr:  # reshape's shape argument, say
            return self.shape_expr(e)
        if cls is not Constant and isinstance(e, Var):
            return self.remap.get(e.__chandle__(), e)
        if cls is Constant:
            h = e.__chandle__()
            got = self.memo.get(h)
            if got is None:
                markers = self.value_edits.get(h)
                got = _MAKE_CONST(e.value, e.ty, with_markers(e.span, markers)) if markers else e
                self.memo[h] = got
            return got
        if isinstance(e, Tuple):
            old_fields = items(e.fields)
            fields = [self.expr(f) for f in old_fields]
            markers = self.value_edits.get(e.__chandle__())
            if not markers and all(a is b for a, b in zip(fields, old_fields)):
                return e
            return Tuple(fields, with_markers(e.span, markers or ()))
        if isinstance(e, TupleGetItem):
            tv = self.expr(e.tuple_value)
            markers = self.value_edits.get(e.__chandle__())
            if not markers and tv.same_as(e.tuple_value):
                return e
            return TupleGetItem(tv, e.index, with_markers(e.span, markers or ()))
        if isinstance(e, relax.SeqExpr):
            return self.seq(e)
        if isinstance(e, relax.If):
            return _with_type(relax.If(self.expr(e.cond), self.expr(e.true_branch),
                                       self.expr(e.false_branch), e.span), e)
        if isinstance(e, relax.Function):
            return self.function(e)
        if isinstance(e, relax.ShapeExpr):
            return self.shape_expr(e)
        return e

    def shape_expr(self, e: Any) -> Any:
        markers = self.value_edits.get(e.__chandle__())
        return relax.ShapeExpr(e.values, with_markers(e.span, markers)) if markers else e

    def call(self, e: Any, old_args: list[Any] | None = None,
             markers: Markers | None = None, old_op: Any = None) -> Any:
        if old_args is None:
            old_args = items(e.args)
        remap, memo = self.remap, self.memo
        args = []
        for a in old_args:
            cls = type(a)
            # the common arguments inline: vars and already rebuilt constants
            if cls is _DataflowVar or cls is Var:
                args.append(remap.get(a.__chandle__(), a))
            elif cls is Constant and (got := memo.get(a.__chandle__())) is not None:
                args.append(got)
            else:
                args.append(self.expr(a))
        if old_op is None:
            old_op = e.op
        op = old_op if type(old_op) is _Op or not isinstance(old_op, Var) else self.expr(old_op)
        if markers is None:
            markers = self.value_edits.get(e.__chandle__())
        if markers:
            old = e.span  # the common case, a node without a span, inline
            span = (self.bare.get(markers) if old is None else None) or self.span(old, markers)
        elif op is old_op and all(a is b for a, b in zip(args, old_args)):
            return e
        else:
            span = e.span
        return _MAKE_CALL(e.ty, op, args, e.attrs, e.ty_args, span)

    def seq(self, e: Any) -> Any:
        blocks = []
        leaf_markers, struct_markers = self.leaf_markers, self.struct_markers
        for block in items(e.blocks):
            h = block.__chandle__()
            done = self.memo.get(h)  # a block met twice is rebuilt once (and released once)
            if done is not None:
                blocks.append(done)
                continue
            bindings = []
            got = self.records.get(h)
            records = items(block.bindings) if got is None else got[1]
            release = self.release and got is not None
            for i, r in enumerate(records):
                if release:
                    # this record's last use: freed after this iteration, while its
                    # objects are still in cache (not all at once, cold, at the end)
                    records[i] = None
                # a record of the dependency view saves reading the binding again
                markers: Markers | None = None
                if type(r) is _Value or type(r) is _NativeValue:
                    b, var, value, args, op, ty = r.binding, r.expr, r.value, r.args, r.op, r.ty
                    if leaf_markers is not None and args is not None:  # a call binding
                        st = r.struct
                        if type(st) is int:
                            markers = leaf_markers[st]
                        elif st is not None and struct_markers is not None:
                            markers = struct_markers(st)
                else:
                    b = r
                    var, value, args, op, ty = b.var, b.value, None, None, None
                call = type(value) is Call
                value = self.call(value, args, markers, op) if call else self.expr(value)
                if type(b) is not _VarBinding and isinstance(b, relax.MatchCast):
                    bindings.append(
                        relax.MatchCast(self.var_def(var, markers, ty), value, b.ty, b.span))
                else:
                    bindings.append(_MAKE_BINDING(self.var_def(var, markers, ty), value, b.span))
            dataflow = isinstance(block, relax.DataflowBlock)
            cls = relax.DataflowBlock if dataflow else relax.BindingBlock
            blocks.append(cls(bindings, block.span))
            self.memo[h] = blocks[-1]
        return _with_type(relax.SeqExpr(blocks, self.expr(e.body), e.span), e)

    def function(self, f: Any) -> Any:
        params = [self.var_def(p) for p in items(f.params)]
        body = self.expr(f.body)
        return relax.Function(params, body, f.ret_ty, f.is_pure, f.attrs, f.span)


def rewrite_function(func: Any, edits: SpanEdits, release: bool = False) -> Any:
    """`func` rebuilt with the markers of `edits` written into spans (see rewrite_module
    for `release`)."""
    if not edits.vars and not edits.values and not edits.leaf_markers:
        return func
    return _Rebuilder(edits, release).function(func)


fallbacks: list[tuple[str, str]] = []
"""(function, reason) for every function the native rebuild handed back to Python (the
last 100): what the tests check to know the native path really ran."""


class _Flat:
    """The edits of one function as the native rebuild takes them: distinct marker
    sets, and (handle, set index) pairs for vars and for other nodes (a later pair for
    the same handle wins, as markers from `SpanEdits.leaf_markers` win over the dicts)."""

    __slots__ = ("set_of", "sets", "value_keys", "value_sets", "var_keys", "var_sets")

    def __init__(self) -> None:
        self.sets: list[Markers] = []
        self.set_of: dict[Markers, int] = {}
        self.var_keys: list[int] = []
        self.var_sets: list[int] = []
        self.value_keys: list[int] = []
        self.value_sets: list[int] = []

    def index(self, markers: Markers) -> int:
        got = self.set_of.get(markers)
        if got is None:
            got = self.set_of[markers] = len(self.sets)
            self.sets.append(markers)
        return got

    def add(self, keys: list[int], sets: list[int], entries: Mapping[int, Markers]) -> None:
        index = self.index
        keys.extend(entries)
        sets.extend([index(m) for m in entries.values()])

    def marker_text(self) -> str | None:
        """The marker sets as the native `rebuild` takes them (None when a marker holds
        one of the separator characters, or a set is empty: the Python rebuild takes
        those)."""
        sets = self.sets
        pair, join = "\x1f".join, "\x1e".join
        text = "\x1d".join([join(map(pair, m)) for m in sets])
        n_pairs = sum(map(len, sets))
        if (text.count("\x1f") != n_pairs or text.count("\x1e") != n_pairs - len(sets)
                or text.count("\x1d") != max(len(sets) - 1, 0) or not all(sets)):
            return None
        return text

    def edits(self) -> SpanEdits:
        """The same edits for the Python rebuild."""
        sets = self.sets
        return SpanEdits(vars={k: sets[i] for k, i in zip(self.var_keys, self.var_sets)},
                         values={k: sets[i] for k, i in zip(self.value_keys, self.value_sets)})


def _flatten(edits: Mapping[str, SpanEdits], release: bool) -> dict[str, _Flat]:
    """Every function's edits as flat (handle, marker set) pairs (see `_Flat`).

    Markers per leaf (`SpanEdits.leaf_markers`) become pairs on each call binding's var
    and call, in one pass over the shared records for all functions (`Value.top` says
    whose), releasing each record once read if `release`.
    """
    flat = {name: _Flat() for name in edits}
    for name, e in edits.items():
        f = flat[name]
        f.add(f.var_keys, f.var_sets, e.vars)
        f.add(f.value_keys, f.value_sets, e.values)
    walked: set[int] = set()
    for e in edits.values():
        records, leaf_markers = e.records, e.leaf_markers
        if not records or leaf_markers is None or id(records) in walked:
            continue
        walked.add(id(records))
        struct_markers = e.struct_markers
        for _block, recs in records.values():
            top: str | None = None
            into: _Flat | None = None
            for i, r in enumerate(recs):
                if release:
                    recs[i] = None
                cls = type(r)
                if cls is _NativeValue:  # (a call binding: it has args)
                    var_handle, call_handle = r.handles()
                elif cls is not _Value or r.args is None:
                    continue
                else:
                    var_handle, call_handle = r.expr.__chandle__(), r.value.__chandle__()
                st = r.struct
                if type(st) is int:
                    m = leaf_markers[st]
                elif st is not None and struct_markers is not None:
                    m = struct_markers(st)
                else:
                    m = None
                if not m:
                    continue
                if r.top is not top:  # (the bindings of a block share one function)
                    top = r.top
                    into = flat.get(top)
                    if into is not None:
                        set_of, index = into.set_of, into.index
                        var_keys, var_sets = into.var_keys.append, into.var_sets.append
                        value_keys, value_sets = into.value_keys.append, into.value_sets.append
                if into is None:
                    continue
                k = set_of.get(m)
                if k is None:
                    k = index(m)
                var_keys(var_handle)
                var_sets(k)
                value_keys(call_handle)
                value_sets(k)
    return flat


def combine(*maps: Mapping[str, SpanEdits], release: bool = False) -> dict[str, SpanEdits]:
    """One set of edits writing all of `maps`, each node's markers in the order of the
    maps: rewriting with it writes what rewriting with each map in turn would (a key
    set again replaces its marker in place). Markers per leaf become plain entries.
    `release` as for rewrite_module (the maps' records are emptied)."""
    out: dict[str, SpanEdits] = {}
    for edits in maps:
        layer: dict[str, tuple[dict[int, Markers], dict[int, Markers]]]
        if all(e.leaf_markers is None or not e.records for e in edits.values()):
            layer = {name: (e.vars, e.values) for name, e in edits.items()}
        else:  # within one map, a later entry replaces an earlier one
            layer = {}
            for name, f in _flatten(edits, release).items():
                get = f.sets.__getitem__
                layer[name] = (dict(zip(f.var_keys, map(get, f.var_sets))),
                               dict(zip(f.value_keys, map(get, f.value_sets))))
        for name, theirs in layer.items():
            target = out.get(name)
            if target is None:
                out[name] = SpanEdits(vars=dict(theirs[0]), values=dict(theirs[1]))
                continue
            for mine, entries in zip((target.vars, target.values), theirs):
                for h, m in entries.items():
                    old = mine.get(h)
                    mine[h] = m if old is None else _merged(old, m)
    return out


def _merged(old: Markers, new: Markers) -> Markers:
    """`old` with every marker of `new` written in turn, as writing both sets on a span
    one after the other would: a key of `old` keeps its place, a new key goes last."""
    if len(new) == 1 and all(k != new[0][0] for k, _ in old):
        return (*old, new[0])  # the common case: a new key appended (not interned:
        # these sets are mostly unique, names included)
    out = list(old)
    for k, v in new:
        at = next((i for i, (key, _) in enumerate(out) if key == k), None)
        if at is None:
            out.append((k, v))
        else:
            out[at] = (k, v)
    return tuple(out)


def _native_args(layers: list[_Flat]) -> tuple[bytes, bytes, bytes, bytes, str, bytes,
                                               bytes] | None:
    """The arguments of the native `rebuild` after the function, for the edits of one
    function in layers (None if a layer's markers cannot be passed: see marker_text).

    The layers' sets are concatenated (each layer's set indices shifted past the sets
    before it) and so are their pairs, with where each layer's pairs end: the rebuild
    writes a node's sets layer after layer."""
    texts: list[str] = []
    var_sets, value_sets = array("i"), array("i")
    var_ends, value_ends = array("i"), array("i")
    offset = 0
    for f in layers:
        if f.sets:
            text = f.marker_text()
            if text is None:
                return None
            texts.append(text)
        var_sets.extend([k + offset for k in f.var_sets] if offset else f.var_sets)
        value_sets.extend([k + offset for k in f.value_sets] if offset else f.value_sets)
        var_ends.append(len(var_sets))
        value_ends.append(len(value_sets))
        offset += len(f.sets)
    var_keys = array("q", [k for f in layers for k in f.var_keys])
    value_keys = array("q", [k for f in layers for k in f.value_keys])
    return (var_keys.tobytes(), var_sets.tobytes(), value_keys.tobytes(),
            value_sets.tobytes(), "\x1d".join(texts), var_ends.tobytes(),
            value_ends.tobytes())


def _rewrite_native(native: Any, mod: tvm.IRModule,
                    layers: Sequence[Mapping[str, SpanEdits]],
                    release: bool) -> dict[Any, Any]:
    """The rebuilt functions, by the native rebuild where it can (see rewrite_layers)."""
    funcs = {gv.name_hint: (gv, f) for gv, f in mod.functions.items()}
    flat = [_flatten(edits, release) for edits in layers]
    updates: dict[Any, Any] = {}
    for name in dict.fromkeys(n for f in flat for n in f):
        gv, func = funcs[name]
        mine = [f[name] for f in flat if name in f]
        if not any(f.var_keys or f.value_keys for f in mine):
            continue
        args = _native_args(mine)
        new = None
        if args is not None:
            try:
                new = native.rebuild(func, *args)
            except Exception as err:  # a node it does not know: this function goes to Python
                fallbacks.append((name, str(err).splitlines()[0] if str(err) else repr(err)))
                new = None
        if new is None:
            edits = combine(*({name: f.edits()} for f in mine))[name]
            try:
                new = _Rebuilder(edits).function(func)
            except RecursionError:
                raise IRError("module nests too deeply to rewrite", function=name) from None
        updates[gv] = new
    del fallbacks[:-100]
    return updates


def rewrite_module(mod: tvm.IRModule, edits: Mapping[str, SpanEdits],
                   release: bool = False) -> tvm.IRModule:
    """A copy of `mod` whose functions named in `edits` carry the new markers.

    `release=True` empties the edits' records as it goes (each binding's entry is set
    to None once rebuilt), for a caller that owns them and has dropped the view: the
    view's reads are then freed one by one while still in cache. The edits cannot be
    used again afterwards.

    The native rebuild (msc_rules/native) does the work when it is available
    (MSC_RULES_NATIVE); a function it cannot rebuild is rebuilt here, in Python, with
    the same markers.
    """
    return rewrite_layers(mod, [edits], release)


def rewrite_layers(mod: tvm.IRModule, layers: Sequence[Mapping[str, SpanEdits]],
                   release: bool = False) -> tvm.IRModule:
    """`mod` rewritten with each map of `layers` in turn, in one rebuild: what
    rewrite_module with `combine(*layers)` writes (`release` as there).

    The native rebuild takes the layers as they are and merges each node's markers
    itself; the Python one rebuilds with the combined edits.
    """
    layers = [edits for edits in layers if edits]
    if not layers:
        return mod
    native = _native.get()
    if native is not None:
        updates = _rewrite_native(native, mod, layers, release)
        return tvm.IRModule({gv: updates.get(gv, f) for gv, f in mod.functions.items()},
                            attrs=mod.attrs, global_infos=mod.global_infos)
    edits = layers[0] if len(layers) == 1 else combine(*layers, release=release)
    funcs = {gv.name_hint: (gv, f) for gv, f in mod.functions.items()}
    updates = {}
    for name, e in edits.items():
        gv, func = funcs[name]
        try:
            updates[gv] = rewrite_function(func, e, release)
        except RecursionError:
            # The rebuild recurses once per nesting level (local functions, If
            # branches) and needs more frames per level than the dependency view's walk,
            # so a module graph.py could still walk overflowed here and a bare
            # RecursionError escaped the pass (found by tests/test_odd_modules.py::
            # test_deeply_nested_local_functions_are_annotated_or_an_ir_error).
            raise IRError("module nests too deeply to rewrite", function=name) from None
    # global_infos (e.g. `vdevice`) must be carried over too: they used to be dropped,
    # so the result was not structurally equal to the input (found by
    # tests/test_odd_modules.py::test_module_attrs_and_global_infos_are_kept)
    new = tvm.IRModule({gv: updates.get(gv, f) for gv, f in mod.functions.items()},
                       attrs=mod.attrs, global_infos=mod.global_infos)
    return new

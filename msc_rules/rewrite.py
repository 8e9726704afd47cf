"""Rebuild Relax functions with new spans: the one place (besides the passes) that writes IR.

IR nodes are immutable, so a marker on a Var means a new Var; every use is remapped.
Nodes are rebuilt directly (no re-normalisation, types carried over), which keeps the
cost near the price of constructing the nodes and leaves the module structurally equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, overload

import numpy as np
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
Entries = tuple[dict[int, Markers], dict[int, Markers]]
"""Markers to write on vars and on other nodes, by handle (as `SpanEdits.vars`, `.values`)."""
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

    columns: list[MarkerColumn] = field(default_factory=list)
    """Markers as flat arrays (see MarkerColumn), written after the dicts."""

    def add_var(self, var: Any, key: str, value: str) -> None:
        """Write marker `key` on a param or binding var."""
        if value:
            h = var.__chandle__()
            self.vars[h] = _with_pair(self.vars.get(h), key, value)

    def add_value(self, expr: Any, key: str, value: str) -> None:
        """Write marker `key` on a bound value or constant."""
        if value:
            h = expr.__chandle__()
            self.values[h] = _with_pair(self.values.get(h), key, value)

    def add_column(self, key: str, texts: Sequence[str], vars: bytes = b"", values: bytes = b"",
                   share: bool = False) -> None:
        """Write marker `key` with `texts[i]` on var `vars[i]` and on node `values[i]`, in
        bulk (see MarkerColumn: handles as `handle_bytes` makes them): what add_var and
        add_value in a loop write, except that a node given a key again in a later column
        keeps that marker's place, as in a later layer."""
        for handles in (vars, values):
            if handles and len(handles) != 8 * len(texts):
                raise ValueError("a MarkerColumn needs one handle per text")
        self.columns.append(MarkerColumn(key, texts, vars, values, share))


def _with_pair(old: Markers | None, key: str, value: str) -> Markers:
    """`old` with `key` set to `value` (moved last), not interned: SpanEdits.add_* write
    names, unique by design, which interning only piled up in the table (and kept)."""
    if not old:
        return ((key, value),)
    return (*((k, v) for k, v in old if k != key), (key, value))


@dataclass
class MarkerColumn:
    """One marker key on many nodes, as flat arrays: node i gets marker `key` with value
    `texts[i]` ("" writes none), on var `vars[i]` and on node `values[i]` (handles,
    int64 in native order, as `array("q", ...).tobytes()` makes them; either may be
    empty).

    The native rebuild takes the arrays as they are (no Python object per entry);
    `share`: equal texts share one marker set and one span there (for a few distinct
    texts, like layouts; leave it off for unique ones, like names). A column is written
    after the dicts of its SpanEdits and after the columns before it, as a layer of its
    own: a key it sets again replaces that marker in place.
    """

    key: str
    texts: Sequence[str]
    vars: bytes = b""
    values: bytes = b""
    share: bool = False

    def entries(self) -> Entries:
        """The same markers as plain entries (vars, other nodes), for the Python rebuild."""
        by_text: dict[str, Markers] = {}
        key = self.key

        def markers(text: str) -> Markers:
            got = by_text.get(text)
            if got is None:
                got = by_text[text] = ((key, text),)
            return got

        out: Entries = ({}, {})
        for into, handles in zip(out, (self.vars, self.values)):
            if handles:
                for h, text in zip(memoryview(handles).cast("q"), self.texts):
                    if text:
                        into[h] = markers(text)
        return out


class JoinedTexts(Sequence[str]):
    """A MarkerColumn's texts joined by the separator the native rebuild takes, in one
    str: a column of many unique texts (names) costs one object, not one per node, and
    is handed on as it is; split only when asked."""

    __slots__ = ("_count", "text")

    def __init__(self, text: str, count: int) -> None:
        if text.count(_SEP) != max(count - 1, 0):
            raise ValueError("joined texts hold the separator or miscount")
        self.text = text
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        return list(self)[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.text.split(_SEP) if self._count else ())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def handle_bytes(handles: Iterable[int], count: int) -> bytes:
    """`count` node handles as int64 bytes in native order (MarkerColumn's arrays)."""
    return np.fromiter(handles, np.int64, count).tobytes()


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
    if edits.columns:
        plain = _plain(edits)
        edits = SpanEdits(plain.vars, plain.values, edits.records, edits.leaf_markers,
                          edits.struct_markers)
    if not edits.vars and not edits.values and not edits.leaf_markers:
        return func
    return _Rebuilder(edits, release).function(func)


fallbacks: list[tuple[str, str]] = []
"""(function, reason) for every function the native rebuild handed back to Python (the
last 100): what the tests check to know the native path really ran."""


def _records_entries(edits: Mapping[str, SpanEdits], release: bool) -> dict[str, Entries]:
    """The markers per leaf (`SpanEdits.leaf_markers`) of every function as plain
    entries on each call binding's var and call, in one pass over the records shared by
    all functions (`Value.top` says whose), releasing each record once read if `release`."""
    out: dict[str, Entries] = {}
    walked: set[int] = set()
    for e in edits.values():
        records, leaf_markers = e.records, e.leaf_markers
        if not records or leaf_markers is None or id(records) in walked:
            continue
        walked.add(id(records))
        struct_markers = e.struct_markers
        top: str | None = None
        into: Entries | None = None
        for _block, recs in records.values():
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
                    into = out.setdefault(top, ({}, {})) if top in edits else None
                if into is not None:
                    into[0][var_handle] = m
                    into[1][call_handle] = m
    return out


def _has_records(edits: Mapping[str, SpanEdits]) -> bool:
    return any(e.records and e.leaf_markers is not None for e in edits.values())


def _plain(e: SpanEdits, extra: Entries | None = None) -> SpanEdits:
    """`e` as plain entries: its dicts, then `extra` (its records' entries, see
    _records_entries: each wins over the dicts' for its node), then its columns (each
    merged as a layer of its own, see MarkerColumn)."""
    if not extra and not e.columns:
        return SpanEdits(vars=e.vars, values=e.values)
    out: Entries = (dict(e.vars), dict(e.values))
    if extra:
        out[0].update(extra[0])
        out[1].update(extra[1])
    for col in e.columns:
        for mine, entries in zip(out, col.entries()):
            for h, m in entries.items():
                old = mine.get(h)
                mine[h] = m if old is None else _merged(old, m)
    return SpanEdits(vars=out[0], values=out[1])


def combine(*maps: Mapping[str, SpanEdits], release: bool = False) -> dict[str, SpanEdits]:
    """One set of edits writing all of `maps`, each node's markers in the order of the
    maps: rewriting with it writes what rewriting with each map in turn would (a key
    set again replaces its marker in place). Markers per leaf become plain entries.
    `release` as for rewrite_module (the maps' records are emptied)."""
    out: dict[str, SpanEdits] = {}
    for edits in maps:
        extra = _records_entries(edits, release) if _has_records(edits) else {}
        for name, e in edits.items():
            theirs = _plain(e, extra.get(name))
            target = out.get(name)
            if target is None:
                out[name] = SpanEdits(vars=dict(theirs.vars), values=dict(theirs.values))
                continue
            for mine, entries in ((target.vars, theirs.vars), (target.values, theirs.values)):
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


_SEP = "\x1f"
_chain = chain.from_iterable


def _as_column(entries: dict[int, Markers], on_vars: bool) -> list[Any] | None:
    """`entries` as a column item when every entry is one marker, all of one key and
    with a value (the common case: names; layouts): one comprehension over the sets
    instead of iterating every pair of every set; [] when there are none, None
    otherwise (the caller sends marker sets then)."""
    if not entries:
        return []
    sets = list(entries.values())
    first = sets[0]
    key = first[0][0] if first else None
    try:  # (a set of more than one pair does not unpack)
        texts = [v for ((k, v),) in sets if k == key and v]
    except ValueError:
        return None
    if len(texts) != len(sets):
        return None
    text = _SEP.join(texts)
    if text.count(_SEP) != len(texts) - 1:
        return None
    handles = handle_bytes(entries, len(entries))
    # equal texts share one set (and span) natively: worth it when they repeat
    share = len(set(texts[:64])) < min(len(texts), 64)
    return ["column", key, text, handles if on_vars else b"",
            b"" if on_vars else handles, share]


def _native_items(e: SpanEdits, extra: Entries | None) -> list[list[Any]] | None:
    """The edits of one function in one layer as the native `rebuild` takes them (see
    `Item` in native/rebuild.cc), or None if a marker holds the separator
    character "\x1f" (or a set has 256 pairs or more): the Python rebuild takes those.

    Flat arrays and one string per item: no Python object is made per entry, and the
    dicts' marker sets are not deduplicated (most are unique: names). The handles keep
    the order they were added in: listed as the rebuild meets the nodes (program order,
    as naming and the view list them), the rebuild reads them with cursors; any other
    order is written alike, from hash tables, after a first walk that finds it out."""
    vars_, values = e.vars, e.values
    if extra:
        vars_, values = {**vars_, **extra[0]}, {**values, **extra[1]}
    items: list[list[Any]] = []
    columns = [_as_column(vars_, True), _as_column(values, False)]
    if all(c is not None for c in columns):  # the common case: one key per dict
        items += [c for c in columns if c]
    elif vars_ or values:
        sets = [*vars_.values(), *values.values()]
        try:
            sizes = bytes(map(len, sets))
        except ValueError:
            return None
        text = _SEP.join(_chain(_chain(sets)))
        if text.count(_SEP) != max(2 * sum(sizes) - 1, 0):
            return None
        items.append(["sets", text, sizes, handle_bytes(vars_, len(vars_)),
                      handle_bytes(values, len(values))])
    for col in e.columns:
        if isinstance(col.texts, JoinedTexts):  # (checked when it was made)
            text = col.texts.text
        else:
            text = _SEP.join(col.texts)
            if text.count(_SEP) != max(len(col.texts) - 1, 0):
                return None
        items.append(["column", col.key, text, col.vars, col.values, col.share])
    return items


def _item_entries(item: list[Any]) -> Entries:
    """The entries an item of `_native_items` writes (to rebuild in Python what the
    native rebuild handed back, after `release` dropped the edits themselves)."""
    if item[0] == "column":
        _, key, text, var_handles, value_handles, share = item
        return MarkerColumn(key, text.split(_SEP), var_handles, value_handles, share).entries()
    _, text, sizes, var_handles, value_handles = item
    strings = iter(text.split(_SEP) if text else [])
    pairs = iter(list(zip(strings, strings)))
    sets = [tuple(islice(pairs, n)) for n in sizes]
    n_vars = len(var_handles) // 8
    return (dict(zip(memoryview(var_handles).cast("q"), sets[:n_vars])),
            dict(zip(memoryview(value_handles).cast("q"), sets[n_vars:])))


def _rewrite_native(native: Any, mod: tvm.IRModule,
                    layers: Sequence[Mapping[str, SpanEdits]],
                    release: bool) -> dict[Any, Any]:
    """The rebuilt functions, by the native rebuild where it can (see rewrite_layers).

    With `release`, a function's edits are emptied once they are made into the native
    items (when no later function shares them): their Python objects (a tuple per node)
    are freed before the rebuild makes the new nodes. A function handed back to Python
    is rebuilt from the items then."""
    funcs = {gv.name_hint: (gv, f) for gv, f in mod.functions.items()}
    extras = [_records_entries(edits, release) if _has_records(edits) else {}
              for edits in layers]
    uses = Counter(id(e) for edits in layers for e in edits.values())
    updates: dict[Any, Any] = {}
    for name in dict.fromkeys(n for edits in layers for n in edits):
        gv, func = funcs[name]
        mine = [(edits[name], extra.get(name)) for edits, extra in zip(layers, extras)
                if name in edits]
        if not any(e.vars or e.values or x or e.columns for e, x in mine):
            continue
        parts = [_native_items(e, x) for e, x in mine]
        new = None
        plain: SpanEdits | None = None
        if all(p is not None for p in parts):
            items = [item for p in parts if p for item in p]
            if release:
                for e, _ in mine:
                    uses[id(e)] -= 1
                    if not uses[id(e)]:
                        e.vars, e.values, e.columns = {}, {}, []
                del parts, mine
            try:
                new = native.rebuild(func, items)
            except Exception as err:  # a node it does not know: this function goes to Python
                _native.note_refusal(fallbacks, (name, _native.refusal(err)))
                plain = combine(*({name: SpanEdits(*_item_entries(item))} for item in items))[name]
        else:
            plain = combine(*({name: _plain(e, x)} for e, x in mine))[name]
        if new is None:
            assert plain is not None
            try:
                new = _Rebuilder(plain).function(func)
            except RecursionError:
                raise IRError("module nests too deeply to rewrite", function=name) from None
        updates[gv] = new
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

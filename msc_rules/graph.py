"""The dependency view: a Relax module -> a networkx DiGraph of values.

Nodes are integer value ids, in program order: params, constants (at their first
use) and binding vars of the entry function and of every function it calls (global
or local). Edges go from each value to the bindings that use it. Every tensor in a
value is a *leaf* (a tuple-typed value has one leaf per field); TupleGetItem, Tuple
and var-to-var bindings share leaves with what they alias, so they never disagree.

Each global function is read by the native read (native/read.cc) when the native walk
is available (MSC_RULES_NATIVE), which gives what `_Builder.function` would add as the
view's own columns (`_Replay` adds them in bulk, no Python loop per binding), giving the
same view; a function the C++ side refuses is read here, in Python. Static shapes come
with the read.

Few objects per binding: the values are a `ValueTable` whose natively read call
bindings are made when asked for (a `NativeValue`, its IR nodes fetched when asked
for), call sites are columns of a `SiteTable` (a CallSite is made on access; a native
read's arguments sit in one int32 array and its attributes, hashed by the C++ side,
are fetched when read), edges and leaf owners are int32 arrays, leaf types, the records
of binding blocks and the handle -> value lookups of a native read are made on first
use.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple, Union, overload

import networkx as nx
import numpy as np
import tvm
from tvm import relax
from tvm_ffi import _ffi_api
from tvm_ffi._ffi_api import StructuralHash as _structural_hash

from . import native as _native
from .errors import IRError
from .ffi import items
from .layout import Dim

Struct = Union[int, tuple["Struct", ...], None]
"""A leaf id (tensor), a tuple of structs, or None (not a tensor)."""

Var = tvm.ir.expr.Var
Call = tvm.ir.expr.Call
Constant = tvm.ir.expr.GenericConst
GlobalVar = tvm.ir.expr.GlobalVar
TensorType = relax.TensorType
TupleType = tvm.ir.type.TupleType
_Op = tvm.ir.Op
_DataflowVar = relax.DataflowVar
_VarBinding = relax.VarBinding
_ShapeExpr = relax.ShapeExpr
_OP_NAMES: dict[int, str] = {}
_new_tuple = tuple.__new__
_UNREAD: Any = object()


@dataclass(slots=True)
class Value:
    """One node of the view: a param, constant or binding var."""

    id: int
    kind: str  # "param" | "const" | "binding"
    expr: Any  # the Var or Constant
    func: str
    struct: Struct
    value: Any = None  # the bound value, for bindings
    top: str = ""  # the global function whose body holds this value
    _name: str | None = None
    binding: Any = None  # the Binding, for bindings (reused by the rewrite)
    args: list[Any] | None = None  # the call's arguments as read, for call bindings
    op: Any = None  # the call's op as read, for call bindings (reused by the rewrite)
    ty: Any = None  # the var's type as read, for call bindings (reused by the rewrite)

    @property
    def name(self) -> str:
        """The var's name ("const" for constants); read from the IR on first use, since
        most runs never print it and a name read costs as much as two field reads."""
        got = self._name
        if got is None:
            got = self._name = str(self.expr.name) if isinstance(self.expr, Var) else "const"
        return got


_get = _ffi_api.ArrayGetItem


class _NativeRead:
    """What the values of one native read share: its node table, strings and function,
    and per value of the read (by id - `first`) its node's handle, the call's handle
    (0: not a call binding), the nodes of the binding, the call and its var's type, its struct
    (a leaf, -1 None, -2 in `extra`) and its function's string (read.cc's output; the
    arrays are memoryviews of it, so no Python object per value)."""

    __slots__ = ("calls", "extra", "first", "funcs", "handles", "nodes", "strings", "structs",
                 "table", "top")

    def __init__(self, table: Any, first: int, top: str, strings: list[str],
                 out: Sequence[Any]) -> None:
        self.table, self.first, self.top, self.strings = table, first, top, strings
        handles, calls, nodes, structs, funcs = out
        self.handles = memoryview(handles).cast("q")
        self.calls = memoryview(calls).cast("q")
        self.nodes = memoryview(nodes).cast("i")
        self.structs = memoryview(structs).cast("i")
        self.funcs = memoryview(funcs).cast("i")
        self.extra: dict[int, Struct] = {}  # the structs neither a leaf nor None, by value


class NativeValue(Value):
    """A call binding's Value as the native read made it, made when first asked for
    (`DependencyView.values` holds none until then): the IR nodes (`expr`, `value`,
    `binding`, `args`, `op`, `ty`) are fetched when asked for (most runs ask for none:
    the native rebuild takes the handles, `handles`), and its struct, function and top
    read from the read's arrays. Equal to the Value graph.py's own read makes, field for
    field. Two slots of its own: its id and the read (a walk makes one per binding)."""

    __slots__ = ("_read",)
    kind = "binding"

    def __init__(self, vid: int, read: _NativeRead) -> None:
        self.id = vid
        self._read = read

    @property
    def struct(self) -> Struct:  # type: ignore[override]
        """The binding's struct, from the read's arrays (Value.struct)."""
        read = self._read
        st = read.structs[self.id - read.first]
        return st if st >= 0 else None if st == -1 else read.extra[self.id]

    @property
    def func(self) -> str:  # type: ignore[override]
        """The function (local or global) the binding is in, from the read's arrays."""
        read = self._read
        return read.strings[read.funcs[self.id - read.first]]

    @property
    def top(self) -> str:  # type: ignore[override]
        """The global function whose read made it."""
        return self._read.top

    @property
    def name(self) -> str:
        """The var's name, read from the IR on first use."""
        try:
            got = self._name
        except AttributeError:
            got = None
        if got is None:
            got = self._name = str(self.expr.name)
        return got

    def handles(self) -> tuple[int, int]:
        """The handles of the var and of the call (no node fetched)."""
        read = self._read
        i = self.id - read.first
        return read.handles[i], read.calls[i]

    @property
    def binding(self) -> Any:
        """The VarBinding node, fetched from the read's node table."""
        read = self._read
        return _get(read.table, read.nodes[3 * (self.id - read.first)])

    @property
    def expr(self) -> Any:
        """The binding's var (Value.expr)."""
        return self.binding.var

    @property
    def value(self) -> Any:
        """The bound Call, fetched from the read's node table."""
        read = self._read
        return _get(read.table, read.nodes[3 * (self.id - read.first) + 1])

    @property
    def op(self) -> Any:
        """The call's op."""
        return self.value.op

    @property
    def ty(self) -> Any:
        """The var's type, fetched from the read's node table."""
        read = self._read
        return _get(read.table, read.nodes[3 * (self.id - read.first) + 2])

    @property
    def args(self) -> list[Any]:  # type: ignore[override]
        """The call's arguments."""
        return items(self.value.args)


class CallBindings(NamedTuple):
    """Call bindings of one function (see `ValueTable.call_bindings`): their value ids
    and structs (int arrays: a leaf, -1 None, -2 another: see the Value), the handles of
    their vars and calls (int64 bytes)."""

    top: str
    ids: Any
    structs: Any
    var_handles: bytes
    call_handles: bytes


def _read_call_bindings(values: list[Any]) -> Iterator[CallBindings]:
    """`ValueTable.call_bindings` of Values graph.py's own read made (those with args),
    a chunk per run of one function."""
    runs: dict[str, tuple[list[int], list[int], list[int], list[int]]] = {}
    for v in values:
        if v.args is None:
            continue
        got = runs.get(v.top)
        if got is None:
            got = runs[v.top] = ([], [], [], [])
        st = v.struct
        got[0].append(v.id)
        got[1].append(st if type(st) is int else -1 if st is None else -2)
        got[2].append(v.expr.__chandle__())
        got[3].append(v.value.__chandle__())
    for top, (ids, structs, var_handles, call_handles) in runs.items():
        yield CallBindings(top, np.array(ids, np.int64), np.array(structs, np.int32),
                           np.array(var_handles, np.int64).tobytes(),
                           np.array(call_handles, np.int64).tobytes())


_new_native = object.__new__


class ValueTable(Sequence[Value]):
    """The view's values, by id (`DependencyView.values`). The call bindings of a
    native read are made when first asked for by index (a NativeValue, kept): no object
    per binding until then. Iterating makes those not made yet for the walk only."""

    __slots__ = ("_items", "_lazy", "_reads")

    def __init__(self) -> None:
        self._items: list[Value | None] = []  # None: a native read's, not made yet
        self._lazy: list[tuple[int, _NativeRead]] = []  # (first value id, read), in order
        self._reads: list[tuple[int, _NativeRead]] = []  # the same, all of them

    def append(self, value: Value) -> None:
        """Add a value."""
        self._items.append(value)

    def add_native(self, read: _NativeRead) -> None:
        """Add the values of a native read (its other values are set by id after)."""
        self._lazy.append((len(self._items), read))
        self._reads.append(self._lazy[-1])
        self._items.extend(repeat(None, len(read.handles)))

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Value: ...

    @overload
    def __getitem__(self, i: slice) -> list[Value]: ...

    def __getitem__(self, i: int | slice) -> Value | list[Value]:
        got = self._items[i]
        if got is None:
            return self._make(i)  # type: ignore[arg-type]
        if type(got) is list:
            return [self[k] for k in range(*i.indices(len(self)))]  # type: ignore[union-attr]
        return got  # type: ignore[return-value]

    def _make(self, i: int) -> Value:
        items_ = self._items
        if i < 0:
            i += len(items_)
        lazy = self._lazy
        read = lazy[bisect_right(lazy, i, key=itemgetter(0)) - 1][1]
        got = items_[i] = NativeValue(i, read)
        return got

    def kind_of(self, vid: int) -> str:
        """`self[vid].kind`, without making the Value."""
        got = self._items[vid]
        return "binding" if got is None else got.kind

    def call_of(self, vid: int) -> Any:
        """`self[vid].value` (the value of a call binding), without making the Value."""
        got = self._items[vid]
        if got is not None:
            return got.value
        lazy = self._lazy
        read = lazy[bisect_right(lazy, vid, key=itemgetter(0)) - 1][1]
        return _get(read.table, read.nodes[3 * (vid - read.first) + 1])

    def call_bindings(self) -> Iterator[CallBindings]:
        """The call bindings (VarBindings of Calls) as columns, one chunk per function
        read (`Value.top`), in order, without making their Values."""
        items_ = self._items
        at = 0
        for first, read in [*self._reads, (len(items_), None)]:
            if at < first:  # values graph.py's own read made
                yield from _read_call_bindings(items_[at:first])
            if read is None:
                break
            calls = np.frombuffer(read.calls, np.int64)
            picked = np.flatnonzero(calls)
            yield CallBindings(read.top, picked + first,
                               np.frombuffer(read.structs, np.int32)[picked],
                               np.frombuffer(read.handles, np.int64)[picked].tobytes(),
                               calls[picked].tobytes())
            at = first + len(calls)

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per value, as arrays and without making the call bindings' Values: its
        struct's code (a leaf, -1 None, -2 another: see the Value) and its node's
        handle (the var's, the constant's)."""
        items_ = self._items
        n = len(items_)
        codes = np.empty(n, np.int32)
        handles = np.empty(n, np.int64)
        at = 0
        for first, read in [*self._reads, (n, None)]:
            for vid in range(at, first):  # values graph.py's own read made
                v = items_[vid]
                assert v is not None
                st = v.struct
                codes[vid] = st if type(st) is int else -1 if st is None else -2
                handles[vid] = v.expr.__chandle__()
            if read is None:
                break
            k = len(read.handles)
            codes[first:first + k] = np.frombuffer(read.structs, np.int32)
            handles[first:first + k] = np.frombuffer(read.handles, np.int64)
            at = first + k
        return codes, handles

    def fill(self) -> list[Value]:
        """Every value made; the list of them (the table's own: do not change it)."""
        items_ = self._items
        for first, read in self._lazy:
            for i in range(first, first + len(read.handles)):
                if items_[i] is None:
                    items_[i] = NativeValue(i, read)
        self._lazy.clear()
        return items_  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Value]:
        if not self._lazy:
            return iter(self._items)  # type: ignore[arg-type]
        return self._walk()

    def _walk(self) -> Iterator[Value]:
        """Every value; those not made yet made for the walk only (not kept: a walk over
        all values, a search for the params say, leaves no object per binding behind)."""
        items_ = self._items
        at = 0
        for first, read in self._lazy:
            yield from items_[at:first]  # type: ignore[misc]
            at = first + len(read.handles)
            new = _new_native
            for i, v in enumerate(items_[first:at], first):
                if v is None:  # (NativeValue's __init__ inline: no frame per value)
                    v = new(NativeValue)
                    v.id, v._read = i, read
                yield v
        yield from items_[at:]  # type: ignore[misc]


class _LazyRecords:
    """A binding block of a native read whose records are not made yet: the record of
    each binding (a value id, or -1 - the table node of a local function's binding)."""

    __slots__ = ("block", "ids", "table")

    def __init__(self, block: Any, ids: Any, table: Any) -> None:
        self.block, self.ids, self.table = block, ids, table


class BlockRecords(MutableMapping[int, tuple[Any, list[Any]]]):
    """`DependencyView.block_records`: per block handle, the block and its records. A
    native read's are made on first access (most runs never read them)."""

    __slots__ = ("_items", "_values")

    def __init__(self, values: ValueTable) -> None:
        self._items: dict[int, Any] = {}
        self._values = values

    def add_native(self, handle: int, block: Any, ids: Any, table: Any) -> None:
        """Add a native read's block: `ids` as in `_LazyRecords`."""
        self._items[handle] = _LazyRecords(block, ids, table)

    def __getitem__(self, handle: int) -> tuple[Any, list[Any]]:
        got = self._items[handle]
        if type(got) is _LazyRecords:
            values, table = self._values, got.table
            got = self._items[handle] = (
                got.block, [values[r] if r >= 0 else _get(table, -1 - r) for r in got.ids])
        return got

    def __setitem__(self, handle: int, entry: tuple[Any, list[Any]]) -> None:
        self._items[handle] = entry

    def __delitem__(self, handle: int) -> None:
        del self._items[handle]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _Native:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NATIVE"


class CallSite(NamedTuple):
    """A call binding (or a synthetic link) whose equations the engine runs (a named
    tuple, made on access from the view's `SiteTable`)."""

    value_id: int
    call: Any  # the relax Call (None for links)
    op: str  # op name, "@<global>", "%<local>", "<link>", "plugin:<name>" or "" (opaque)
    args: list[Struct]
    out: Struct
    attrs: Any = None


NATIVE: Any = _Native()
"""In a SiteTable column: the site's entry is in the flat arrays (see SiteTable)."""


class SiteTable(Sequence[CallSite]):
    """The view's call sites as columns, a site by its index: `value_id`, `op`, `out`
    (lists), the arguments (`args_of`) and attributes (`attrs_of`); `self[i]` makes the
    CallSite. No object per site: the arguments of a natively read op call are kept in
    one int32 array, and its attributes as a node of the read's table, fetched when
    asked for. A site's call is its binding's value (None for a link)."""

    __slots__ = ("_args", "_at", "_attrs", "_attrs_info", "_calls", "_flat", "_tables",
                 "_values", "op", "out", "value_id")

    def __init__(self, values: ValueTable) -> None:
        self.value_id: list[int] = []
        self.op: list[str] = []
        self.out: list[Struct] = []
        # per site: its arguments, or NATIVE: they are at _at[2 * i] in _flat (count,
        # then per argument its leaf or -1 for None); _at has entries up to the last
        # site of a native read (-1 for the sites added by value)
        self._args: list[Any] = []
        self._flat = array("i")
        # per site: its attributes, or NATIVE: they are entry _at[2 * i + 1] of
        # _attrs_info (per entry: the node in the table of the read that made the site,
        # the type index and the structural hash; _tables: the first site of each read
        # and its table)
        self._attrs: list[Any] = []
        self._at = array("i")
        self._attrs_info = array("q")
        self._tables: list[tuple[int, Any]] = []
        # per site up to the last of a native read: its call's node in that read's table
        # (-1: a link, or a site added by value)
        self._calls = array("i")
        self._values = values

    def append(self, cs: CallSite) -> None:
        """Add a site."""
        self.value_id.append(cs.value_id)
        self.op.append(cs.op)
        self._args.append(cs.args)
        self.out.append(cs.out)
        self._attrs.append(cs.attrs)

    def _drop(self, sites: list[int]) -> None:
        """Remove sites (of the last native read: no read starts after them)."""
        for i in sorted(sites, reverse=True):
            del self.value_id[i], self.op[i], self.out[i], self._args[i], self._attrs[i]
            del self._at[2 * i:2 * i + 2], self._calls[i]

    def args_of(self, i: int) -> list[Struct]:
        """The argument structs of site `i`."""
        got = self._args[i]
        if got is NATIVE:
            flat, at = self._flat, self._at[2 * i]
            return [x if x >= 0 else None for x in flat[at + 1:at + 1 + flat[at]]]
        return got

    def attrs_of(self, i: int) -> Any:
        """The call attributes of site `i` (None for none)."""
        got = self._attrs[i]
        if got is NATIVE:
            tables = self._tables
            k = bisect_right(tables, i, key=itemgetter(0)) - 1
            return _get(tables[k][1], self._attrs_info[3 * self._at[2 * i + 1]])
        return got

    def native_attrs_key(self, i: int) -> tuple[int, int] | None:
        """For a site whose attributes are NATIVE: their type index and structural hash
        as the native read found them (None when they do not hash)."""
        info, e = self._attrs_info, 3 * self._at[2 * i + 1]
        return None if info[e + 1] < 0 else (info[e + 1], info[e + 2])

    # -- the native reads' columns in bulk, for the walks that take them as arrays
    # (channel_native, prune_cut)
    def flat_args(self) -> np.ndarray:
        """The arguments of the sites read natively, int32: per site its count, then
        each argument's leaf (-1 for None); `arg_starts` says where each site's are."""
        return np.frombuffer(self._flat, dtype=np.int32) if len(self._flat) \
            else np.zeros(0, dtype=np.int32)

    def arg_starts(self) -> np.ndarray:
        """Per site, int64: where its arguments start in `flat_args`, or -1 for a site
        added by value (its `args_of` is all there is)."""
        return self._column(0)

    def attr_entries(self) -> np.ndarray:
        """Per site, int64: its attributes' row of `attr_info`, or -1 when it has none
        there (no attributes, or not read natively)."""
        out = self._column(1)
        out[[a is not NATIVE for a in self._attrs]] = -1
        return out

    def attr_info(self) -> np.ndarray:
        """Per attributes entry of the native reads, int64 rows: the node in its read's
        table, the type index and the structural hash (both -1 when it does not hash)."""
        return np.frombuffer(self._attrs_info, dtype=np.int64).reshape(-1, 3) \
            if len(self._attrs_info) else np.zeros((0, 3), dtype=np.int64)

    def _column(self, k: int) -> np.ndarray:
        out = np.full(len(self), -1, dtype=np.int64)
        if len(self._at):
            got = np.frombuffer(self._at, dtype=np.int32)[k::2]
            out[:len(got)] = got
        return out

    def call_of(self, i: int) -> Any:
        """The call of site `i` (None for a link)."""
        calls = self._calls
        if i < len(calls) and calls[i] >= 0:
            tables = self._tables
            return _get(tables[bisect_right(tables, i, key=itemgetter(0)) - 1][1], calls[i])
        return None if self.op[i] == "<link>" else self._values.call_of(self.value_id[i])

    def __len__(self) -> int:
        return len(self.value_id)

    @overload
    def __getitem__(self, i: int) -> CallSite: ...

    @overload
    def __getitem__(self, i: slice) -> list[CallSite]: ...

    def __getitem__(self, i: int | slice) -> CallSite | list[CallSite]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self.value_id)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("site index out of range")
        # (call_of, args_of and attrs_of inline, the read's table found once: the channel
        # walks make a CallSite per visit)
        args, attrs, calls = self._args[i], self._attrs[i], self._calls
        node = calls[i] if i < len(calls) else -1
        table: Any = None
        if node >= 0 or attrs is NATIVE:
            tables = self._tables
            table = tables[bisect_right(tables, i, key=itemgetter(0)) - 1][1]
        op = self.op[i]
        if node >= 0:
            call = _get(table, node)
        else:
            call = None if op == "<link>" else self._values.call_of(self.value_id[i])
        if args is NATIVE:
            flat, at = self._flat, self._at[2 * i]
            args = [x if x >= 0 else None for x in flat[at + 1:at + 1 + flat[at]]]
        if attrs is NATIVE:
            attrs = _get(table, self._attrs_info[3 * self._at[2 * i + 1]])
        return _new_tuple(CallSite, (self.value_id[i], call, op, args, self.out[i], attrs))

    def __iter__(self) -> Iterator[CallSite]:
        return (self[i] for i in range(len(self)))


class LeafTypes(Sequence[Any]):
    """The type of every leaf (`DependencyView.leaf_type`): those of natively read
    leaves are fetched from the read's node table when first asked for."""

    __slots__ = ("_chunks", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []  # a type, or None: not fetched yet
        self._chunks: list[tuple[int, Any, Any]] = []  # (first leaf, table, type nodes)

    def append(self, ty: Any) -> None:
        """Add a leaf's type."""
        self._items.append(ty)

    def add_native(self, table: Any, nodes: Any) -> None:
        """Add leaves whose types are nodes `nodes` of `table`."""
        self._chunks.append((len(self._items), table, nodes))
        self._items.extend(repeat(None, len(nodes)))

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        items_ = self._items
        got = items_[i]
        if got is None:
            if i < 0:
                i += len(items_)
            chunks = self._chunks
            first, table, nodes = chunks[bisect_right(chunks, i, key=itemgetter(0)) - 1]
            got = items_[i] = _get(table, nodes[i - first])
        return got


@dataclass
class DependencyView:
    """Values, leaves and call sites of the functions reachable from the entry."""

    entry: str
    values: ValueTable = field(default_factory=ValueTable)
    leaf_ndim: list[int] = field(default_factory=list)
    leaf_type: LeafTypes = field(default_factory=LeafTypes)
    leaf_value: array[int] = field(default_factory=lambda: array("i"))
    sites: SiteTable = field(init=False)
    functions: list[str] = field(default_factory=list)
    edge_src: array[int] = field(default_factory=lambda: array("i"))
    """Edge i goes from value edge_src[i] to value edge_dst[i] (int32 arrays)."""
    edge_dst: array[int] = field(default_factory=lambda: array("i"))
    tops: list[str] = field(default_factory=list)
    """The global functions walked, in order (`Value.top` is one of them)."""
    others: list[int] = field(default_factory=list)
    """Ids of the values without `Value.args`, in order: params, constants and the
    bindings that are not a `VarBinding` of a `Call` (those have `Value.args`)."""
    block_records: BlockRecords = field(init=False)
    """Per binding block (by handle): the block and what the view read of each binding
    (its Value, or the Binding itself for a local function). The rewrite reuses these
    reads. Holding the block keeps its handle from being reused while the view lives."""
    _value_of: dict[int, int] = field(default_factory=dict)
    _unmapped: list[tuple[Any, int]] = field(default_factory=list)
    """Node handles of native reads not in `_value_of` yet: (handles, first value id)."""
    _shapes: dict[int, list[Dim] | None] = field(default_factory=dict)
    _by_hash: dict[int, list[Dim] | None] = field(default_factory=dict)
    _static_ids: array[int] = field(default_factory=lambda: array("i"))
    """Per leaf (up to the last natively read one), its static shape (every dim an
    IntImm) in `_static_table`, or -1, as the native read found them."""
    _static_table: list[list[Dim]] = field(default_factory=list)
    _graph: nx.DiGraph | None = None

    def __post_init__(self) -> None:
        self.sites = SiteTable(self.values)
        self.block_records = BlockRecords(self.values)

    @property
    def value_of(self) -> dict[int, int]:
        """Node handle -> value id, for params, binding vars and constants."""
        if self._unmapped:
            self._map()
        return self._value_of

    def _map(self) -> None:
        """Add the node handles of native reads to `_value_of`."""
        for handles, first in self._unmapped:
            self._value_of.update(zip(handles, range(first, first + len(handles))))
        self._unmapped.clear()

    def value_id(self, expr: Any) -> int | None:
        """The value id of a param, binding var or constant of the view (None if absent)."""
        return self.value_of.get(expr.__chandle__())

    def shape(self, leaf: int) -> list[Dim] | None:
        """The shape of a leaf as layout Dims (ints, symbol names, products); cached."""
        got = self._shapes.get(leaf, _UNREAD)
        if got is _UNREAD:
            got = self._shapes[leaf] = self.read_shape(leaf)
        return got

    def static_shape_ids(self) -> np.ndarray:
        """Per leaf up to the last one read natively, int32: the index of its static
        shape in `static_shapes`, or -1 (a symbolic or unknown dim)."""
        return np.frombuffer(self._static_ids, dtype=np.int32) if len(self._static_ids) \
            else np.zeros(0, dtype=np.int32)

    def static_shape_id(self, leaf: int) -> int:
        """`static_shape_ids()[leaf]`, -1 past its end."""
        ids = self._static_ids
        return ids[leaf] if leaf < len(ids) else -1

    @property
    def static_shapes(self) -> list[list[Dim]]:
        """The distinct static shapes the native reads found (see `static_shape_ids`)."""
        return self._static_table

    def read_shape(self, leaf: int) -> list[Dim] | None:
        """`shape`, for a caller that caches it itself (the engine): always read."""
        # Types are not shared between bindings, but their shapes repeat: one FFI call
        # hashes a shape, where converting it reads every dim (about 3x the cost). Free
        # symbolic vars hash by identity, and the view keeps every type (so every var)
        # alive, so within one view equal hashes mean equal shapes (up to a collision of
        # 64-bit hashes among the few distinct shapes of a module: not a practical risk).
        ids = self._static_ids
        if leaf < len(ids) and ids[leaf] >= 0:
            return self._static_table[ids[leaf]]
        ty = self.leaf_type._items[leaf]
        if ty is None:  # (a natively read leaf's type, not fetched yet)
            ty = self.leaf_type[leaf]
        sh: Any = ty.shape if type(ty) is TensorType else getattr(ty, "shape", None)
        values = sh.values if type(sh) is _ShapeExpr or isinstance(sh, _ShapeExpr) else None
        if values is None:
            dims = None
        else:
            key = _structural_hash(values, False, False)
            dims = self._by_hash.get(key, _UNREAD)
            if dims is _UNREAD:  # (not try/except: raising KeyError costs ~0.3 us)
                dims = self._by_hash[key] = _dims(values)
        return dims

    @property
    def graph(self) -> nx.DiGraph:
        """The networkx DiGraph: value ids as nodes (with their Value as `value`), edges
        from each value to the bindings that use it. Built on first use: the engine
        walks its own arrays, so runs that never ask for the graph never pay for it."""
        if self._graph is None:
            g = nx.DiGraph()
            g.add_nodes_from((v.id, {"value": v}) for v in self.values)
            g.add_edges_from(zip(self.edge_src, self.edge_dst))
            self._graph = g
        return self._graph


def _dim(e: Any) -> Dim:
    if isinstance(e, int):
        return e
    if isinstance(e, tvm.prim.IntImm):
        return int(e.value)
    if isinstance(e, Var):
        return str(e.name)
    if isinstance(e, tvm.prim.Mul):
        a, b = _dim(e.a), _dim(e.b)
        parts: list[int | str] = []
        for d in (a, b):
            parts.extend(d if isinstance(d, tuple) else (d,))
        return tuple(parts)
    return f"<{e}>"  # opaque: equal only to the same expression


def dims_of(ty: Any) -> list[Dim] | None:
    """Shape of a TensorType as Dims, or None when the shape is not a ShapeExpr."""
    values = getattr(getattr(ty, "shape", None), "values", None)
    return None if values is None else _dims(values)


def _dims(values: Any) -> list[Dim]:
    return [_dim(v) for v in items(values)]


def global_args(mod: tvm.IRModule) -> tuple[bytes, bytes]:
    """The native read's arguments on the module's global vars: their handles (int64)
    and whether each names a Relax function (int32, 1 or 0)."""
    pairs = [(gv.__chandle__(), isinstance(f, relax.Function)) for gv, f in mod.functions.items()]
    return (array("q", [h for h, _ in pairs]).tobytes(),
            array("i", [int(r) for _, r in pairs]).tobytes())


class _Builder:
    def __init__(self, mod: tvm.IRModule, entry: str, entry_read: Any = None) -> None:
        self.mod = mod
        # the native read of the entry function made already (see build_view)
        self.entry_read = entry_read
        self.view = DependencyView(entry)
        self.globals = {gv.name_hint: gv for gv in mod.get_global_vars()}
        self.func_params: dict[str, list[Struct]] = {}
        self.func_ret: dict[str, Struct] = {}
        self.pending_links: list[tuple[int, str, list[Struct], Struct]] = []
        self.local_funcs: dict[int, str] = {}
        self.queue: list[str] = []
        self.seen: set[str] = set()
        self.top = entry
        # the constants met so far (handle, value id): a native read of a later
        # function needs them, as one constant object can sit in several functions
        self.const_keys = array("q")
        self.const_ids = array("i")
        self.global_args: tuple[bytes, bytes] | None = None
        # the view's lookups (complete while a function is read here: see build)
        self.value_of = self.view._value_of
        # the values as a plain list (complete while a function is read here: see build)
        self.values: list[Any] = self.view.values._items
        sites = self.view.sites  # (its columns' appends, for the common binding)
        self.add_site = (sites.value_id.append, sites.op.append, sites._args.append,
                         sites.out.append, sites._attrs.append)

    # -- leaves and values
    def new_struct(self, ty: Any, owner: int) -> Struct:
        if type(ty) is TensorType or isinstance(ty, TensorType):
            v = self.view
            v.leaf_ndim.append(ty.ndim)
            v.leaf_type._items.append(ty)
            v.leaf_value.append(owner)
            return len(v.leaf_ndim) - 1
        if isinstance(ty, TupleType):
            return tuple(self.new_struct(f, owner) for f in items(ty.fields))
        return None

    def add_value(self, kind: str, expr: Any, func: str, value: Any = None) -> Value:
        view = self.view
        vid = len(self.values)
        val = Value(vid, kind, expr, func, None, value, self.top)
        self.values.append(val)
        self.value_of[expr.__chandle__()] = vid
        view.others.append(vid)
        return val

    def struct_of(self, e: Any, func: str, users: list[int]) -> Struct:
        """The struct an argument expression refers to; records which values it reads."""
        cls = type(e)
        if cls is _ShapeExpr:
            return None  # exact types first: isinstance goes through ABCMeta (~0.3 us)
        if cls is not Constant and (cls is _DataflowVar or cls is Var or isinstance(e, Var)):
            vid = self.value_of.get(e.__chandle__())
            if vid is None:
                return None  # a local function or an unbound var: no tensor value
            users.append(vid)
            return self.values[vid].struct
        if cls is Constant or isinstance(e, Constant):
            h = e.__chandle__()
            vid = self.value_of.get(h)
            if vid is None:
                val = self.add_value("const", e, func)
                val.struct = self.new_struct(e.ty, val.id)
                vid = val.id
                self.const_keys.append(h)
                self.const_ids.append(vid)
            users.append(vid)
            return self.values[vid].struct
        if isinstance(e, tvm.ir.expr.Tuple):
            return tuple(self.struct_of(f, func, users) for f in items(e.fields))
        if isinstance(e, tvm.ir.expr.TupleGetItem):
            base = self.struct_of(e.tuple_value, func, users)
            if isinstance(base, tuple) and 0 <= e.index < len(base):
                return base[e.index]
            return None
        return None

    # -- functions
    def function(self, name: str, func: Any) -> None:
        self.view.functions.append(name)
        params: list[Struct] = []
        for p in items(func.params):
            val = self.add_value("param", p, name)
            val.struct = self.new_struct(p.ty, val.id)
            params.append(val.struct)
        self.func_params[name] = params
        self.func_ret[name] = self.body(name, func.body)

    def body(self, fname: str, seq: Any) -> Struct:
        if not isinstance(seq, relax.SeqExpr):
            users: list[int] = []
            return self.struct_of(seq, fname, users)
        records = self.view.block_records
        for block in items(seq.blocks):
            records[block.__chandle__()] = (
                block, [self.binding(fname, b) for b in items(block.bindings)])
        users = []
        return self.struct_of(seq.body, fname, users)

    def binding(self, fname: str, b: Any) -> Any:
        """Add one binding; return its Value (the Binding itself for a local function)."""
        var, value = b.var, b.value
        if type(value) is Call and type(b) is _VarBinding:
            # The common case, with struct_of (for var arguments), add_value and
            # new_struct (for a tensor result) inline: this runs once per binding.
            view = self.view
            values, value_of = self.values, self.value_of
            args_users: list[int] = []
            raw = items(value.args)
            args: list[Struct] = []
            for a in raw:
                cls = type(a)
                if cls is _DataflowVar or cls is Var:
                    vid = value_of.get(a.__chandle__())
                    if vid is None:
                        args.append(None)
                    else:
                        args_users.append(vid)
                        args.append(values[vid].struct)
                else:
                    args.append(self.struct_of(a, fname, args_users))
            vid = len(values)
            ty, op = var.ty, value.op
            val = Value(vid, "binding", var, fname, None, value, self.top, None, b, raw, op, ty)
            values.append(val)
            value_of[var.__chandle__()] = vid
            if type(ty) is TensorType:
                val.struct = len(view.leaf_ndim)
                view.leaf_ndim.append(ty.ndim)
                view.leaf_type._items.append(ty)
                view.leaf_value.append(vid)
            else:
                val.struct = self.new_struct(ty, vid)
            name = _OP_NAMES.get(op.__chandle__()) if type(op) is _Op else None
            if name is not None and name != "relax.call_dps_packed":
                # call_site's common case inline: an op seen before (SiteTable.append)
                add_vid, add_op, add_args, add_out, add_attrs = self.add_site
                add_vid(vid)
                add_op(name)
                add_args(args)
                add_out(val.struct)
                add_attrs(value.attrs)
            else:
                self.call_site(fname, val, value, args, op)
            if args_users:
                view.edge_src.extend(args_users)
                view.edge_dst.extend([vid] * len(args_users))
            return val
        users: list[int] = []
        if isinstance(value, relax.Function):
            local = f"{fname}.{var.name}"
            self.local_funcs[var.__chandle__()] = local
            self.function(local, value)
            return b
        if isinstance(b, relax.MatchCast):
            src = self.struct_of(value, fname, users)
            val = self.add_value("binding", var, fname, value)
            val.struct = self.new_struct(var.ty, val.id)
            self.link(val.id, src, val.struct)
        elif isinstance(value, Call):
            arg_users: list[int] = []
            args = [self.struct_of(a, fname, arg_users) for a in items(value.args)]
            users.extend(arg_users)
            val = self.add_value("binding", var, fname, value)
            val.struct = self.new_struct(var.ty, val.id)
            self.call_site(fname, val, value, args)
        elif isinstance(value, relax.If):
            self.struct_of(value.cond, fname, users)
            t = self.body(fname, value.true_branch)
            f = self.body(fname, value.false_branch)
            val = self.add_value("binding", var, fname, value)
            val.struct = self.new_struct(var.ty, val.id)
            self.link(val.id, t, val.struct)
            self.link(val.id, f, val.struct)
        else:
            # Var, Tuple, TupleGetItem, Constant alias what they refer to; others carry no tensor
            alias = self.struct_of(value, fname, users)
            val = self.add_value("binding", var, fname, value)
            val.struct = alias if alias is not None else self.new_struct(var.ty, val.id)
        if users:
            self.view.edge_src.extend(users)
            self.view.edge_dst.extend([val.id] * len(users))
        val.binding = b
        return val

    def link(self, vid: int, src: Struct, dst: Struct) -> None:
        if src is not None and dst is not None:
            self.view.sites.append(CallSite(vid, None, "<link>", [src], dst))

    def call_site(self, fname: str, val: Value, call: Any, args: list[Struct],
                  op: Any = None) -> None:
        if op is None:
            op = call.op
        sites = self.view.sites
        if type(op) is _Op or isinstance(op, _Op):
            # ops are global singletons: read each name once
            h = op.__chandle__()
            name = _OP_NAMES.get(h) or _OP_NAMES.setdefault(h, str(op.name))
            if name == "relax.call_dps_packed" and call.args and isinstance(
                call.args[0], relax.ExternFunc
            ):
                inner = args[1] if len(args) > 1 and isinstance(args[1], tuple) else ()
                sym = str(call.args[0].global_symbol)
                sites.append(CallSite(val.id, call, f"plugin:{sym}", list(inner), val.struct))
                return
            # tuple.__new__ directly: a named tuple's own __new__ is a Python function
            sites.append(_new_tuple(CallSite, (val.id, call, name, args, val.struct, call.attrs)))
        elif isinstance(op, GlobalVar):
            callee = op.name_hint
            if isinstance(self.mod[op], relax.Function):
                if callee not in self.seen:
                    self.seen.add(callee)
                    self.queue.append(callee)
                self.pending_links.append((val.id, callee, args, val.struct))
            else:
                sites.append(CallSite(val.id, call, "", args, val.struct))
        elif isinstance(op, Var) and op.__chandle__() in self.local_funcs:
            self.pending_links.append(
                (val.id, self.local_funcs[op.__chandle__()], args, val.struct)
            )
        else:
            sites.append(CallSite(val.id, call, "", args, val.struct))

    def read_native(self, native: Any, name: str, func: Any) -> bool:
        """Read global function `name` with the native read (native/read.cc) and replay
        its records into the view; False (nothing added) if the C++ side refused it."""
        view = self.view
        out = self.entry_read
        self.entry_read = None  # (the first read is the entry function's)
        if out is None:
            if self.global_args is None:
                self.global_args = global_args(self.mod)
            try:
                sites = view.sites
                out = native.read(func, name, len(view.values), len(view.leaf_ndim),
                                  len(sites._flat), len(sites._attrs_info) // 3,
                                  len(view._static_table), self.const_keys.tobytes(),
                                  self.const_ids.tobytes(), *self.global_args)
            except Exception as err:  # a node it does not know: this function goes to Python
                out = str(err) or repr(err)
        if isinstance(out, str):  # (the reason the C++ side refused it)
            _native.note_refusal(read_fallbacks, (name, _native.refusal(out)))
            return False
        _Replay(self, name, items(out)).run()
        return True

    def build(self) -> DependencyView:
        entry = self.view.entry
        gv = self.globals.get(entry)
        if gv is None or not isinstance(self.mod[gv], relax.Function):
            names = ", ".join(sorted(n for n, g in self.globals.items()
                                     if isinstance(self.mod[g], relax.Function)))
            raise IRError(f"entry function '{entry}' is not a Relax function of the module "
                          f"(functions: {names or 'none'})")
        self.seen.add(entry)
        self.queue.append(entry)
        native = _native.get()
        while self.queue:
            name = self.queue.pop(0)
            self.top = name
            self.view.tops.append(name)
            func = self.mod[self.globals[name]]
            if native is not None and self.read_native(native, name, func):
                continue
            self.view._map()  # (the lookups of native reads: the walk reads them)
            self.view.values.fill()  # (and their values)
            try:
                self.function(name, func)
            except RecursionError:
                raise IRError("module nests too deeply to walk", function=name) from None
        for vid, callee, args, out in self.pending_links:
            params = self.func_params.get(callee, [])
            for a, p in zip(args, params):
                self.link(vid, a, p)
            self.link(vid, self.func_ret.get(callee), out)
        return self.view


read_fallbacks: list[tuple[str, str]] = []
"""(function, reason) for every function the native read handed back to Python (the
last 100): what the tests check to know the native read really ran."""

# the native read's events, struct codes and site kinds (native/read.cc)
(_E_FUNC, _E_PARAM, _E_PARAMS_END, _E_RET, _E_CONST, _E_STRUCT, _E_BINDING, _E_SITE,
 _E_LINK, _E_PENDING, _E_BLOCK) = range(1, 12)
_S_NONE, _S_TUPLE, _S_VALUE, _S_LOOKUP = -1, -2, -3, -4
_ARGS_OF_KIND = np.array([None, NATIVE, None, NATIVE], dtype=object)  # (None: in an event)
_ATTRS_OF_KIND = np.array([None, None, NATIVE, NATIVE], dtype=object)


class _Replay:
    """The output of one native read (native/read.cc) added to a _Builder's view: what
    `_Builder.function` would have added, in the same order.

    Most of it comes as final columns, added in bulk: per value (its handles, struct,
    function: `_NativeRead`; a call binding's Value is made when asked for), per leaf,
    per site (value, op name, out, flat arguments' and attributes' entries, kind, call),
    edges, the records of blocks. The events (int32) give the rest, in order: FUNC
    name; PARAM value node struct; PARAMS_END; RET struct (the current function's
    return); CONST value node struct; STRUCT value struct (a call binding's struct that
    is neither a leaf nor None); BINDING value binding var value struct (the values
    other than call bindings); SITE site n structs*n out (a site's arguments, n = -1:
    they are flat, and out, where the columns do not hold them); LINK site src dst;
    PENDING value global(1/0) callee n structs*n out; BLOCK node n at (the records of a
    block: n from `at` of the block records, each a value id, or -1 - the node of a
    local function's binding). A struct: a leaf id (>= 0), -1 None, -2 n structs*n (a
    tuple), -3 value (the struct of a value of an earlier function: a shared
    constant), -4 node (a var the C++ side did not see defined, a symbolic var say: the
    struct of the value the view has for it, if any). Names and strings are indices
    into the strings, nodes into the nodes. Edges come in two arrays of their own (a
    source: a value id, or -1 - the node of a var to look up), in the order the Python
    walk adds them.

    The view's `value_of` gets this read's values at the end, so a var looked up finds
    what graph.py's walk would have found: values of earlier functions only.
    """

    def __init__(self, builder: _Builder, top: str, out: list[Any]) -> None:
        (events, handles, calls, call_nodes, structs, funcs, self.leaf_ndim, self.leaf_type,
         self.leaf_owner, self.leaf_static, shapes, nodes, strings, self.edge_src,
         self.edge_dst, self.flat, self.attrs, self.site_vid, self.site_name, self.site_out,
         self.site_at, self.site_kind, self.site_call, block_ids) = out
        self.b = builder
        self.top = top
        self.ev: list[int] = memoryview(events).cast("i").tolist()
        self.shapes: list[int] = memoryview(shapes).cast("q").tolist()
        self.table = nodes  # the node table, fetched from by index (`node`)
        self.strings = [str(x) for x in items(strings)]
        self.block_ids = memoryview(block_ids).cast("i")
        self.read = _NativeRead(nodes, len(builder.view.values), top, self.strings,
                                (handles, calls, call_nodes, structs, funcs))

    def struct(self, i: int) -> tuple[Struct, int]:
        """The struct at event `i`, and the event after it."""
        ev = self.ev
        code = ev[i]
        if code >= 0:
            return code, i + 1
        if code == _S_NONE:
            return None, i + 1
        if code in (_S_VALUE, _S_LOOKUP):
            view = self.b.view
            vid: int | None = ev[i + 1]
            if code == _S_LOOKUP:
                vid = view.value_of.get(_get(self.table, ev[i + 1]).__chandle__())
            return (None if vid is None else view.values[vid].struct), i + 2
        parts = []
        i += 2
        for _ in range(ev[i - 1]):
            st, i = self.struct(i)
            parts.append(st)
        return tuple(parts), i

    def structs(self, i: int, n: int) -> tuple[list[Struct], int]:
        """`n` structs from event `i`, and the event after them."""
        ev = self.ev
        got = ev[i:i + n]
        if not got or min(got) >= -1:  # leaves and Nones only: the common case
            return [x if x >= 0 else None for x in got], i + n
        out = []
        for _ in range(n):
            st, i = self.struct(i)
            out.append(st)
        return out, i

    def run(self) -> None:
        b, view, top, read = self.b, self.view_leaves(), self.top, self.read
        ev, table, strings, struct = self.ev, self.table, self.strings, self.struct
        values, others, records = view.values, view.others, view.block_records
        items_ = values._items
        first = len(values)
        values.add_native(read)
        sites = view.sites
        base = self.sites(sites)
        site_args, site_out = sites._args, sites.out
        dropped: list[int] = []
        stack: list[tuple[str, list[Struct]]] = []
        fname = ""
        params: list[Struct] = []
        n = len(ev)
        i = 0
        const_ids: list[int] = []
        e_const, e_param, e_binding = _E_CONST, _E_PARAM, _E_BINDING
        while i < n:
            e = ev[i]
            if e in (e_const, e_param):  # (the most common events first)
                vid = ev[i + 1]
                val = Value(vid, "const" if e == e_const else "param", _get(table, ev[i + 2]),
                            fname, None, None, top)
                st = ev[i + 3]
                if st >= 0:
                    val.struct = st
                    i += 4
                else:
                    val.struct, i = struct(i + 3)
                items_[vid] = val
                others.append(vid)
                if e == e_const:
                    const_ids.append(vid)
                else:
                    params.append(val.struct)
            elif e == e_binding:
                vid, nb, nv, nval = ev[i + 1:i + 5]
                val = Value(vid, "binding", _get(table, nv), fname, None, _get(table, nval), top,
                            None, _get(table, nb))
                val.struct, i = struct(i + 5)
                items_[vid] = val
                others.append(vid)
            elif e == _E_SITE:
                s, na = base + ev[i + 1], ev[i + 2]
                i += 3
                if na >= 0:
                    site_args[s], i = self.structs(i, na)
                site_out[s], i = struct(i)
            elif e == _E_STRUCT:
                read.extra[ev[i + 1]], i = struct(i + 2)
            elif e == _E_BLOCK:
                node, k, at = ev[i + 1:i + 4]
                block = _get(table, node)
                records.add_native(block.__chandle__(), block, self.block_ids[at:at + k], table)
                i += 4
            elif e == _E_LINK:
                s = base + ev[i + 1]
                src, i = struct(i + 2)
                dst, i = struct(i)
                if src is None or dst is None:
                    dropped.append(s)
                else:
                    site_args[s], site_out[s] = [src], dst
            elif e == _E_PENDING:
                vid, is_global, callee, na = ev[i + 1:i + 5]
                args, i = self.structs(i + 5, na)
                ret, i = struct(i)
                name = strings[callee]
                if is_global and name not in b.seen:
                    b.seen.add(name)
                    b.queue.append(name)
                b.pending_links.append((vid, name, args, ret))
            elif e == _E_FUNC:
                stack.append((fname, params))
                fname, params = strings[ev[i + 1]], []
                view.functions.append(fname)
                i += 2
            elif e == _E_PARAMS_END:
                b.func_params[fname] = params
                i += 1
            elif e == _E_RET:
                b.func_ret[fname], i = struct(i + 1)
                fname, params = stack.pop()
            else:
                raise IRError(f"the native read gave an unknown record {e}", function=top)
        if const_ids:
            ids = np.array(const_ids, np.int64)
            b.const_ids.frombytes(ids.astype(np.int32).tobytes())
            b.const_keys.frombytes(np.frombuffer(read.handles, np.int64)[ids - first].tobytes())
        if dropped:
            sites._drop(dropped)
        self.edges(view)
        view._unmapped.append((read.handles, first))

    def sites(self, sites: SiteTable) -> int:
        """Add this read's site columns; the index of its first site."""
        base = len(sites)
        at, calls = sites._at, sites._calls
        if len(at) < 2 * base:  # (sites added by value have no entry)
            at.extend(repeat(-1, 2 * base - len(at)))
            calls.extend(repeat(-1, base - len(calls)))
        calls.frombytes(self.site_call)
        # (numpy's take on object arrays: a C loop, where map calls a method per site)
        sites.value_id += memoryview(self.site_vid).cast("i").tolist()
        names = np.array(self.strings, dtype=object)
        sites.op += names[np.frombuffer(self.site_name, np.int32)].tolist()
        sites.out += memoryview(self.site_out).cast("i").tolist()
        kinds = np.frombuffer(self.site_kind, np.uint8)
        sites._args += _ARGS_OF_KIND[kinds].tolist()
        sites._attrs += _ATTRS_OF_KIND[kinds].tolist()
        at.frombytes(self.site_at)
        sites._flat.frombytes(self.flat)
        sites._attrs_info.frombytes(self.attrs)
        sites._tables.append((base, self.table))
        return base

    def edges(self, view: DependencyView) -> None:
        """Add this read's edges (before its values can be looked up: a var to look up
        is one of an earlier function, and those the view has no value for go)."""
        src = np.frombuffer(self.edge_src, np.int32)
        if len(src) and src.min() < 0:
            get, table = view.value_of.get, self.table
            dst = memoryview(self.edge_dst).cast("i")
            pairs = [(s if s >= 0 else get(_get(table, -1 - s).__chandle__()), d)
                     for s, d in zip(src.tolist(), dst)]
            view.edge_src.extend([s for s, _ in pairs if s is not None])
            view.edge_dst.extend([d for s, d in pairs if s is not None])
        else:
            view.edge_src.frombytes(self.edge_src)
            view.edge_dst.frombytes(self.edge_dst)

    def view_leaves(self) -> DependencyView:
        """The view, with this read's leaves (and their static shapes) added."""
        view = self.b.view
        first = len(view.leaf_ndim)
        view.leaf_ndim += memoryview(self.leaf_ndim).cast("i").tolist()
        view.leaf_type.add_native(self.table, memoryview(self.leaf_type).cast("i"))
        view.leaf_value.frombytes(self.leaf_owner)
        shapes, table = self.shapes, view._static_table
        at = 0
        while at < len(shapes):
            k = shapes[at]
            table.append(list(shapes[at + 1:at + 1 + k]))
            at += 1 + k
        ids = view._static_ids
        if len(ids) < first:
            ids.extend(repeat(-1, first - len(ids)))
        ids.frombytes(self.leaf_static)
        return view


def build_view(mod: tvm.IRModule, entry: str = "main", entry_read: Any = None) -> DependencyView:
    """Build the dependency view of `entry` and every function it calls.

    `entry_read`: the native read of the entry function made already, as the native
    `read` gives it with every base 0 and no constant known (its arrays), or the text of
    its error (that function is read in Python); only where the native walk is on
    (annotate's one walk: joint_read.py).
    """
    return _Builder(mod, entry, entry_read).build()

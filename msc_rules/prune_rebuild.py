"""Rebuild a pruned function with the types the prune knows, instead of re-inferring them.

A prune changes static extents only (prune.py's `_new_extents`: leaf -> axis -> new
extent), so a tensor's new type is its old one with those dims made smaller. The
rebuild constructs every changed binding directly with that type (no normalisation:
TVM's type inference per call costs more than all the rest of a prune), keeps
unchanged bindings as they are, and leaves spans and names untouched.
`tests/test_prune.py` checks the supplied types against TVM's own inference on every
binding, and the whole result against the fallback's.

It covers the entry function of a module without other Relax functions, with the
bindings frontends emit (calls, aliases, tuples, tuple items); anything else returns
None and the caller re-infers with TVM (prune.py's `_Rewriter`). The native rebuild
(native/prune.cc) does the same walk in C++ when the native walk is available: the
Python one is for a function it hands back, and for `MSC_RULES_NATIVE=0`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax import _ffi_api as _relax_ffi
from tvm_ffi._ffi_api import StructuralHash as _structural_hash

from . import native as _native
from .channel_native import shared_words
from .ffi import items
from .graph import DependencyView, Struct
from .graph import NativeValue as _NativeValue
from .graph import Value as _Value
from .prune_consts import Consts, ConstSlices
from .prune_cut import NewExtents, static_shape_id
from .rewrite import (
    _MAKE_BINDING,
    _MAKE_CALL,
    _MAKE_CONST,
    _MAKE_DATAFLOW_VAR,
    _MAKE_VAR,
    _with_type,
)

Extents = Mapping[int, Mapping[int, int]]
"""New extents per leaf and axis (the axes a prune shrinks)."""
CallEdit = Callable[[Any, list[Any], Any], tuple[list[Any], Any]]
"""(call, its arguments and attrs as rebuilt so far) -> (arguments, attrs): the prune's
own edits of a call (reshape shapes, conv group counts), by the call's handle."""

_Var = tvm.ir.expr.Var
_Call = tvm.ir.expr.Call
_Const = tvm.ir.expr.GenericConst
_Tuple = tvm.ir.expr.Tuple
_TupleGetItem = tvm.ir.expr.TupleGetItem
_DataflowVar = relax.DataflowVar
_VarBinding = relax.VarBinding
_TensorType = relax.TensorType
_TupleType = tvm.ir.type.TupleType
_ShapeExpr = relax.ShapeExpr
_MAKE_TENSOR_TYPE = _relax_ffi.TensorType
_MAKE_SHAPE = _relax_ffi.ShapeExpr


class Retyper:
    """New types from old ones and the new extents; a new type is built once per old
    type and extents, and shared."""

    def __init__(self, extents: Extents) -> None:
        self.extents = extents
        self.memo: dict[tuple[Any, ...], Any] = {}

    def __call__(self, ty: Any, struct: Struct) -> Any:
        """`ty` (the type of a value whose leaves are `struct`) after the prune."""
        if type(struct) is int:
            axes = self.extents.get(struct)
            return self.tensor(ty, struct, axes) if axes else ty
        if type(struct) is tuple and isinstance(ty, _TupleType):
            fields = items(ty.fields)
            new = [self(f, s) for f, s in zip(fields, struct, strict=False)]
            if all(a is b for a, b in zip(new, fields, strict=False)):
                return ty
            return _TupleType(new)
        return ty

    def tensor(self, ty: Any, leaf: int, axes: Mapping[int, int]) -> Any:
        """A tensor type with the new extents (unchanged when its shape is unknown)."""
        if type(ty) is not _TensorType and not isinstance(ty, _TensorType):
            return ty
        # One FFI call hashes the whole type (shape, dtype, device): within a prune
        # equal hashes are equal types (as for the view's shapes, see graph.py), and
        # a module has few distinct ones.
        key = (_structural_hash(ty, False, False), tuple(axes.items()))
        got = self.memo.get(key)
        if got is not None:
            return got
        shape = ty.shape
        if type(shape) is not _ShapeExpr:
            return ty
        vals: list[Any] = items(shape.values)
        for axis, extent in axes.items():
            vals[axis] = extent
        new = self.memo[key] = _MAKE_TENSOR_TYPE(_MAKE_SHAPE(vals, None), ty.dtype, -1,
                                                 ty.vdevice, None)
        return new


def const_nodes(view: DependencyView, consts: ConstSlices, retype: Retyper) -> dict[int, Any]:
    """The new constants by the old ones' handles (for the Python rebuilds)."""
    return {expr.__chandle__(): _MAKE_CONST(data, retype(view.leaf_type[leaf], leaf),
                                            expr.span)
            for expr, leaf, data in consts}


class _Rebuild:
    def __init__(self, view: DependencyView, consts: Mapping[int, Any],
                 calls: Mapping[int, CallEdit], retype: Retyper) -> None:
        self.view, self.consts, self.calls, self.retype = view, consts, calls, retype
        self.remap: dict[int, Any] = {}

    def arg(self, a: Any) -> Any:
        """An argument or bound value with vars remapped and constants replaced; None
        for an expression the rebuild does not handle."""
        cls = type(a)
        if cls is _DataflowVar or cls is _Var:
            return self.remap.get(a.__chandle__(), a)
        if cls is _Const:
            return self.consts.get(a.__chandle__(), a)
        if cls is _Tuple:
            old = items(a.fields)
            new = [self.arg(f) for f in old]
            if any(f is None for f in new):
                return None
            if all(x is y for x, y in zip(new, old, strict=True)):
                return a
            return _Tuple(new, a.span)
        if cls is _TupleGetItem:
            old_tv = a.tuple_value
            tv = self.arg(old_tv)
            if tv is None:
                return None
            return a if tv is old_tv else _TupleGetItem(tv, a.index, a.span)
        if isinstance(a, (relax.If, relax.SeqExpr, relax.Function, _Call)):
            return None
        if isinstance(a, _Var):  # another var class
            return self.remap.get(a.__chandle__(), a)
        return a  # shapes, prim values, strings, globals: nothing to rebuild

    def binding(self, r: Any) -> Any:
        """One binding rebuilt (the old one when nothing in it changed); None when the
        rebuild does not handle it."""
        if type(r) is not _NativeValue and type(r) is not _Value:
            return None  # a local function (the native read's values are Values too)
        b = r.binding
        if type(b) is not _VarBinding:
            return None  # a match_cast
        var, value = r.expr, r.value
        old_args = r.args
        if old_args is not None:  # a call
            remap, consts = self.remap, self.consts
            args = []
            same = True
            for a in old_args:
                cls = type(a)
                # the common arguments inline: vars and constants
                if cls is _DataflowVar or cls is _Var:
                    x = remap.get(a.__chandle__(), a)
                elif cls is _Const:
                    x = consts.get(a.__chandle__(), a)
                else:
                    x = self.arg(a)
                    if x is None:
                        return None
                same = same and x is a
                args.append(x)
            edit = self.calls.get(value.__chandle__())
            old_ty = r.ty
            ty = self.retype(old_ty, r.struct)
            if same and edit is None and ty is old_ty:
                return b
            attrs = value.attrs
            if edit is not None:
                args, attrs = edit(value, args, attrs)
            new_value = _MAKE_CALL(ty, r.op, args, attrs, value.ty_args, value.span)
        else:
            new_value = self.arg(value)
            if new_value is None:
                return None
            old_ty = var.ty
            ty = self.retype(old_ty, r.struct)
            if ty is old_ty and new_value is value:
                return b
        if ty is not old_ty:
            make = _MAKE_DATAFLOW_VAR if type(var) is _DataflowVar else _MAKE_VAR
            new_var = make(var.name, ty, var.span)
            self.remap[var.__chandle__()] = new_var
            var = new_var
        return _MAKE_BINDING(var, new_value, b.span)

    def function(self, func: Any) -> Any:
        seq = func.body
        if type(seq) is not relax.SeqExpr:
            return None
        records = self.view.block_records
        blocks = []
        for block in items(seq.blocks):
            got = records.get(block.__chandle__())
            if got is None:
                return None
            bindings = []
            for r in got[1]:
                nb = self.binding(r)
                if nb is None:
                    return None
                bindings.append(nb)
            cls = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) \
                else relax.BindingBlock
            blocks.append(cls(bindings, block.span))
        body = self.arg(seq.body)
        if body is None:
            return None
        new_seq = relax.SeqExpr(blocks, body, seq.span)
        _with_type(new_seq, body)
        return _function(func, new_seq, self.view, self.retype)


fallbacks: list[tuple[str, str]] = []
"""(function, reason) for every function the native prune rebuild handed back to
Python (the last 100): what the tests check to know the native path really ran."""

_SHAPE_OPS = ("relax.reshape", "relax.broadcast_to")


def _native_cuts(view: DependencyView, consts: Consts, retype: Retyper
                 ) -> tuple[np.ndarray, bytes, list[Any]] | None:
    """The new types as the native rebuild takes them: (handle, static shape id, n,
    n (axis, extent) pairs) records for tensor bindings and sliced constants, and the types of tuple
    bindings whole (their handles, their types); None when an extent is not a static
    int."""
    extents = retype.extents
    if isinstance(extents, NewExtents):  # (all static, as arrays: records made at once)
        try:  # (the view's values are read as graph.py keeps them: see prune_cut._values)
            records, tuples = extents.records(), extents.tuples()
        except (AttributeError, TypeError, ValueError):
            records = None
        if records is not None:
            typed_keys: list[int] = []
            typed: list[Any] = []
            for vid in tuples:
                var = view.values[vid].expr
                ty = var.ty
                new = retype(ty, view.values[vid].struct)
                if new is not ty:
                    typed_keys.append(var.__chandle__())
                    typed.append(new)
            return (records, np.array(typed_keys, dtype=np.int64).tobytes(),
                    typed)
    cuts: list[int] = []  # (a list, made an array once: array.append parses each)
    add = cuts.extend
    sliced = consts.keys()  # (listed only here: the array path above needs no list)
    leaf_value = view.leaf_value
    for expr, leaf in sliced:
        axes = extents.get(leaf)
        if axes:
            add((expr.__chandle__(), static_shape_id(view, leaf_value[leaf], leaf),
                 len(axes)))
            for pair in axes.items():
                if type(pair[1]) is not int:
                    return None  # (a symbolic product: the Python rebuild makes it)
                add(pair)
    typed_keys = []
    typed = []
    native_value = _NativeValue
    # (by value, not by leaf: an alias or a tuple item shares its source's leaves)
    for v in view.values:
        struct = v.struct
        if type(struct) is int:
            axes = extents.get(struct)
            if not axes or v.kind != "binding":
                continue
            add((v.handles()[0] if type(v) is native_value else v.expr.__chandle__(),
                 static_shape_id(view, v.id, struct), len(axes)))
            for pair in axes.items():
                if type(pair[1]) is not int:
                    return None
                add(pair)
        elif type(struct) is tuple and v.kind == "binding":
            var = v.expr
            ty = var.ty
            new = retype(ty, struct)
            if new is not ty:
                typed_keys.append(var.__chandle__())
                typed.append(new)
    return (np.array(cuts, dtype=np.int64),
            np.array(typed_keys, dtype=np.int64).tobytes(), typed)


def _native_function(native: Any, func: Any, view: DependencyView, consts: Consts,
                     attrs: Mapping[int, Any], retype: Retyper) -> Any:
    """`func` rebuilt by native/prune.cc; None when it hands the function back."""
    packed = _native_cuts(view, consts, retype)
    slices = consts.native()
    if packed is None or slices is None:
        return None
    cuts, typed_keys, typed = packed
    shape_ops = [tvm.ir.Op.get(name) for name in _SHAPE_OPS]
    try:
        seq = native.prune_rebuild(func.body, shared_words(cuts), typed_keys, typed,
                                   shared_words(slices[0]),
                                   np.array([e.__chandle__() for e, _ in slices[1]],
                                            dtype=np.int64).tobytes(),
                                   [data for _, data in slices[1]],
                                   np.array(list(attrs), dtype=np.int64).tobytes(),
                                   list(attrs.values()),
                                   shape_ops)
    except Exception as err:  # a node it does not handle: the Python rebuild does it
        _native.note_refusal(fallbacks, (view.entry, _native.refusal(err)))
        return None
    return _function(func, seq, view, retype)


def _function(func: Any, seq: Any, view: DependencyView, retype: Retyper) -> Any:
    """`func` with the rebuilt body `seq` and its return type after the prune."""
    vid = view.value_id(func.body.body)  # (the old body: the view's)
    struct = view.values[vid].struct if vid is not None else None
    ret = func.ret_ty
    if ret is not None and struct is not None:
        ret = retype(ret, struct)
    return relax.Function(list(items(func.params)), seq, ret, func.is_pure,
                          func.attrs, func.span)


def rebuild(mod: tvm.IRModule, view: DependencyView, consts: Consts,
            attrs: Mapping[int, Any], retype: Retyper,
            calls: Callable[[], Mapping[int, CallEdit]]) -> tvm.IRModule | None:
    """`mod` with the entry function rebuilt (see the module docstring); None when the
    module holds what this rebuild does not handle. `consts`: the constants it changes;
    `attrs`: new attributes by call
    handle; `calls`: all the edits of calls (those and the reshape shapes) for the
    Python rebuild, asked for only if it runs."""
    if len(view.functions) != 1 or any(
            isinstance(f, relax.Function) and gv.name_hint != view.entry
            for gv, f in mod.functions_items()):
        return None
    gv = mod.get_global_var(view.entry)
    func = mod[gv]
    native = _native.get()
    new = None
    if native is not None and type(func.body) is relax.SeqExpr:
        new = _native_function(native, func, view, consts, attrs, retype)
    if new is None:
        new = _Rebuild(view, const_nodes(view, consts.made(), retype), calls(),
                       retype).function(func)
    if new is None:
        return None
    return tvm.IRModule({g: new if g.same_as(gv) else f for g, f in mod.functions_items()},
                        attrs=mod.attrs, global_infos=mod.global_infos)

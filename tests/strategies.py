"""Hypothesis strategies: random Relax modules built with `tvm.relax.BlockBuilder`.

`relax_modules()` draws a module whose `main` is a random program over the op families
the rule library covers:

- elementwise unary ops (relu, exp, sigmoid, gelu, astype, softmax, ...);
- broadcasting binary ops, with size-1 axes on either side and operands of lower rank;
- reductions (sum, mean, max, variance, ...) with and without keepdims;
- permute_dims, reshape (merge, split, unit axes), flatten, expand_dims, squeeze;
- concat, split (sections and indices; a tuple), stack;
- matmul (weights, vectors, batched, x @ x^T), conv1d/conv2d (NCHW and NHWC),
  max/avg/adaptive pools, layer_norm, batch_norm (a tuple), take;
- tuples, nested tuples and TupleGetItem chains;
- symbolic dims (`tvm.tirx.Var(name, "int64")`, shared by several inputs), which can
  also make a tensor's rank unknown (squeeze of a symbolic shape);
- local functions (bound with `f = R.function`, then called) and calls to other global
  functions (which may call further globals).

Every draw is a legal module (`relax.analysis.well_formed` passes; checked by
tests/test_random_modules.py). Operands an op needs are new parameters (added to
`main` as they are needed) or constants; inside helper functions, where parameters
are fixed by the call, only constants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from hypothesis import strategies as st
from tvm import relax
from tvm.relax import op as O
from tvm_ffi import structural_equal

Dim = Any  # a Python int (static) or a tvm PrimExpr (symbolic)

UNARY = ("relu", "exp", "sigmoid", "tanh", "negative", "gelu", "silu", "sqrt", "abs",
         "astype", "softmax", "log_softmax")
BINARY = ("add", "multiply", "subtract", "divide", "maximum", "minimum")
REDUCE = ("sum", "mean", "max", "min", "prod", "variance")
OPS = ("unary", "binary", "reduce", "permute", "reshape", "expand_squeeze", "concat",
       "split", "stack", "matmul", "conv", "pool", "norm", "take", "tuple", "call_global",
       "call_local")
HELPER_OPS = ("unary", "binary", "reduce", "permute", "reshape", "expand_squeeze",
              "concat", "matmul", "norm", "take", "call_global")


def static(d: Dim) -> bool:
    return isinstance(d, int)


def dims_of(v: Any) -> list[Dim] | None:
    """The shape of a tensor-typed expr as ints and PrimExprs (None when unknown)."""
    return dims_of_type(v.ty)


def dims_of_type(ty: Any) -> list[Dim] | None:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    values = getattr(ty.shape, "values", None)
    if values is None:
        return None
    return [int(d.value) if isinstance(d, tvm.prim.IntImm) else d for d in values]


def rank_of(v: Any) -> int:
    ty = v.ty
    return int(ty.ndim) if isinstance(ty, relax.TensorType) else -1


def dtype_of(v: Any) -> str:
    return str(v.ty.dtype)


@dataclass
class _Module:
    """State shared by main and the helper functions of one drawn module."""

    draw: Callable[[st.SearchStrategy[Any]], Any]
    symbols: list[Any]
    bb: relax.BlockBuilder = field(default_factory=relax.BlockBuilder)
    helpers: list[tuple[Any, list[Any]]] = field(default_factory=list)  # (gv, param types)
    n_funcs: int = 0


class _Body:
    """Emits the random program of one function into a BlockBuilder."""

    def __init__(self, mod: _Module, bb: relax.BlockBuilder, *, helper: bool,
                 depth: int, params: list[Any]) -> None:
        self.m = mod
        self.draw = mod.draw
        self.bb = bb
        self.helper = helper
        self.depth = depth
        self.params = list(params)
        self.tensors: list[Any] = list(params)
        self.tuples: list[Any] = []
        self.n_inputs = len(params)

    # ---- drawing helpers
    def pick(self, seq: Any) -> Any:
        seq = list(seq)
        return seq[self.draw(st.integers(0, len(seq) - 1))] if len(seq) > 1 else seq[0]

    def flag(self) -> bool:
        return bool(self.draw(st.booleans()))

    def tensor(self, pred: Callable[[Any], bool] = lambda v: True) -> Any | None:
        cands = [t for t in self.tensors if pred(t)]
        return self.pick(cands) if cands else None

    def emit(self, expr: Any) -> Any:
        v = self.bb.emit(expr)
        if isinstance(v.ty, relax.TensorType):
            self.tensors.append(v)
        elif isinstance(v.ty, tvm.ir.type.TupleType):
            self.tuples.append(v)
        return v

    def dim(self) -> Dim:
        choices: list[Dim] = [1, 2, 3, 4, 6, 8]
        if self.m.symbols and not self.helper:
            choices += list(self.m.symbols)
        return self.pick(choices)

    def new_input(self, shape: list[Dim], dtype: str = "float32",
                  const_ok: bool = True) -> Any | None:
        """A new operand: a constant (static shapes) or a new parameter of main."""
        if all(static(d) for d in shape) and const_ok and (self.helper or self.flag()):
            n = int(np.prod(shape)) if shape else 1
            data = (np.arange(n) % 3).reshape(shape).astype(dtype)
            return relax.const(data, dtype)
        if self.helper:
            return None
        v = relax.Var(f"p{self.n_inputs}", relax.TensorType(shape, dtype))
        self.n_inputs += 1
        self.params.append(v)
        if dtype.startswith("float"):  # indices are no operands for the other ops
            self.tensors.append(v)
        return v

    def new_param(self) -> Any | None:
        """A new parameter of rank 1 to 4 (main's first input)."""
        r = self.draw(st.integers(1, 4))
        return self.new_input([self.dim() for _ in range(r)], const_ok=False)

    # ---- the program
    def run(self, max_ops: int, min_ops: int = 1) -> Any:
        if not self.tensors:
            self.new_param()
        ops = HELPER_OPS if self.helper else OPS
        # the op families are drawn up front, as one list: hypothesis then varies and
        # shrinks the program as a whole (fewer, simpler ops) rather than op by op
        for op in self.draw(st.lists(st.sampled_from(ops), min_size=min_ops,
                                           max_size=max_ops)):
            if not getattr(self, "op_" + op)():
                self.op_unary()
        return self.output()

    def output(self) -> Any:
        last = self.tensors[-1]
        if self.helper or (not self.tuples and len(self.tensors) < 2):
            return last
        kind = self.pick(["last", "pair", "tuple"])
        if kind == "pair":
            return self.emit(relax.Tuple([self.tensors[-2], last]))
        if kind == "tuple" and self.tuples:
            return self.tuples[-1]
        return last

    # ---- op families (each returns False when it cannot apply)
    def op_unary(self) -> bool:
        x = self.tensor(lambda v: dtype_of(v) == "float32")
        if x is None:
            x = self.tensor()
        assert x is not None
        name = self.pick(UNARY)
        if name == "astype":
            self.emit(O.astype(x, self.pick(["float16", "float32"])))
        elif name in ("softmax", "log_softmax"):
            r = rank_of(x)
            if r < 1:
                self.emit(O.nn.relu(x))
                return True
            f = O.nn.softmax if name == "softmax" else O.nn.log_softmax
            self.emit(f(x, axis=self.draw(st.integers(-r, r - 1))))
        else:
            f = {"relu": O.nn.relu, "gelu": O.nn.gelu, "silu": O.nn.silu}.get(name) \
                or getattr(O, name)
            self.emit(f(x))
        return True

    def op_binary(self) -> bool:
        x = self.tensor(lambda v: dims_of(v) is not None)
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        kind = self.pick(["self", "same", "suffix", "stretch"])
        y: Any = None
        if kind == "self":
            y = x
        elif kind == "same":
            y = self.tensor(lambda v: v is not x and dtype_of(v) == dtype_of(x)
                            and dims_of(v) is not None
                            and structural_equal(v.ty, x.ty))
        elif kind == "suffix":  # lower rank, some axes of size 1
            k = self.draw(st.integers(0, len(shape)))
            y = self.new_input([1 if self.flag() else d for d in shape[k:]], dtype_of(x))
        else:  # size-1 axes on both sides: y stretches x's unit axes, may add leading axes
            lead = [self.pick([2, 3]) for _ in range(self.draw(st.integers(0, 1)))]
            body = [self.pick([1, 2, 3]) if static(d) and d == 1 else
                    (1 if self.flag() else d) for d in shape]
            y = self.new_input(lead + body, dtype_of(x))
        if y is None:
            y = x
        a, b = (x, y) if self.flag() else (y, x)
        self.emit(getattr(O, self.pick(BINARY))(a, b))
        return True

    def op_reduce(self) -> bool:
        x = self.tensor(lambda v: rank_of(v) >= 1 and dtype_of(v) == "float32")
        if x is None:
            return False
        r = rank_of(x)
        axes: Any = None
        if self.flag():
            chosen = self.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r,
                                        unique=True))
            axes = [a - r if self.flag() else a for a in chosen]
        self.emit(getattr(O, self.pick(REDUCE))(x, axis=axes, keepdims=self.flag()))
        return True

    def op_permute(self) -> bool:
        x = self.tensor(lambda v: rank_of(v) >= 1)
        if x is None:
            return False
        r = rank_of(x)
        axes = None if self.flag() else self.draw(st.permutations(list(range(r))))
        self.emit(O.permute_dims(x, axes))
        return True

    def op_reshape(self) -> bool:
        x = self.tensor(lambda v: dims_of(v) is not None and rank_of(v) >= 1)
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        r = len(shape)
        kind = self.pick(["merge", "split", "unit", "flatten"])
        if kind == "merge" and r >= 2:
            i = self.draw(st.integers(0, r - 2))
            new = [*shape[:i], shape[i] * shape[i + 1], *shape[i + 2:]]
        elif kind == "split" and any(static(d) and d in (4, 6, 8) for d in shape):
            i = self.pick([k for k, d in enumerate(shape) if static(d) and d in (4, 6, 8)])
            f = 2 if shape[i] != 6 or self.flag() else 3
            new = [*shape[:i], f, shape[i] // f, *shape[i + 1:]]
        elif kind == "unit":
            i = self.draw(st.integers(0, r))
            new = [*shape[:i], 1, *shape[i:]]
        else:
            self.emit(O.flatten(x))
            return True
        self.emit(O.reshape(x, new))
        return True

    def op_expand_squeeze(self) -> bool:
        x = self.tensor(lambda v: rank_of(v) >= 0)
        if x is None:
            return False
        r = rank_of(x)
        shape = dims_of(x)
        ones = [i for i, d in enumerate(shape or []) if static(d) and d == 1]
        if ones and self.flag():
            if self.flag() or shape is None:
                axes = self.draw(st.lists(st.sampled_from(ones), min_size=1, unique=True))
                self.emit(O.squeeze(x, [a - r if self.flag() else a for a in axes]))
            else:
                self.emit(O.squeeze(x))  # symbolic dims: the result's rank is unknown
            return True
        axis = self.draw(st.integers(-(r + 1), r))
        self.emit(O.expand_dims(x, axis))
        return True

    def op_concat(self) -> bool:
        x = self.tensor(lambda v: dims_of(v) is not None and rank_of(v) >= 1)
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        axis = self.draw(st.integers(0, len(shape) - 1))
        other = [*shape[:axis], self.pick([1, 2, 3]), *shape[axis + 1:]]
        y = x if self.flag() else self.new_input(other, dtype_of(x))
        parts = [x, x if y is None else y]
        if self.flag():
            axis -= len(shape)
        self.emit(O.concat(parts, axis=axis))
        return True

    def op_split(self) -> bool:
        x = self.tensor(lambda v: any(static(d) and d in (2, 3, 4, 6, 8)
                                      for d in dims_of(v) or []))
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        axis = self.pick([i for i, d in enumerate(shape) if static(d) and d in (2, 3, 4, 6, 8)])
        size = shape[axis]
        how: Any = self.pick([s for s in (2, 3) if size % s == 0]
                             + [[1]] + ([[1, size - 1]] if size > 2 else []))
        t = self.emit(O.split(x, how, axis=axis))
        nfields = len(t.ty.fields)
        for i in sorted(set(self.draw(st.lists(st.integers(0, nfields - 1), min_size=1,
                                               max_size=2)))):
            self.emit(relax.TupleGetItem(t, i))
        return True

    def op_stack(self) -> bool:
        x = self.tensor(lambda v: dims_of(v) is not None)
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        y = x if self.flag() else self.new_input(list(shape), dtype_of(x))
        self.emit(O.stack([x, x if y is None else y], axis=self.draw(st.integers(0, len(shape)))))
        return True

    def op_matmul(self) -> bool:
        x = self.tensor(lambda v: dims_of(v) is not None and rank_of(v) >= 1
                        and dtype_of(v) == "float32")
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        k = shape[-1]
        kind = self.pick(["weight", "vector", "batched", "self"])
        if kind == "self" and len(shape) >= 2:
            perm = [*range(len(shape) - 2), len(shape) - 1, len(shape) - 2]
            xt = self.emit(O.permute_dims(x, perm))
            self.emit(O.matmul(x, xt))
            return True
        if kind == "vector":
            w = self.new_input([k])
        elif kind == "batched" and len(shape) >= 3:
            w = self.new_input([*shape[:-2], k, self.pick([2, 4])])
        else:
            w = self.new_input([k, self.pick([2, 3, 4])])
        if w is None:
            return False
        self.emit(O.matmul(x, w))
        return True

    def _image(self, rank: int) -> tuple[Any, str]:
        """A float32 tensor of `rank` with a static channel axis and spatial axes of at
        least 2 (a pool tensor or a new input), and its layout (NC.. or N..C)."""
        nhwc = self.flag()
        chan = rank - 1 if nhwc else 1
        spatial = list(range(1, rank - 1)) if nhwc else list(range(2, rank))

        def fits(v: Any) -> bool:
            d = dims_of(v)
            return (rank_of(v) == rank and dtype_of(v) == "float32" and d is not None
                    and static(d[chan]) and all(not static(d[i]) or d[i] >= 2 for i in spatial))

        x = self.tensor(fits)
        if x is None:
            sizes = [self.pick([3, 4, 6]) for _ in spatial]
            batch = self.pick([1, 2, *self.m.symbols]) if not self.helper else 1
            chans = self.pick([1, 2, 3])
            x = self.new_input([batch, *sizes, chans] if nhwc else [batch, chans, *sizes])
        layout = {3: "NCW", 4: "NCHW"}[rank]
        if nhwc:
            layout = layout[0] + layout[2:] + "C"
        return x, layout

    def op_conv(self) -> bool:
        rank = self.pick([4, 3])
        x, layout = self._image(rank)
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        nhwc = layout.endswith("C")
        c = shape[-1] if nhwc else shape[1]
        ks = self.pick([1, 3])
        o = self.pick([2, 4])
        klayout = ("OI" + layout[2:]) if not nhwc else ("O" + layout[1:-1] + "I")
        wshape = [o, c, *([ks] * (rank - 2))] if not nhwc else [o, *([ks] * (rank - 2)), c]
        w = self.new_input(wshape)
        if w is None:
            return False
        f = O.nn.conv2d if rank == 4 else O.nn.conv1d
        self.emit(f(x, w, padding=ks // 2, data_layout=layout, kernel_layout=klayout))
        return True

    def op_pool(self) -> bool:
        x, layout = self._image(4)
        if x is None:
            return False
        kind = self.pick(["max", "avg", "adaptive"])
        if kind == "adaptive":
            self.emit(O.nn.adaptive_avg_pool2d(x, self.pick([None, [1, 1]]), layout=layout))
        else:
            f = O.nn.max_pool2d if kind == "max" else O.nn.avg_pool2d
            self.emit(f(x, pool_size=self.pick([1, 2]), strides=self.pick([1, 2]),
                        layout=layout))
        return True

    def op_norm(self) -> bool:
        x = self.tensor(lambda v: dims_of(v) is not None and rank_of(v) >= 2
                        and dtype_of(v) == "float32")
        if x is None:
            return False
        shape = dims_of(x)
        assert shape is not None
        if self.flag():
            g, b = self.new_input([shape[-1]]), self.new_input([shape[-1]])
            if g is None or b is None:
                return False
            self.emit(O.nn.layer_norm(x, g, b, axes=[-1]))
            return True
        ps = [self.new_input([shape[1]]) for _ in range(4)]
        if any(p is None for p in ps):
            return False
        t = self.emit(O.nn.batch_norm(x, *ps, axis=1))
        self.emit(relax.TupleGetItem(t, 0))
        return True

    def op_take(self) -> bool:
        x = self.tensor(lambda v: dims_of(v) is not None and rank_of(v) >= 1)
        if x is None:
            return False
        r = rank_of(x)
        axis = self.draw(st.integers(0, r - 1))
        if self.flag():
            idx: Any = relax.const(np.int64(0))  # a scalar index drops the axis
        else:
            idx = self.new_input([self.pick([1, 2, 3])], "int64")
            if idx is None:
                return False
        self.emit(O.take(x, idx, axis=axis))
        return True

    def op_tuple(self) -> bool:
        fields = [self.tensor() for _ in range(self.draw(st.integers(1, 3)))]
        if self.tuples and self.flag():
            fields.append(self.pick(self.tuples))  # a nested tuple
        t = self.emit(relax.Tuple(fields))
        path: Any = t
        ty = t.ty
        while isinstance(ty, tvm.ir.type.TupleType) and len(ty.fields):
            i = self.draw(st.integers(0, len(ty.fields) - 1))
            path = relax.TupleGetItem(path, i)
            ty = ty.fields[i]
            if not self.flag():
                break
        self.emit(path)
        return True

    def callable_arg(self) -> Any | None:
        """A tensor whose dims are static or plain symbols: a parameter of that type
        defines its symbols (a product like n*4 would not)."""
        return self.tensor(lambda v: all(static(d) or isinstance(d, tvm.tirx.Var)
                                         for d in dims_of(v) or []))

    def param_type(self, ty: Any) -> Any:
        """`ty` with fresh symbols: a global function must not share the caller's."""
        shape = dims_of_type(ty)
        if shape is None:
            return ty
        fresh = {}
        for d in shape:
            if not static(d):
                fresh.setdefault(d.name, tvm.tirx.Var(d.name, "int64"))
        return relax.TensorType([d if static(d) else fresh[d.name] for d in shape], ty.dtype)

    def op_call_global(self) -> bool:
        if self.depth >= 2:
            return False
        args = [self.callable_arg() for _ in range(self.draw(st.integers(1, 2)))]
        if any(a is None for a in args):
            return False
        # reuse a helper of the same parameter types now and then (a function called twice)
        types = [a.ty for a in args]
        for gv, ptypes in self.m.helpers:
            if len(ptypes) == len(types) and all(
                    structural_equal(p, t) for p, t in zip(ptypes, types)) \
                    and self.flag():
                self.emit(relax.Call(gv, args))
                return True
        name = f"helper_{self.m.n_funcs}"
        self.m.n_funcs += 1
        func = self.sub_function(name, [self.param_type(t) for t in types])
        gv = self.m.bb.add_func(func, name)
        self.m.helpers.append((gv, types))
        self.emit(relax.Call(gv, args))
        return True

    def op_call_local(self) -> bool:
        if self.depth >= 2:
            return False
        x = self.callable_arg()
        if x is None:
            return False
        func = self.sub_function("local", [self.param_type(x.ty)]).without_attr("global_symbol")
        f = self.bb.emit(func)
        self.emit(relax.Call(f, [x]))
        return True

    def sub_function(self, name: str, types: list[Any]) -> Any:
        """A function of `types` with a short random body (constants only as operands)."""
        bb = relax.BlockBuilder()
        params = [relax.Var(f"a{i}", ty) for i, ty in enumerate(types)]
        with bb.function(name, params):
            body = _Body(self.m, bb, helper=True, depth=self.depth + 1, params=params)
            dataflow = self.flag()
            if dataflow:
                with bb.dataflow():
                    out = bb.emit_output(body.run(3))
            else:
                out = body.run(3)
            bb.emit_func_output(out)
        return bb.get()[name]


@st.composite
def relax_modules(draw: Callable[[st.SearchStrategy[Any]], Any], max_ops: int = 12) -> tvm.IRModule:
    """A random, well-formed Relax module with a `main` of up to `max_ops` op steps."""
    n_symbols = draw(st.integers(0, 2))
    mod = _Module(draw, [tvm.tirx.Var(s, "int64") for s in ("n", "m")[:n_symbols]])
    bb = mod.bb
    with bb.function("main"):
        body = _Body(mod, bb, helper=False, depth=0, params=[])
        if draw(st.booleans()):
            with bb.dataflow():
                out = bb.emit_output(body.run(max_ops, min(4, max_ops)))
        else:
            out = body.run(max_ops, min(4, max_ops))
        bb.emit_func_output(out, body.params)
    return bb.get()

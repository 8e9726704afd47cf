"""Synthetic Relax modules for benchmarks: a conv/add/relu/reshape/permute chain."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def conv_chain(n_bindings: int, channels: int = 8, size: int = 8) -> tvm.IRModule:
    """A `main` of about `n_bindings` bindings cycling conv2d, add, relu, reshape,
    permute_dims, permute_dims, reshape (7 bindings a cycle), each conv with its own
    weight and bias constants."""
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, channels, size, size], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            v: relax.Expr = x
            emitted = 0
            while emitted < n_bindings:
                w = relax.const(rng.standard_normal((channels, channels, 3, 3), dtype="float32"))
                b = relax.const(rng.standard_normal((1, channels, 1, 1), dtype="float32"))
                v = bb.emit(relax.op.nn.conv2d(v, w, padding=[1, 1, 1, 1]))
                v = bb.emit(relax.op.add(v, b))
                v = bb.emit(relax.op.nn.relu(v))
                v = bb.emit(relax.op.reshape(v, [1, channels, size * size]))
                v = bb.emit(relax.op.permute_dims(v, [0, 2, 1]))
                v = bb.emit(relax.op.permute_dims(v, [0, 2, 1]))
                v = bb.emit(relax.op.reshape(v, [1, channels, size, size]))
                emitted += 7
            out = bb.emit_output(v)
        bb.emit_func_output(out)
    return bb.get()


def count_bindings(mod: tvm.IRModule, func: str = "main") -> int:
    """Bindings in the blocks of `func` (not nested)."""
    return sum(len(b.bindings) for b in mod[func].body.blocks)

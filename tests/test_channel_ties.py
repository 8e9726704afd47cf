"""The native channel ties walk (native/ties.cc, msc_rules/channel_native.py) gives the
Python walk's channel graph field for field, on modules of every op it takes (convs of
each kind, linear layers with permuted weights, matmuls of activations, reshapes that
merge, split and undo, broadcasts, ops without a channel rule, weights as parameters);
a module it does not take is walked in Python, with the reason recorded."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax

import msc_rules
from msc_rules import channel_native
from msc_rules.channel_graph import ChannelGraph, _Builder, channel_graph, op_family
from msc_rules.native import NativeBuildError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic import conv_chain

_FIELDS = ("base", "node_leaf", "producers", "consumers", "derived", "blocked",
           "weight_leaves", "weight_views", "io_leaves", "depthwise", "shape_sites",
           "depthwise_sites", "class_ext", "composite", "parts", "folds")


@pytest.fixture(autouse=True)
def _native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSC_RULES_NATIVE", "1")
    try:
        msc_rules.native.load()
    except NativeBuildError as err:
        pytest.skip(f"no native walk: {err}")


def _const(rng: np.random.Generator, *shape: int) -> relax.Constant:
    return relax.const(rng.standard_normal(shape).astype("float32"))


def _cnn() -> tvm.IRModule:
    """Plain, depthwise, grouped, grouped transposed convs and one with a computed weight,
    broadcast biases, a flatten after an NHWC permute into a linear."""
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 4, 6, 6], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, _const(rng, 8, 4, 3, 3), padding=1))
            y = bb.emit(relax.op.add(y, _const(rng, 1, 8, 1, 1)))
            y = bb.emit(relax.op.nn.relu(y))
            y = bb.emit(relax.op.nn.conv2d(y, _const(rng, 8, 1, 3, 3), padding=1, groups=8))
            y = bb.emit(relax.op.nn.conv2d(y, _const(rng, 8, 2, 1, 1), groups=4))
            y = bb.emit(relax.op.nn.conv2d(y, _const(rng, 6, 4, 1, 1), groups=2))
            w = bb.emit(relax.op.multiply(_const(rng, 6, 6, 1, 1), relax.const(2.0)))
            y = bb.emit(relax.op.nn.conv2d(y, w))
            y = bb.emit(relax.op.nn.conv2d_transpose(y, _const(rng, 6, 2, 2, 2), strides=2,
                                                     groups=2))
            y = bb.emit(relax.op.cumsum(y, axis=1))
            t = bb.emit(relax.op.permute_dims(y, [0, 2, 3, 1]))
            f = bb.emit(relax.op.reshape(t, [2, 12 * 12 * 4]))
            wt = bb.emit(relax.op.permute_dims(_const(rng, 5, 12 * 12 * 4), [1, 0]))
            out = bb.emit_output(relax.op.add(relax.op.matmul(f, wt), _const(rng, 5)))
        bb.emit_func_output(out)
    return bb.get()


def _attention() -> tvm.IRModule:
    """Linear layers on weights kept as parameters (num_input), q/k/v split into heads,
    a matmul of activations, the heads merged back, a reshape that undoes a merge."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 4, 16], "float32"))
    ws = [relax.Var(f"w{k}", relax.TensorType([16, 16], "float32")) for k in range(4)]
    with bb.function("main", [x, *ws], attrs={"num_input": 1}):
        with bb.dataflow():
            heads = []
            for w in ws[:3]:
                wt = bb.emit(relax.op.permute_dims(w))
                h = bb.emit(relax.op.matmul(x, wt))
                h = bb.emit(relax.op.reshape(h, [2, 4, 2, 8]))
                heads.append(bb.emit(relax.op.permute_dims(h, [0, 2, 1, 3])))
            q, k, v = heads
            s = bb.emit(relax.op.matmul(q, relax.op.permute_dims(k, [0, 1, 3, 2])))
            s = bb.emit(relax.op.multiply(s, relax.const(0.5)))
            o = bb.emit(relax.op.matmul(s, v))
            o = bb.emit(relax.op.permute_dims(o, [0, 2, 1, 3]))
            o = bb.emit(relax.op.reshape(o, [2, 4, 16]))
            m = bb.emit(relax.op.reshape(o, [8, 16]))
            m = bb.emit(relax.op.reshape(m, [2, 4, 16]))
            out = bb.emit_output(relax.op.matmul(m, relax.op.permute_dims(ws[3])))
        bb.emit_func_output(out)
    return bb.get()


def _graphs(mod: tvm.IRModule) -> tuple[ChannelGraph, ChannelGraph | None]:
    g = channel_graph(mod, layouts=False)
    result = g.result
    b = _Builder(result, result.rules)
    func = mod["main"]
    if func.attrs is not None and "num_input" in func.attrs:
        b.num_input = int(func.attrs["num_input"])
    return b.run(), channel_native.native_graph(
        result, lambda op: op_family(result.rules, op), b.num_input)


def _fields(g: ChannelGraph) -> dict[str, Any]:
    out: dict[str, Any] = {"roots": g.roots()}
    for name in _FIELDS:
        value = getattr(g, name)
        out[name] = list(value.items()) if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize("make", [lambda: conv_chain(70), _cnn, _attention],
                         ids=["conv_chain", "cnn", "attention"])
def test_native_ties_are_the_python_walks(make: Any) -> None:
    python, native = _graphs(make())
    assert native is not None, channel_native.fallbacks[-1:]
    assert _fields(native) == _fields(python)
    # the modules have what the comparison is about
    assert python.producers and python.consumers and python.derived and python.blocked
    assert python.composite or python.folds


@pytest.mark.parametrize("name", ["conv_bias_net", "grouped_net"])
def test_native_ties_of_imported_models(name: str) -> None:
    """Models through ONNX whose ops it takes (batch norms folded into the convs;
    grouped convs, an NHWC flatten into a linear)."""
    from channel_models import onnx_model

    python, native = _graphs(onnx_model(name)[0])
    assert native is not None, channel_native.fallbacks[-1:]
    assert _fields(native) == _fields(python)


def test_the_models_exercise_every_kind_of_tie() -> None:
    cnn, _ = _graphs(_cnn())
    att, _ = _graphs(_attention())
    assert cnn.depthwise and cnn.folds and cnn.weight_views and cnn.composite
    reasons = {r for rs in cnn.blocked.values() for r in rs}
    assert "op relax.cumsum has no channel rule" in reasons
    assert "conv with a computed weight" in reasons
    assert any("grouped conv" in r for r in reasons)
    assert att.weight_leaves and any(e.block < 0 for e in att.derived)
    assert "contracted by a matmul of two activations" in {
        r for rs in att.blocked.values() for r in rs}


def test_channel_groups_and_prune_are_the_same_either_way(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    mod = _cnn()
    got = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("MSC_RULES_NATIVE", mode)
        groups = msc_rules.channel_groups(mod)
        sel = {g.id: list(range(0, g.size, 2)) for g in groups
               if g.exact and not g.touches_io}
        assert sel
        got[mode] = ([(g.describe(), g.members) for g in groups],
                     msc_rules.prune(mod, sel, groups=groups))
    assert got["1"][0] == got["0"][0]
    assert tvm_ffi.structural_equal(got["1"][1], got["0"][1])


def test_a_module_the_native_walk_does_not_take_is_walked_in_python() -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 4, 6, 6], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ones((4, 4, 1, 1), "float32"))))
            out = bb.emit_output(relax.op.nn.softmax(y, axis=1))
        bb.emit_func_output(out)
    mod = bb.get()
    python, native = _graphs(mod)
    assert native is None
    assert "relax.nn.softmax" in channel_native.fallbacks[-1]
    walked = channel_graph(mod, layouts=False)
    assert walked.io_leaves > python.io_leaves  # (and the model output)
    walked.io_leaves = python.io_leaves
    assert _fields(walked) == _fields(python)


def test_composite_records_read_alike_uniform_or_not() -> None:
    _composite = channel_native._composite
    # (root, n, then n (node, extent) pairs) per merged class, in order
    uniform = np.array([5, 2, 1, 8, 2, 8, 9, 2, 3, 4, 6, 4], dtype=np.int64).tobytes()
    assert _composite(uniform) == {5: [(1, 8), (2, 8)], 9: [(3, 4), (6, 4)]}
    mixed = np.array([5, 1, 1, 8, 9, 2, 3, 4, 6, 4], dtype=np.int64).tobytes()
    assert _composite(mixed) == {5: [(1, 8)], 9: [(3, 4), (6, 4)]}
    assert list(_composite(mixed)) == [5, 9]
    assert _composite(b"") == {}

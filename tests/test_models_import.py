"""The model zoo of tests/models.py imports into Relax the way the other tests expect.

Builders listed in ``models.SLOW_BUILDERS`` (HF transformers, ONNX) are marked ``slow``;
the whole file takes well under a minute on 2 cores.
"""

import models
import numpy as np
import pytest
import tvm
import tvm_ffi
from models import BUILDERS, SLOW_BUILDERS, ImportedModel
from tvm import relax

SEQ_MODELS = {"bert_like", "gpt2_like", "llama_like"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILDERS else n for n in names]


ALL = _params(BUILDERS)
FAST = [n for n in BUILDERS if n not in SLOW_BUILDERS]


def _main(m):
    assert isinstance(m.mod, tvm.IRModule)
    names = [gv.name_hint for gv in m.mod.get_global_vars()]
    assert "main" in names, names
    main = m.mod["main"]
    assert isinstance(main, relax.Function)
    return main


def _dim_names(ty):
    return [str(v.name) if isinstance(v, tvm.ir.expr.Var) else None for v in ty.shape.values]


# --------------------------------------------------------------------------- default import


@pytest.mark.parametrize("name", ALL)
def test_default_import(name):
    m = BUILDERS[name]()
    assert isinstance(m, ImportedModel)
    assert m.name == name
    main = _main(m)
    relax.analysis.well_formed(m.mod)  # raises on a violation (returns None)

    # Inputs: names, example arrays matching shapes and dtypes.
    n_in = len(m.input_names)
    assert n_in == len(m.example_inputs) >= 1
    assert [p.name for p in main.params] == list(m.input_names), "weights must be bound"
    for p, x in zip(main.params, m.example_inputs, strict=True):
        assert isinstance(x, np.ndarray)
        assert isinstance(p.ty, relax.TensorType)
        assert p.ty.ndim == x.ndim
        assert str(p.ty.dtype) == str(x.dtype)

    # Symbolic dims: batch on axis 0 of every input, seq on axis 1 for sequence models.
    assert m.batch_sym, "dynamic=True must give a symbolic batch"
    for p in main.params:
        dims = _dim_names(p.ty)
        assert dims[0] == m.batch_sym, (p.name, dims)
        if name in SEQ_MODELS:
            assert m.seq_sym and m.seq_sym != m.batch_sym
            assert dims[1] == m.seq_sym, (p.name, dims)
        else:
            assert m.seq_sym is None
            assert all(d is None for d in dims[1:]), (p.name, dims)
    # The lower bound 2 we gave torch.export survives as a function attribute
    # (ONNX has no bounds).
    if name != "onnx_cnn":
        lower = main.attrs["tir_var_lower_bound"]
        assert int(lower[m.batch_sym]) == 2
        if m.seq_sym:
            assert int(lower[m.seq_sym]) == 2

    # Bound weights are relax constants (tvm.ir.GenericConst in TVM 0.27).
    assert models.count_weight_constants(m.mod) > 0
    assert "params" not in (main.attrs or {})


@pytest.mark.parametrize("name", ALL)
def test_cached(name):
    builder = BUILDERS[name]
    assert builder() is builder()
    assert builder() is builder(True) is builder(dynamic=True, bind_params=True)


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize("name", ALL)
def test_static_shapes(name):
    m = BUILDERS[name](dynamic=False)
    main = _main(m)
    assert m.batch_sym is None and m.seq_sym is None
    for p, x in zip(main.params, m.example_inputs, strict=True):
        assert _dim_names(p.ty) == [None] * x.ndim
        assert [int(v) for v in p.ty.shape.values] == list(x.shape)
    assert not relax.analysis.free_symbolic_vars(main)
    assert models.count_weight_constants(m.mod) > 0


@pytest.mark.parametrize("name", ALL)
def test_unbound_params(name):
    bound = BUILDERS[name]()
    m = BUILDERS[name](bind_params=False)
    main = _main(m)
    assert m.batch_sym  # still dynamic
    n_in = len(m.input_names)
    assert int(main.attrs["num_input"]) == n_in
    assert "params" not in main.attrs, "weight values are detached into ImportedModel.params"
    weights = main.params[n_in:]
    assert len(weights) == len(m.params) > 0
    for p in weights:
        value = m.params[p.name]
        assert isinstance(value, np.ndarray)
        assert [int(v) for v in p.ty.shape.values] == list(value.shape)
        assert str(p.ty.dtype) == str(value.dtype)
    # Trainable parameters leave the function; only buffers (BN running stats,
    # position ids, RoPE frequencies) may stay constants.
    assert models.count_weight_constants(m.mod) < models.count_weight_constants(bound.mod)


# --------------------------------------------------------------------------- content

# Ops each model must contain: guards against a frontend change silently turning a
# model into something else (and documents what the rule writers get).
EXPECTED_OPS = {
    "tiny_mlp": {"relax.matmul", "relax.add", "relax.nn.relu", "relax.permute_dims"},
    "resnet18_like": {
        "relax.nn.conv2d",
        "relax.nn.batch_norm",
        "relax.nn.max_pool2d",
        "relax.mean",
    },
    "mobilenet_like": {"relax.nn.conv2d", "relax.nn.batch_norm", "relax.clip", "relax.multiply"},
    "unet_like": {
        "relax.nn.conv2d_transpose",
        "relax.image.resize2d",
        "relax.concat",
        "relax.nn.max_pool2d",
    },
    "onnx_cnn": {"relax.nn.conv2d", "relax.nn.avg_pool2d", "relax.nn.softmax", "relax.reshape"},
    "vit_like": {
        "relax.nn.conv2d",
        "relax.nn.layer_norm",
        "relax.nn.gelu",
        "relax.nn.softmax",
        "relax.concat",
    },
    "gpt2_like": {
        "relax.nn.layer_norm",
        "relax.take",
        "relax.split",
        "relax.tanh",
        "relax.nn.softmax",
    },
    "bert_like": {
        "relax.nn.layer_norm",
        "relax.take",
        "relax.nn.gelu",
        "relax.where",
        "relax.nn.softmax",
    },
    "llama_like": {"relax.rsqrt", "relax.cos", "relax.sin", "relax.sigmoid", "relax.strided_slice"},
}


@pytest.mark.parametrize("name", ALL)
def test_op_census(name):
    ops, kinds = models.op_census(BUILDERS[name]().mod)
    missing = EXPECTED_OPS[name] - set(ops)
    assert not missing, (missing, sorted(ops))
    assert kinds["Call"] > 0 and kinds["VarBinding"] >= kinds["Call"]


def test_mobilenet_has_depthwise_conv():
    main = BUILDERS["mobilenet_like"]().mod["main"]
    groups = []
    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            if (
                isinstance(v, tvm.ir.Call)
                and isinstance(v.op, tvm.ir.Op)
                and v.op.name == "relax.nn.conv2d"
            ):
                groups.append(int(v.attrs.groups))
    assert any(g > 1 for g in groups), groups


@pytest.mark.parametrize("name", _params(["tiny_mlp", "resnet18_like"]))
def test_deterministic(name):
    builder = BUILDERS[name]
    fresh = builder.__wrapped__()  # bypass the cache
    assert tvm_ffi.structural_equal(fresh.mod, builder().mod)
    assert fresh.batch_sym == builder().batch_sym


@pytest.mark.parametrize("name", _params(["tiny_mlp", "resnet18_like", "onnx_cnn"]))
def test_numerics_match_torch(name):
    import torch

    m = BUILDERS[name]()
    exe = tvm.compile(m.mod, target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in m.example_inputs])
    if not hasattr(out, "numpy"):
        out = out[0]  # torch frontend wraps outputs in a tuple
    with torch.no_grad():
        ref = m.torch_module(*[torch.from_numpy(x) for x in m.example_inputs])
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)

"""prune and mask_consumers: the numeric oracle on small real models, and bad input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from channel_models import conv_bias_net, dense_net, depthwise_net, gqa_decoder
from models import bert_like, resnet18_like, tiny_mlp, unet_like
from prune_oracle import check, half_selection, run
from tvm_ffi import structural_hash

import msc_rules


def _resnet() -> tuple[object, list[np.ndarray]]:
    m = resnet18_like()
    return m.mod, list(m.example_inputs)


def _mlp() -> tuple[object, list[np.ndarray]]:
    m = tiny_mlp()
    return m.mod, list(m.example_inputs)


def _bert() -> tuple[object, list[np.ndarray]]:
    # static shapes: TVM 0.27 cannot legalize the dynamic import's add of unknown shape
    m = bert_like(dynamic=False)
    return m.mod, list(m.example_inputs)


def _unet() -> tuple[object, list[np.ndarray]]:
    m = unet_like(dynamic=False)  # skip concats, conv2d_transpose, resize2d
    return m.mod, list(m.example_inputs)


def _small(builder: Callable[[], tuple[object, np.ndarray]]) -> Callable[[], object]:
    def get() -> tuple[object, list[np.ndarray]]:
        mod, x = builder()
        return mod, [x]
    return get


MODELS = {
    "resnet18_like": _resnet,
    "tiny_mlp": _mlp,
    "conv_bias_net": _small(conv_bias_net),
    "dense_net": _small(dense_net),
    "depthwise_net": _small(depthwise_net),
    "bert_like": _bert,
    "gqa_decoder": _small(gqa_decoder),
    "unet_like": _unet,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prune_matches_masked_consumers(name: str) -> None:
    mod, inputs = MODELS[name]()
    groups = msc_rules.channel_groups(mod)
    sel = half_selection(groups)
    assert sel, "no prunable group"
    # every group is either pruned here or reported (not exact with reasons, or at io)
    for g in groups:
        assert g.id in sel or g.touches_io or (not g.exact and g.reasons)
    before = structural_hash(mod)
    worst, _ = check(mod, inputs, sel)
    assert worst <= 1e-4
    assert structural_hash(mod) == before
    # channels really went: the pruned module holds fewer weights
    assert _weights(msc_rules.prune(mod, sel)) < _weights(mod)


def _weights(mod: object) -> int:
    from msc_rules.engine import infer_layouts

    view = infer_layouts(mod).view
    return sum(int(np.prod(v.expr.value.shape)) for v in view.values if v.kind == "const")


def test_prune_slices_weights_and_keeps_names() -> None:
    mod, _ = conv_bias_net()
    mod = msc_rules.annotate(mod)
    groups = msc_rules.channel_groups(mod)
    g = next(g for g in groups if any(m.tensor == "conv2d_2.weight" for m in g.producers))
    pruned = msc_rules.prune(mod, {g.id: [0, 3]})
    names = {}
    for b in pruned["main"].body.blocks[0].bindings:
        names[msc_rules.get_name(b.value)] = b.var.ty
    assert [int(d) for d in names["conv2d_2"].shape.values] == [2, 2, 4, 4]
    assert [int(d) for d in names["reshape"].shape.values] == [2, 32]
    assert msc_rules.get_layout(pruned["main"].body.blocks[0].bindings[0].value) == "NCHW"


def test_pruned_groups_are_the_same_groups_smaller() -> None:
    mod, _ = dense_net()
    groups = msc_rules.channel_groups(mod)
    sel = half_selection(groups)
    after = msc_rules.channel_groups(msc_rules.prune(mod, sel))
    assert [g.size for g in after] == [len(sel.get(g.id, range(g.size))) for g in groups]


@pytest.mark.parametrize(("selection", "message"), [
    ({99: [0]}, "unknown group id 99"),
    ({1: []}, "kept set is empty"),
    ({1: [0, 0]}, "repeated: [0]"),
    ({1: [0, 6]}, "out of range 0..5"),
    ({2: [0]}, "reaches a model input or output"),
    ({1: [0.5]}, "must be integers"),
    ({1: "ab"}, "must be integers"),
])
def test_bad_selections_are_refused(selection: dict[int, object], message: str) -> None:
    mod, _ = conv_bias_net()
    before = structural_hash(mod)
    with pytest.raises(msc_rules.PruneError) as err:
        msc_rules.prune(mod, selection)  # type: ignore[arg-type]
    assert message in str(err.value)
    assert structural_hash(mod) == before


def test_not_exact_groups_are_refused() -> None:
    mod, _ = gqa_decoder()
    g = next(g for g in msc_rules.channel_groups(mod) if not g.exact)
    with pytest.raises(msc_rules.PruneError, match=r"not exact: .*mean over the axis"):
        msc_rules.prune(mod, {g.id: [0]})


def test_io_groups_prune_with_allow_io() -> None:
    mod, x = conv_bias_net()
    groups = msc_rules.channel_groups(mod)
    io = next(g for g in groups if g.touches_io)
    pruned = msc_rules.prune(mod, {io.id: [1, 2]}, allow_io=True)
    (out,) = run(pruned, [x])
    (full,) = run(mod, [x])
    np.testing.assert_allclose(out, full[:, [1, 2]], rtol=1e-5, atol=1e-6)


def test_groups_reaching_a_model_input_are_refused_even_with_allow_io() -> None:
    m = tiny_mlp()
    g = msc_rules.channel_groups(m.mod)[0]  # x + fc2(...): x's channels
    with pytest.raises(msc_rules.PruneError, match="reach the model input 'x'"):
        msc_rules.prune(m.mod, {g.id: [0, 1]}, allow_io=True)


def test_missing_entry_is_an_ir_error() -> None:
    mod, _ = conv_bias_net()
    with pytest.raises(msc_rules.IRError, match="entry function 'nope'"):
        msc_rules.channel_groups(mod, entry_name="nope")


def _tvm_prune(mod: object, sel: dict[int, list[int]]) -> object:
    """prune with every changed call's type inferred by TVM (the fallback rebuild)."""
    import importlib

    prune_module = importlib.import_module("msc_rules.prune")
    fast = prune_module.rebuild
    prune_module.rebuild = lambda *_: None
    try:
        return msc_rules.prune(mod, sel)  # type: ignore[arg-type]
    finally:
        prune_module.rebuild = fast


@pytest.mark.parametrize("name", ["bert_like", "dense_net", "depthwise_net", "gqa_decoder",
                                  "resnet18_like", "unet_like"])
def test_pruned_types_are_the_ones_tvm_infers(name: str) -> None:
    """The prune supplies each changed binding's type itself (no re-inference): they
    are TVM's own, binding by binding, and the module is the one TVM's mutator makes."""
    mod, _ = MODELS[name]()
    _check_types(mod)


@pytest.mark.parametrize("name", ["conv_bias_net", "dense_net", "gqa_decoder"])
def test_pruned_types_are_the_ones_tvm_infers_onnx(name: str) -> None:
    from channel_models import onnx_model

    _check_types(onnx_model(name)[0])


def _check_types(mod: object) -> None:
    import tvm_ffi
    from tvm import relax

    mod = msc_rules.annotate(mod)  # type: ignore[arg-type]
    sel = half_selection(msc_rules.channel_groups(mod))
    pruned = msc_rules.prune(mod, sel)
    relax.analysis.well_formed(pruned)  # raises on a violation
    checked = 0
    old = [b for blk in mod["main"].body.blocks for b in blk.bindings]
    new = [b for blk in pruned["main"].body.blocks for b in blk.bindings]
    assert len(old) == len(new)
    for before, b in zip(old, new, strict=True):
        v = b.value
        # names and layout markers survive on every binding
        assert msc_rules.get_name(v) == msc_rules.get_name(before.value) != ""
        assert msc_rules.get_layout(v) == msc_rules.get_layout(before.value)
        if isinstance(v, relax.Call):
            bare = relax.Call(v.op, v.args, v.attrs, v.ty_args)
            inferred = relax.BlockBuilder().normalize(bare).ty
            assert tvm_ffi.structural_equal(inferred, b.var.ty), b.var.name
            assert tvm_ffi.structural_equal(v.ty, b.var.ty), b.var.name
            checked += 1
        else:
            assert tvm_ffi.structural_equal(v.ty, b.var.ty), b.var.name
    assert checked > 10
    changed = sum(not tvm_ffi.structural_equal(a.var.ty, b.var.ty)
                  for a, b in zip(old, new, strict=True))
    assert changed > 5  # (the check above is not vacuous)
    assert tvm_ffi.structural_equal(pruned, _tvm_prune(mod, sel))


def test_prune_reuses_the_walk_of_the_groups_it_is_given() -> None:
    import tvm_ffi

    mod, x = conv_bias_net()
    groups = msc_rules.channel_groups(mod)
    assert groups.graph is not None and groups.graph.built_on(mod, "main", None)
    sel = half_selection(groups)
    alone = msc_rules.prune(mod, sel)
    reused = msc_rules.prune(mod, sel, groups=groups)
    assert tvm_ffi.structural_equal(alone, reused)
    masked = msc_rules.mask_consumers(mod, sel, groups=groups)
    assert tvm_ffi.structural_equal(masked, msc_rules.mask_consumers(mod, sel))
    np.testing.assert_allclose(run(reused, [x])[0], run(masked, [x])[0], rtol=1e-5,
                               atol=1e-5)


def test_groups_of_another_module_are_not_reused() -> None:
    import tvm_ffi

    mod, _ = conv_bias_net()
    other, _ = dense_net()
    theirs = msc_rules.channel_groups(other)
    sel = half_selection(msc_rules.channel_groups(mod))
    assert tvm_ffi.structural_equal(msc_rules.prune(mod, sel, groups=theirs),
                                    msc_rules.prune(mod, sel))
    # a module changed in place after the groups were found: its groups are found anew
    import tvm

    copy = tvm.IRModule(dict(mod.functions_items()))  # the same function objects
    groups = msc_rules.channel_groups(copy)
    assert groups.graph is not None and groups.graph.built_on(mod, "main", None)
    copy[copy.get_global_var("main")] = other["main"]
    assert not groups.graph.built_on(copy, "main", None)
    sel = half_selection(theirs)
    assert tvm_ffi.structural_equal(msc_rules.prune(copy, sel, groups=groups),
                                    msc_rules.prune(other, sel))


def test_bindings_a_prune_does_not_reach_are_kept_as_they_are() -> None:
    mod, x = conv_bias_net()
    mod = msc_rules.annotate(mod)
    groups = msc_rules.channel_groups(mod)
    g = next(g for g in groups if any(m.tensor == "conv2d_2.weight" for m in g.producers))
    pruned = msc_rules.prune(mod, {g.id: [0, 3]}, groups=groups)
    old = list(mod["main"].body.blocks[0].bindings)
    new = list(pruned["main"].body.blocks[0].bindings)
    kept = [a.var.same_as(b.var) and a.value.same_as(b.value)
            for a, b in zip(old, new, strict=True)]
    # everything before the pruned conv (the residual block) is the same objects
    first = next(i for i, b in enumerate(old) if msc_rules.get_name(b.value) == "conv2d_2")
    assert first > 5 and all(kept[:first]) and not kept[first]
    assert run(pruned, [x])[0].shape == run(mod, [x])[0].shape


@pytest.mark.parametrize("name", ["conv_bias_net", "bert_like"])
def test_prune_builds_with_the_typed_rebuild_not_tvms_mutator(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # prune_rebuild.py supplies the new types itself; the mutator (TVM re-inferring
    # every changed call, ~6x slower) is only for what it does not handle, and a
    # module read natively (graph.NativeValue) is no such thing
    import importlib

    prune_module = importlib.import_module("msc_rules.prune")  # (the package's `prune`
    # attribute is the function)

    def refuse(*args: object) -> object:
        raise AssertionError("fell back to the mutator")

    mod, _ = MODELS[name]()
    groups = msc_rules.channel_groups(mod)
    monkeypatch.setattr(prune_module, "_Rewriter", refuse)
    pruned = msc_rules.prune(mod, half_selection(groups), groups=groups)
    assert structural_hash(pruned) != structural_hash(mod)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_native_prune_rebuild_is_the_python_one(name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """native/prune.cc rebuilds each model without handing it back, and the module it
    makes is the Python typed rebuild's, node for node (names and layouts included)."""
    import importlib

    import tvm_ffi

    from msc_rules import native
    from msc_rules.errors import NativeBuildError

    rebuild_module = importlib.import_module("msc_rules.prune_rebuild")
    try:
        lib = native.load()
    except NativeBuildError as err:
        pytest.skip(f"no native walk here: {err}")
    mod = msc_rules.annotate(MODELS[name]()[0])  # type: ignore[arg-type]
    groups = msc_rules.channel_groups(mod)
    sel = half_selection(groups)
    del rebuild_module.fallbacks[:]
    monkeypatch.setattr(native, "get", lambda: lib)
    fast = msc_rules.prune(mod, sel, groups=groups)
    assert rebuild_module.fallbacks == []
    monkeypatch.setattr(native, "get", lambda: None)
    slow = msc_rules.prune(mod, sel, groups=groups)
    assert tvm_ffi.structural_equal(fast, slow, map_free_vars=False)
    names = [msc_rules.get_name(b.value) for blk in fast["main"].body.blocks
             for b in blk.bindings]
    assert names == [msc_rules.get_name(b.value) for blk in slow["main"].body.blocks
                     for b in blk.bindings]
    assert structural_hash(fast) != structural_hash(mod)

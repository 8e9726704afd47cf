"""channel_groups and quant_axes on small real models (from_exported_program)."""

from __future__ import annotations

import pytest
import tvm
from channel_models import conv_bias_net, dense_net, depthwise_net, gqa_decoder
from models import bert_like, llama_like, resnet18_like, tiny_mlp
from tvm_ffi import structural_hash

import msc_rules
from msc_rules.channels import ACTIVATION, CONSUMER, FOLLOW, PRODUCER


def _by_producer(groups: list[msc_rules.ChannelGroup], name: str) -> msc_rules.ChannelGroup:
    for g in groups:
        if any(m.tensor == name for m in g.producers):
            return g
    raise AssertionError(f"no group produced by {name}")


def _roles(g: msc_rules.ChannelGroup, role: str) -> set[tuple[str, int]]:
    return {(m.tensor, m.axis) for m in g.members if m.role == role}


def test_residual_ties_producers_and_collects_follows() -> None:
    mod, _ = conv_bias_net()
    groups = msc_rules.channel_groups(mod)
    g = _by_producer(groups, "conv2d.weight")
    assert g.size == 8 and g.exact and not g.touches_io
    # c1 and c2 both feed the residual add: one group
    assert _roles(g, PRODUCER) == {("conv2d.weight", 0), ("conv2d_1.weight", 0)}
    follows = _roles(g, FOLLOW)
    assert {("batch_norm.gamma", 0), ("batch_norm.beta", 0), ("batch_norm.moving_mean", 0),
            ("batch_norm.moving_var", 0)} <= follows
    assert len(follows) == 6  # the four BN params and both conv biases
    assert _roles(g, CONSUMER) == {("conv2d_1.weight", 1), ("conv2d_2.weight", 1)}
    assert ("add_2", 1) in _roles(g, ACTIVATION)


def test_flatten_maps_a_channel_to_a_block_of_linear_inputs() -> None:
    mod, _ = conv_bias_net()
    g = _by_producer(msc_rules.channel_groups(mod), "conv2d_2.weight")
    (fc,) = g.consumers
    assert (fc.tensor, fc.axis, fc.offset, fc.block) == ("matmul.weight", 1, 0, 16)


def test_concat_gives_each_producer_a_range() -> None:
    mod, _ = dense_net()
    groups = msc_rules.channel_groups(mod)
    stem, l1, l2 = (_by_producer(groups, f"conv2d{s}.weight") for s in ("", "_1", "_2"))
    assert (stem.size, l1.size, l2.size) == (8, 4, 4)
    ranges = {(m.tensor, m.offset) for m in l1.consumers}
    assert ranges == {("conv2d_2.weight", 8), ("conv2d_3.weight", 8)}
    assert {(m.tensor, m.offset) for m in l2.consumers} == {("conv2d_3.weight", 12)}
    assert {(m.tensor, m.offset) for m in stem.consumers} == {
        ("conv2d_1.weight", 0), ("conv2d_2.weight", 0), ("conv2d_3.weight", 0)}
    # the second batch norm's parameters are sliced in the l1 range too
    assert any(m.tensor.startswith("batch_norm_1") and m.offset == 8 and m.role == FOLLOW
               for m in l1.members)


def test_depthwise_conv_follows_and_grouped_conv_prunes_each_group_alike() -> None:
    mod, _ = depthwise_net()
    groups = msc_rules.channel_groups(mod)
    expand = _by_producer(groups, "conv2d_1.weight")
    assert expand.exact
    # the depthwise weight's O axis and its bias follow the expand conv's channels,
    # and the squeeze-excite's last conv is a producer tied by the multiply
    assert ("conv2d_2.weight", 0) in _roles(expand, FOLLOW)
    assert ("conv2d_4.weight", 0) in _roles(expand, PRODUCER)
    # the 2-group conv reads the stem's 4 channels: as Torch-Pruning, channel c is
    # position c of each group (stem channels c and c + 2), its weight's input c
    stem = _by_producer(groups, "conv2d.weight")
    assert stem.exact and stem.size == 2
    spans = {(m.tensor, m.axis): (m.offset, m.block, m.stride, m.repeat)
             for m in stem.members if m.role != ACTIVATION}
    assert spans["conv2d.weight", 0] == spans["conv2d_5.weight", 0] == (0, 1, 2, 2)
    assert spans["conv2d_6.weight", 1] == (0, 1, 0, 1)
    assert stem.producers[0].indices([1]) == [1, 3]
    # its own output channels: the same position in both groups, into the linear
    grouped = _by_producer(groups, "conv2d_6.weight")
    assert grouped.exact and grouped.size == 2
    (fc,) = grouped.consumers
    assert (fc.tensor, fc.stride, fc.repeat) == ("matmul.weight", 2, 2)


def test_groups_reaching_model_io_are_marked() -> None:
    groups = msc_rules.channel_groups(tiny_mlp().mod)
    assert [(g.size, g.touches_io) for g in groups] == [(32, True), (64, False)]
    assert _roles(groups[1], CONSUMER) == {("matmul_1.weight", 1)}


def test_weight_parameters_are_members_and_inputs_are_activations() -> None:
    m = tiny_mlp(bind_params=False)
    groups = msc_rules.channel_groups(m.mod)
    assert _roles(groups[1], PRODUCER) == {("p_fc1_weight", 0)}
    assert _roles(groups[1], FOLLOW) == {("p_fc1_bias", 0)}
    assert _roles(groups[1], CONSUMER) == {("p_fc2_weight", 1)}
    assert ("x", 1) in _roles(groups[0], ACTIVATION)
    # a prune slices the parameters' types; prune_params slices the caller's values
    pruned = msc_rules.prune(m.mod, {1: [0, 1]})
    declared = {p.name: [int(d) for d in p.ty.shape.values]
                for p in pruned["main"].params[1:]}
    values = msc_rules.prune_params(m.mod, {1: [0, 1]}, m.params)
    assert declared == {k: list(v.shape) for k, v in values.items()}
    assert declared["p_fc1_weight"] == [2, 32] and declared["p_fc2_weight"] == [32, 2]


def test_reduction_over_the_channel_axis_makes_a_group_inexact() -> None:
    import torch
    from channel_models import export

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 6)
            self.b = torch.nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return self.b(torch.softmax(y, -1))

    groups = msc_rules.channel_groups(export(Net(), torch.randn(2, 4)))
    g = _by_producer(groups, "matmul.weight")
    assert not g.exact and any("softmax over the axis" in r for r in g.reasons)


def test_groups_are_deterministic_and_leave_the_module_alone() -> None:
    mod = resnet18_like().mod
    before = structural_hash(mod)
    a = msc_rules.channel_groups(mod)
    b = msc_rules.channel_groups(mod)
    assert a == b
    assert structural_hash(mod) == before
    assert len(a) == 7 and sum(g.exact and not g.touches_io for g in a) == 6


def test_attention_heads_are_pruned_whole_with_q_k_v_tied() -> None:
    groups = msc_rules.channel_groups(bert_like().mod)
    heads = [g for g in groups if len(g.producers) == 3]
    assert len(heads) == 2  # one per layer
    for g in heads:
        assert g.size == 2 and g.exact  # 2 heads of 16 channels
        assert {m.block for m in g.producers} == {16}
        (out,) = g.consumers
        assert (out.axis, out.block) == (1, 16)
    ffn = [g for g in groups if g.size == 64]
    assert len(ffn) == 2 and all(g.exact for g in ffn)
    hidden = groups[0]
    assert hidden.size == 32 and not hidden.exact and hidden.touches_io
    assert any("layer_norm normalises over the axis" in r for r in hidden.reasons)


@pytest.mark.parametrize("model", ["llama_like", "gqa_decoder"])
def test_grouped_query_attention_ties_a_kv_head_to_its_query_heads(model: str) -> None:
    mod = llama_like().mod if model == "llama_like" else gqa_decoder()[0]
    groups = msc_rules.channel_groups(mod)
    g = next(g for g in groups if len(g.producers) == 3 and g.producers[0].block > 1)
    q, k, v = g.producers  # in program order
    assert g.size == 2 and g.exact  # 2 kv heads
    assert k.block == v.block == q.block // 2  # each kv head has 2 query heads
    (o,) = g.consumers
    assert o.block == q.block
    hidden = next(g for g in groups if any(m.tensor == "take.data" for m in g.producers))
    assert not hidden.exact and any("mean over the axis" in r for r in hidden.reasons)


def test_quant_axes() -> None:
    mod, _ = conv_bias_net()
    q = msc_rules.quant_axes(mod)
    assert q.weights == {"conv2d.weight": 0, "conv2d_1.weight": 0, "conv2d_2.weight": 0,
                         "matmul.weight": 0}
    assert q.activations["conv2d"] == 1 and q.activations["relu"] == 1
    assert q.activations["matmul"] == 1
    assert "matmul.weight.permute_dims" not in q.activations


def test_follow_letters_match_the_channel_letter() -> None:
    # (the layout engine gives a conv bias the conv output's channel letter: issue 11)
    from msc_rules.engine import infer_layouts

    mod, _ = conv_bias_net()
    ndim = infer_layouts(mod).view.leaf_ndim
    for g in msc_rules.channel_groups(mod):
        acts = {m.letter for m in g.members if m.role == ACTIVATION and m.block == 1
                and ndim[m.leaf] > 1 and not m.tensor.endswith("permute_dims")}
        follows = {m.letter for m in g.members if m.role == FOLLOW}
        assert len(acts) == 1, (g.id, acts)
        # batch-norm parameters carry the rule's "O"; biases the channel letter
        assert follows <= acts | {"O"}, (g.id, follows, acts)


@pytest.mark.parametrize("dynamic", [True, False])
def test_extents_of_unknown_shapes_are_read_only_when_needed(dynamic: bool) -> None:
    """The channel graph notes the tensors' extents for their classes only once a tensor
    of unknown shape needs them (the dynamic import's add): the groups are the ones an
    eager noting finds, and a static module never notes them."""
    from msc_rules.channel_graph import _Builder
    from msc_rules.channels import _Namer, build_groups
    from msc_rules.engine import infer_layouts

    mod = bert_like(dynamic=dynamic).mod
    found = []
    for eager in (False, True):
        result = infer_layouts(mod)
        b = _Builder(result, result.rules)
        b.eager = eager
        g = b.run()
        found.append((build_groups(g, _Namer(mod, result, "main")), b.eager, g.class_ext))
    (lazy, switched, ext), (eager_groups, _, eager_ext) = found
    assert lazy == eager_groups and len(lazy) > 2
    assert switched is dynamic
    assert bool(ext) is dynamic and eager_ext


def test_member_names_are_planned_on_first_read_for_the_module_as_it_was() -> None:
    """Names are looked up lazily (a prune by group id never reads them), yet are the
    names of the module channel_groups saw, even after the caller replaced a function."""
    shared, _ = conv_bias_net()  # (cached for other tests: replace a function of a copy)
    mod = tvm.IRModule(dict(shared.functions_items()), attrs=shared.attrs)
    expected = msc_rules.channel_groups(mod)
    names = [[m.tensor for m in g.members] for g in expected]
    groups = msc_rules.channel_groups(mod)
    namer = groups[0].members[0].__dict__["_tensor"]
    assert not isinstance(namer, str) and namer.by_handle is None  # nothing read yet
    mod["main"] = dense_net()[0]["main"]
    assert [[m.tensor for m in g.members] for g in groups] == names
    assert groups == expected and "conv2d.weight" in names[0]


def test_letters_are_inferred_on_first_read_and_match_the_inference() -> None:
    from msc_rules.engine import infer_layouts

    mod, _ = conv_bias_net()
    groups = msc_rules.channel_groups(mod)
    letters = groups[0].members[0].__dict__["_letter"]
    assert not isinstance(letters, str) and letters.layouts is None  # not inferred yet
    layouts = infer_layouts(mod).layouts
    for g in groups:
        for m in g.members:
            lay = layouts[m.leaf] or ""
            assert m.letter == (lay[m.axis] if m.axis < len(lay) else "")
    assert letters.layouts is not None
    assert any(m.letter for g in groups for m in g.members)

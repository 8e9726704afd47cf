"""Channel groups and the prune oracle on the same small models imported from ONNX."""

from __future__ import annotations

import pytest
from channel_models import conv_bias_net, dense_net, depthwise_net, gqa_decoder, onnx_model
from prune_oracle import check, half_selection

import msc_rules

TORCH = {"conv_bias_net": conv_bias_net, "dense_net": dense_net,
         "depthwise_net": depthwise_net, "gqa_decoder": gqa_decoder}


def _shape(groups: list[msc_rules.ChannelGroup]) -> list[tuple[object, ...]]:
    # (no axes: ONNX's MatMul weights are [in, out], the exported program's [out, in])
    return [(g.size, g.exact, g.touches_io, len(g.producers),
             sorted((m.offset, m.block) for m in g.consumers)) for g in groups]


@pytest.mark.parametrize("name", ["conv_bias_net", "dense_net", "gqa_decoder"])
def test_onnx_groups_match_the_exported_program_groups(name: str) -> None:
    onnx_mod, _ = onnx_model(name)
    torch_mod, _ = TORCH[name]()
    got, want = msc_rules.channel_groups(onnx_mod), msc_rules.channel_groups(torch_mod)
    # the ONNX import makes the hidden stream's RMS norm from other ops: compare the
    # groups that the exported program finds exact
    exact = [i for i, g in enumerate(want) if g.exact]
    assert [_shape(got)[i] for i in exact] == [_shape(want)[i] for i in exact]


def test_onnx_depthwise_activations_are_reported_not_guessed() -> None:
    # from_onnx lowers HardSwish and ReLU6 to call_tir (of TIR maximum, minimum): their
    # channels cannot be followed, and the reason names the PrimFunc
    groups = msc_rules.channel_groups(onnx_model("depthwise_net")[0])
    blocked = [g for g in groups if any(
        r.startswith(("call_tir of maximum:", "call_tir of minimum:"))
        and "loops are not read" in r for r in g.reasons)]
    assert len(blocked) == 2 and not any(g.exact for g in blocked)


@pytest.mark.parametrize("name", ["conv_bias_net", "gqa_decoder"])
def test_onnx_prune_matches_masked_consumers(name: str) -> None:
    mod, x = onnx_model(name)
    sel = half_selection(msc_rules.channel_groups(mod))
    assert sel
    worst, _ = check(mod, [x], sel)
    assert worst <= 1e-4

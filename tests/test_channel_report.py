"""`msc-rules channels` and `msc-rules prune` (in process), and the report helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tvm
from channel_models import conv_bias_net

import msc_rules
from msc_rules import cli
from msc_rules.channel_report import (
    channel_scores,
    count_macs,
    count_params,
    magnitude_selection,
)
from msc_rules.engine import infer_layouts


def test_channels_json_lists_groups_and_members(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["channels", "cnn", "--format", "json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "channel_groups"
    sizes = [(g["size"], g["exact"], g["touches_io"]) for g in data["groups"]]
    assert sizes == [(8, True, False), (8, True, False), (16, True, False), (10, True, True)]
    roles = {m["role"] for m in data["groups"][0]["members"]}
    assert roles == {"producer", "follow", "activation", "consumer"}


def test_channels_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["channels", "cnn", "--format", "markdown", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Channel groups of cnn: 4 groups, 4 exact")
    assert "| id | size | unit |" in out


def test_prune_command_halves_groups_and_writes_a_module(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pruned.json"
    assert cli.main(["prune", "cnn", "--ratio", "0.5", "-o", str(out), "-q",
                     "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["pruned"] == {"0": [8, 4], "1": [8, 4], "2": [16, 8]}
    assert rep["params_after"] < rep["params_before"]
    assert rep["macs_after"] < rep["macs_before"]
    assert rep["skipped"] == ["group 3: reaches a model input or output"]
    mod = tvm.ir.load_json(out.read_text())
    assert [g.size for g in msc_rules.channel_groups(mod)] == [4, 4, 8, 10]
    assert count_params(mod) == rep["params_after"]


def test_prune_command_refuses_a_bad_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["prune", "cnn", "--ratio", "1.5", "-q"]) == 1
    assert "--ratio must be in [0, 1)" in capsys.readouterr().err


def test_magnitude_keeps_the_largest_l1_channels() -> None:
    mod, _ = conv_bias_net()
    view = infer_layouts(mod).view
    groups = msc_rules.channel_groups(mod)
    g = groups[1]  # conv2d_2 (c3): 6 channels
    scores = channel_scores(view, g)
    w = next(v.expr.value.numpy() for v in view.values
             if v.kind == "const" and v.expr.value.shape == (6, 8, 1, 1))
    np.testing.assert_allclose(scores, np.abs(w).reshape(6, -1).sum(1), rtol=1e-6)
    sel = magnitude_selection(view, groups, 0.5)
    assert sel[1] == sorted(np.argsort(-scores)[:3].tolist())
    assert 2 not in sel  # the linear's outputs are the model's output


def test_macs_count_convs_and_matmuls() -> None:
    mod, _ = conv_bias_net()
    # per sample: c1 8*16*27, c2 8*16*72, c3 6*16*8, fc 5*96 (batch 2 here)
    assert count_macs(mod) == 2 * (8 * 16 * 27 + 8 * 16 * 72 + 6 * 16 * 8 + 5 * 96)


def test_graph_colours_tensors_by_group(tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    assert cli.main(["graph", "cnn", "--color-by", "group", "-o", str(out), "-q"]) == 0
    svg = out.read_text()
    keys = set(re.findall(r'data-key="(group [0-9+]+)"', svg))
    assert {"group 0", "group 1", "group 2", "group 3"} <= keys
    # the stem conv's weight is coloured by its output channels' group
    assert re.search(r'data-name="conv2d.weight"[^>]*data-key="group 0"', svg)

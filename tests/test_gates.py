"""The command's gates and counts (cli.py over report.py and guesses.py): `annotate
--strict` and `coverage --fail-under` fail on guessed weights and list them, and
`annotate` and `coverage` count the same tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tvm
from test_cli import call, ok
from test_guesses import BLIND_MATMUL, conv_module, linear_module

import msc_rules
from msc_rules.guesses import find_guesses
from msc_rules.library import default_rules
from msc_rules.report import analyze, model_coverage, tensor_rows


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gates")
    (d / "blind.rules").write_text(BLIND_MATMUL)
    (d / "linear.json").write_text(tvm.ir.save_json(linear_module()))
    (d / "conv.json").write_text(tvm.ir.save_json(conv_module()))
    return {"rules": d / "blind.rules", "linear": d / "linear.json", "conv": d / "conv.json"}


def test_annotate_strict_fails_on_a_guessed_weight_and_lists_it(files: dict[str, Path]) -> None:
    rc, out, err = call("annotate", files["linear"], "--rules", files["rules"], "--strict")
    assert rc == 1 and out == ""
    assert "1 weight(s) have a guessed layout" in err
    assert "matmul.weight (main:const)" in err and "relax.matmul weight" in err
    # accepted on request; the table still marks the weight
    out = ok("annotate", files["linear"], "--rules", files["rules"], "--strict",
             "--allow-guessed")
    row = next(line.split() for line in out.splitlines() if line.startswith("matmul.weight "))
    assert row[-1] == "weight"
    assert "1 guessed weights" in out


def test_annotate_strict_passes_on_a_conv_with_kernel_layout(files: dict[str, Path]) -> None:
    out = ok("annotate", files["conv"], "--strict", "--format", "json")
    data = json.loads(out)
    assert data["totals"]["guessed_weights"] == 0
    weight = next(r for r in data["tensors"] if r["name"] == "conv2d.weight")
    assert weight == {**weight, "layout": "OIHW", "weight": True, "guessed": False}


def test_coverage_gate_fails_on_a_guessed_weight(files: dict[str, Path]) -> None:
    rc, out, err = call("coverage", files["linear"], "--rules", files["rules"],
                        "--fail-under", "0")
    assert rc == 1
    assert "weights with guessed layouts: 1" in out
    assert "1 weight(s) have a guessed layout: matmul.weight" in err
    assert "--allow-guessed" in err
    ok("coverage", files["linear"], "--rules", files["rules"], "--fail-under", "100",
       "--allow-guessed")
    ok("coverage", files["conv"], "--fail-under", "100")
    # without a gate the report is printed and the command succeeds
    ok("coverage", files["linear"], "--rules", files["rules"])


def _same_counts(annotate: dict[str, int], coverage: dict[str, int]) -> None:
    for key in ("tensors", "with_layout", "without_layout", "scalars", "guessed",
                "guessed_weights", "weights"):
        assert annotate[key] == coverage[key], key


@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_annotate_and_coverage_count_the_same_tensors(model: str) -> None:
    table = json.loads(ok("annotate", model, "--format", "json"))
    cov = json.loads(ok("coverage", model, "--format", "json"))
    _same_counts(table["totals"], cov["totals"])
    names = [r["name"] for r in table["tensors"]]
    assert len(names) == len(set(names))
    assert table["totals"]["tensors"] == len(table["tensors"])
    assert sum(table["guessed_by_op"].values()) == table["totals"]["guessed"]


def test_counts_agree_on_gpt2_with_scalars() -> None:
    from models import gpt2_like

    mod = gpt2_like().mod
    analysis = analyze(mod, default_rules())
    cov = model_coverage(analysis)
    guesses = find_guesses(analysis.result, analysis.mod)
    table = tensor_rows(msc_rules.annotate(mod), guesses=guesses)
    _same_counts(table.totals, cov.totals)
    assert cov.totals["scalars"] > 0  # GPT-2 has scalar constants: not missing
    assert all(r.has_layout for r in table.rows if r.ndim == 0)
    names = [r.name for r in table.rows]
    assert len(names) == len(set(names))

"""Guessed layouts and guessed weights (msc_rules/guesses.py), and the reports that count
them. The modules here are built to have (or not have) guesses whatever the library's
current rules guess on real models: a plain conv2d whose weight takes OIHW from its
kernel_layout, and modules run with a rule file that takes a consumer's evidence away.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

import msc_rules
from msc_rules.guesses import find_guesses, is_weight_consumer
from msc_rules.report import analyze, guessed_weights, model_coverage, render, tensor_rows

# matmul without its weight equations: the weight gets no evidence from the rule
BLIND_MATMUL = """\
override op relax.matmul(data, weight) {
    out  = ndim(data) == ndim(out) ? data : none
    data = ndim(data) == ndim(out) ? out : none
}
"""

# the library's matmul without its assumed data layout (`data ?= default_layout`): a
# weak default anywhere goes before initial letters, so with it token ids would take
# the matmul's NC/NCD instead of being guessed
NO_DATA_DEFAULT = """\
override op relax.matmul(data, weight) {
    out    = ndim(data) == ndim(out) ? data : none
    data   = ndim(data) == ndim(out) ? out : none
    weight ?= ndim(weight) == 2 ? "IO" : none
}
"""

# matmul whose weight copies the data's letters (2-D only): a weight derived from its
# data, guessed exactly when the data is
WEIGHT_FROM_DATA = """\
override op relax.matmul(data, weight) {
    out    = data
    data   = out
    weight = data
}
"""


def _rules(tmp_path: Path, text: str) -> msc_rules.RuleSet:
    path = tmp_path / "override.rules"
    path.write_text(text)
    return msc_rules.load_rules(str(path))


def _const(*shape: int) -> relax.Constant:
    rng = np.random.default_rng(sum(shape))
    return relax.const(rng.standard_normal(shape).astype("float32"))


def conv_module() -> tvm.IRModule:
    """x -> conv2d(x, W) + reshape(b) -> relu: W gets OIHW from kernel_layout."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, _const(4, 3, 3, 3)))
            b = bb.emit(relax.op.reshape(_const(4), (1, 4, 1, 1)))
            z = bb.emit(relax.op.nn.relu(relax.op.add(y, b)))
            out = bb.emit_output(z)
        bb.emit_func_output(out)
    return bb.get()


def linear_module(transposed: bool = True, weight_param: bool = False,
                  num_input: int | None = None) -> tvm.IRModule:
    """x[2,16] -> matmul(x, permute_dims(W)) + bias: torch's Linear as imported."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 16), "float32"))
    params = [x]
    w: relax.Expr = _const(10, 16) if transposed else _const(16, 10)
    if weight_param:
        w = relax.Var("w", relax.TensorType((10, 16) if transposed else (16, 10),
                                                  "float32"))
        params.append(w)
    with bb.function("main", params):
        with bb.dataflow():
            wt = bb.emit(relax.op.permute_dims(w)) if transposed else w
            y = bb.emit(relax.op.matmul(x, wt))
            z = bb.emit(relax.op.add(y, _const(10)))
            out = bb.emit_output(z)
        bb.emit_func_output(out)
    mod = bb.get()
    if num_input is not None:
        mod["main"] = mod["main"].with_attr("num_input", num_input)
    return mod


def _guessed_names(mod: tvm.IRModule, rules: msc_rules.RuleSet | None = None) -> dict[str, bool]:
    """Weight name -> whether guessed, for every weight of `mod`."""
    from msc_rules.library import default_rules

    analysis = analyze(mod, rules or default_rules())
    g = find_guesses(analysis.result, analysis.mod)
    return {analysis.names.leaf_name(w): g.guessed[w] for w in g.weights}


def test_weight_consumers() -> None:
    assert is_weight_consumer("relax.nn.conv2d") and is_weight_consumer("relax.matmul")
    assert is_weight_consumer("relax.nn.conv2d_transpose")
    assert is_weight_consumer("relax.nn.layer_norm") and is_weight_consumer("relax.nn.rms_norm")
    assert not is_weight_consumer("relax.add") and not is_weight_consumer("relax.nn.relu")


def test_plain_conv_has_no_guessed_weight() -> None:
    mod = conv_module()
    assert _guessed_names(mod) == {"conv2d.weight": False}
    from msc_rules.library import default_rules

    rep = model_coverage(analyze(mod, default_rules()), "conv")
    assert rep.guessed_weights == [] and rep.totals["weights"] == 1


def test_weight_without_evidence_is_guessed(tmp_path: Path) -> None:
    rules = _rules(tmp_path, BLIND_MATMUL)
    assert _guessed_names(linear_module(), rules) == {"matmul.weight": True}
    analysis = analyze(linear_module(), rules)
    g = find_guesses(analysis.result, analysis.mod)
    leaf = next(iter(g.weights))
    assert g.direct[leaf]  # the constant itself got initial letters
    # the permute_dims of the guess is guessed too, by derivation
    names = analysis.names
    derived = [names.leaf_name(x) for x, b in enumerate(g.guessed) if b and not g.direct[x]]
    assert "matmul.weight.permute_dims" in derived
    weights = guessed_weights(analysis, g)
    assert [w.tensor for w in weights] == ["matmul.weight"]
    assert weights[0].consumers == ["matmul (relax.matmul weight)"]
    assert weights[0].reason.startswith("initial letters")


def test_the_library_matmul_gives_a_bare_weight_evidence() -> None:
    # W[16,10] used directly: the rule's weak `IO` decides it, which is evidence
    assert _guessed_names(linear_module(transposed=False)) == {"matmul.weight": False}


def test_weak_role_letters_are_evidence_even_after_a_guessed_input(tmp_path: Path) -> None:
    # token ids get initial letters (nothing gives them a layout once the matmul assumes
    # no data layout); the embedding and the matmul's data follow them, yet the
    # matmul's weak `IO` on its weight is the rule's claim of roles, not a guess
    bb = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType((2, 8), "int64"))
    with bb.function("main", [ids]):
        with bb.dataflow():
            e = bb.emit(relax.op.take(_const(100, 16), ids, axis=0))
            y = bb.emit(relax.op.matmul(e, _const(16, 32)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    analysis = analyze(bb.get(), _rules(tmp_path, NO_DATA_DEFAULT))
    g = find_guesses(analysis.result, analysis.mod)
    by_name = {analysis.names.leaf_name(x): x for x in range(len(g.guessed))}
    assert g.direct[by_name["ids"]]
    weight = by_name["matmul.weight"]
    assert analysis.result.layouts[weight] == "IO" and not g.guessed[weight]
    assert weight in g.weights and guessed_weights(analysis, g) == []


def test_a_weight_derived_from_a_guessed_input_is_guessed(tmp_path: Path) -> None:
    rules = _rules(tmp_path, WEIGHT_FROM_DATA)
    analysis = analyze(linear_module(transposed=False), rules)
    g = find_guesses(analysis.result, analysis.mod)
    (w,) = g.weights
    assert g.guessed[w] and not g.direct[w]
    assert "derived only from guessed layouts" in guessed_weights(analysis, g)[0].reason


def test_a_weight_derived_from_evidence_is_not_guessed(tmp_path: Path) -> None:
    # the data comes out of a conv (NCHW) and a mean (NC): the weight copies evidence
    rules = _rules(tmp_path, WEIGHT_FROM_DATA)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, _const(16, 3, 3, 3)))
            m = bb.emit(relax.op.mean(y, axis=[2, 3]))
            z = bb.emit(relax.op.matmul(m, _const(16, 16)))
            out = bb.emit_output(z)
        bb.emit_func_output(out)
    assert _guessed_names(bb.get(), rules) == {"conv2d.weight": False, "matmul.weight": False}


def test_params_are_weights_by_num_input_or_position(tmp_path: Path) -> None:
    rules = _rules(tmp_path, BLIND_MATMUL)
    # no num_input: x is matmul's first argument (data), w reaches it through a permute
    assert _guessed_names(linear_module(weight_param=True), rules) == {"w": True}
    # num_input=2 says both params are model inputs: no weight among them
    assert "w" not in _guessed_names(linear_module(weight_param=True, num_input=2), rules)
    assert _guessed_names(linear_module(weight_param=True, num_input=1), rules) == {"w": True}


def test_a_weight_passed_to_another_function_is_followed() -> None:
    # a fused-function style call: the conv's weight is a param of the callee and
    # main passes the constant in; it is followed back through the call
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((1, 3, 8, 8), "float32"))
    w = relax.Var("w", relax.TensorType((4, 3, 3, 3), "float32"))
    with bb.function("fused", [a, w]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(a, w))
        fused = bb.emit_func_output(y)
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.Call(fused, [x, _const(4, 3, 3, 3)]))
        bb.emit_func_output(out)
    mod = bb.get()
    got = _guessed_names(mod)
    assert got and not any(got.values())
    consts = [n for n in got if not n.startswith("w")]
    assert len(consts) == 1  # main's constant, found through the call


def test_lv_const_binding_is_one_tensor_and_scalars_are_not_missing() -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = bb.emit(_const(4, 3, 3, 3))  # lv = R.const(...)
            y = bb.emit(relax.op.nn.conv2d(x, w))
            z = bb.emit(relax.op.multiply(y, relax.const(2.0, "float32")))
            out = bb.emit_output(z)
        bb.emit_func_output(out)
    mod = bb.get()
    from msc_rules.library import default_rules

    analysis = analyze(mod, default_rules())
    cov = model_coverage(analysis, "m")
    table = tensor_rows(msc_rules.annotate(mod))
    names = [r.name for r in table.rows]
    assert len(names) == len(set(names)), names
    assert names.count("conv2d.weight") == 1
    assert cov.tensors == len(table.rows) == 5  # x, W, conv2d, the scalar, multiply
    scalar = next(r for r in table.rows if r.ndim == 0)
    assert scalar.layout == "" and scalar.has_layout
    assert table.totals["without_layout"] == cov.totals["without_layout"] == 0
    assert table.totals["scalars"] == cov.totals["scalars"] == 1
    assert "5 tensors, 5 with a layout (1 scalars), 0 without" in render(table)


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_reports_count_guesses_per_op_and_per_model(tmp_path: Path, fmt: str) -> None:
    import json

    rules = _rules(tmp_path, BLIND_MATMUL)
    analysis = analyze(linear_module(), rules)
    rep = model_coverage(analysis, "linear")
    ops = {o.op: o for o in rep.ops}
    assert ops["relax.matmul"].guessed_weights == 1
    assert ops["relax.permute_dims"].guessed == 1
    t = rep.totals
    assert t["guessed_weights"] == 1 and t["guessed"] == t["guessed_initial_letters"] + \
        t["guessed_derived"] >= 2
    text = render(rep, fmt)
    if fmt == "json":
        data = json.loads(text)
        assert data["totals"]["guessed_weights"] == 1
        assert data["guessed_weights"][0]["tensor"] == "matmul.weight"
        by_op = {o["op"]: o for o in data["ops"]}
        assert by_op["relax.matmul"]["guessed_weights"] == 1
    else:
        assert "weights with guessed layouts: 1" in text
        assert "matmul.weight" in text and "guessed weights" in text

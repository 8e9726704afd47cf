"""The rule library: every example line passes, every registered relax op is decided.

Each `example` line of rules/*.rules is one test (id `file.rules:line`): the runner builds
the call with TVM's Python builder, seeds the given layouts, infers with the whole library
and compares. The coverage tests fail when TVM registers a relax op that no rule file
rules or ignores, so a TVM upgrade that adds ops is caught at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tvm
from tvm import relax

import msc_rules
from msc_rules.dsl.ruleset import RuleSet, load_rules
from msc_rules.examples import run_example

RULES: RuleSet = load_rules()

# Ruled ops whose call cannot be written as an `example` line (an argument the example
# syntax cannot express): each one has a test of its own below.
NO_EXAMPLE = {
    "relax.layout_transform": "an IndexMap argument",
}


def _example_id(ex: object) -> str:
    pos = ex.pos  # type: ignore[attr-defined]
    return f"{Path(pos.file).name}:{pos.line}"


@pytest.mark.parametrize("example", RULES.examples, ids=_example_id)
def test_example(example: object) -> None:
    outcome = run_example(example, RULES)  # type: ignore[arg-type]
    assert outcome.ok, outcome.format()


def test_library_has_examples() -> None:
    assert len(RULES.examples) >= 150


def registered_relax_ops() -> list[str]:
    return sorted(op for op in tvm.ir.Op.list_op_names() if op.startswith("relax."))


def test_every_registered_relax_op_is_ruled_or_ignored() -> None:
    ops = registered_relax_ops()
    undecided = [op for op in ops if RULES.status(op) == "undecided"]
    assert not undecided, (
        f"{len(undecided)} registered relax op(s) neither ruled nor ignored "
        f"(add a rule or an `ignore ... : \"reason\"` line): {undecided}"
    )


def test_coverage_counts() -> None:
    ops = registered_relax_ops()
    ruled = [op for op in ops if RULES.status(op) == "ruled"]
    ignored = [op for op in ops if RULES.status(op) == "ignored"]
    assert len(ruled) + len(ignored) == len(ops)
    # the ops the library is about carry layouts: most ops are ruled, not ignored
    assert len(ruled) > 4 * len(ignored), (len(ruled), len(ignored))


def test_every_ignore_pattern_matches_a_registered_op_and_has_a_reason() -> None:
    import fnmatch

    ops = registered_relax_ops()
    for entry in RULES.ignores:
        assert entry.reason.strip(), f"{entry.pos}: ignore without a reason"
        assert any(fnmatch.fnmatchcase(op, entry.pattern) for op in ops), (
            f"{entry.pos}: '{entry.pattern}' matches no registered op (stale ignore?)"
        )


def test_ops_that_real_models_produce_are_ruled() -> None:
    wanted = [
        "relax.index_tensor", "relax.gather_nd", "relax.gather_elements",
        "relax.scatter_elements", "relax.scatter_nd", "relax.slice_scatter",
        "relax.index_put", "relax.nn.pad", "relax.einsum", "relax.outer", "relax.cumsum",
        "relax.cumprod", "relax.tril", "relax.triu", "relax.topk", "relax.sort",
        "relax.argsort", "relax.one_hot", "relax.full", "relax.full_like", "relax.zeros",
        "relax.ones", "relax.zeros_like", "relax.ones_like", "relax.arange", "relax.eye",
        "relax.layout_transform", "relax.quantize", "relax.dequantize", "relax.repeat",
        "relax.tile", "relax.flip", "relax.nn.pixel_shuffle", "relax.nn.nll_loss",
        "relax.nn.cross_entropy_with_logits", "relax.nn.attention",
        "relax.nn.attention_bias", "relax.nn.attention_var_len", "relax.nn.leakyrelu",
        "relax.nn.softplus", "relax.nn.prelu", "relax.nn.batch_flatten",
        "relax.collapse_sum_like", "relax.collapse_sum_to", "relax.image.grid_sample",
        "relax.image.affine_grid", "relax.vision.roi_align", "relax.vision.roi_pool",
        "relax.vision.get_valid_counts", "relax.vision.non_max_suppression",
        "relax.vision.all_class_non_max_suppression", "relax.vision.multibox_transform_loc",
    ]  # fmt: skip
    assert [op for op in wanted if RULES.status(op) != "ruled"] == []
    assert RULES.status("relax.call_tir") == "ignored"


def test_every_rule_has_an_example() -> None:
    """Every family has an example of one of its ops; every op with a rule body of its
    own has one of its own (except the few NO_EXAMPLE ops, tested below)."""
    with_example = {ex.op for ex in RULES.examples}
    families_with_example = {
        RULES.rules[op].family for op in with_example if op in RULES.rules
    }
    missing = []
    for op, rule in RULES.rules.items():
        if rule.family is not None:
            if rule.family not in families_with_example:
                missing.append(f"family {rule.family} ({op})")
        elif op not in with_example and op not in NO_EXAMPLE:
            missing.append(op)
    assert not missing, f"rules without an example: {sorted(set(missing))}"


# ---- rules the example syntax cannot express ------------------------------------------


def _infer_one(call: relax.Expr, params: list[relax.Var],
               seeds: dict[str, str]) -> tuple[msc_rules.InferenceResult, dict[str, str]]:
    from msc_rules.engine import infer_view
    from msc_rules.graph import build_view

    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit(call)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    mod = bb.get()
    view = build_view(mod, "main")
    leaf_seeds = {}
    for v in view.values:
        if v.name in seeds and isinstance(v.struct, int):
            leaf_seeds[v.struct] = seeds[v.name]
    res = infer_view(view, RULES, leaf_seeds)
    return res, {v.name: res.marker(v.struct) for v in view.values if v.kind != "const"}


def test_layout_transform_permutation_moves_letters() -> None:
    x = relax.Var("x", relax.TensorType([2, 3, 4, 5], "float32"))
    call = relax.op.layout_transform(x, lambda n, c, h, w: (n, h, w, c))
    res, got = _infer_one(call, [x], {"x": "NCHW"})
    assert got["lv"] == "NHWC"
    assert not res.conflicts


def test_layout_transform_tiling_mints_letters_and_back() -> None:
    x = relax.Var("x", relax.TensorType([2, 8, 4, 4], "float32"))
    call = relax.op.layout_transform(x, lambda n, c, h, w: (n, c // 4, h, w, c % 4))
    res, got = _infer_one(call, [x], {"x": "NCHW"})
    assert not res.conflicts
    assert got["lv"][0] == "N" and got["lv"][2:4] == "HW"
    assert len(set(got["lv"])) == 5 and "C" not in got["lv"]
    # backward: the untouched axes come back, the split one is fresh
    y = relax.Var("y", relax.TensorType([2, 8, 4, 4], "float32"))
    call = relax.op.layout_transform(y, lambda n, c, h, w: (n, c // 4, h, w, c % 4))
    _, back = _infer_one(call, [y], {"lv": "NABCD"})
    assert back["y"][0] == "N" and back["y"][2:] == "BC" and back["y"][1] not in "NABCD"


def test_example_plugin_rule_is_keyed_by_extern_name() -> None:
    assert RULES.plugin("msc_example_bias_act") is not None
    x = relax.Var("x", relax.TensorType([2, 3, 16], "float32"))
    b = relax.Var("b", relax.TensorType([16], "float32"))
    call = relax.call_dps_packed("msc_example_bias_act", (x, b),
                                 relax.TensorType([2, 3, 16], "float32"))
    res, got = _infer_one(call, [x, b], {"x": "NSD"})
    assert got["lv"] == "NSD" and got["b"] == "D"
    assert not res.conflicts and not res.unruled


def test_user_plugin_rule_file(tmp_path: Path) -> None:
    p = tmp_path / "my_plugins.rules"
    p.write_text(
        "# a user's plugin: transposes its 2-D input\n"
        "plugin my_transpose(data) {\n"
        "    out  = permute(data, [1, 0])\n"
        "    data = unpermute(out, [1, 0])\n"
        "}\n"
    )
    rules = load_rules(p)
    x = relax.Var("x", relax.TensorType([2, 3], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.call_dps_packed("my_transpose", (x,),
                                              relax.TensorType([3, 2], "float32")))
            z = bb.emit(relax.call_dps_packed("unknown_kernel", (y,),
                                              relax.TensorType([3, 2], "float32")))
            gv = bb.emit_output(z)
        bb.emit_func_output(gv)
    res = msc_rules.infer_layouts(bb.get(), rules)
    got = {v.name: res.marker(v.struct) for v in res.view.values}
    assert got["x"] == "AB" and got["lv"] == "BA"
    assert res.unruled == {"plugin:unknown_kernel": 1}  # no rule: opaque, reported


def test_call_tir_is_opaque_but_its_tensors_still_get_layouts() -> None:
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    @I.ir_module
    class Mod:
        @T.prim_func
        def transpose(a: T.Buffer((2, 3), "float32"), b: T.Buffer((3, 2), "float32")):
            for i, j in T.grid(3, 2):
                b[i, j] = a[j, i]

        @R.function
        def main(x: R.Tensor((2, 3), "float32")) -> R.Tensor((3, 2), "float32"):
            cls = Mod
            with R.dataflow():
                y = R.nn.relu(x)
                z = R.call_tir(cls.transpose, (y,), out_ty=R.Tensor((3, 2), "float32"))
                w = R.exp(z)
                R.output(w)
            return w

    res = msc_rules.infer_layouts(Mod)
    got = {v.name: res.marker(v.struct) for v in res.view.values}
    assert got["y"] == "AB"  # from its producer
    assert len(got["z"]) == 2 and got["z"] == got["w"]  # initial letters, shared downstream
    assert not res.conflicts
    assert "relax.call_tir" not in res.unruled  # deliberately ignored, not "unruled"


# ---- the library's builtins on multi-op graphs ------------------------------------------


def test_reshape_restores_split_heads_and_merged_batch() -> None:
    """Splitting the hidden axis into heads and merging it back gives the hidden letter
    back; so does flattening batch*seq for a 2-D matmul and restoring it."""
    from tvm.script import relax as R

    @R.function
    def main(x: R.Tensor((2, 8, 32), "float32"), w: R.Tensor((32, 32), "float32")):
        with R.dataflow():
            a = R.reshape(x, (2, 8, 4, 8))
            b = R.permute_dims(a, [0, 2, 1, 3])
            c = R.permute_dims(b, [0, 2, 1, 3])
            d = R.reshape(c, (2, 8, 32))
            e = R.reshape(d, (16, 32))
            f = R.matmul(e, w)
            g = R.reshape(f, (2, 8, 32))
            h = R.add(g, x)
            R.output(h)
        return h

    mod = tvm.IRModule({"main": main})
    res = msc_rules.infer_layouts(mod)
    got = {v.name: res.marker(v.struct) for v in res.view.values if v.kind != "const"}
    assert got["d"] == got["x"] == got["g"] == got["h"]
    assert not res.conflicts


def test_index_tensor_takes_each_axis_from_the_index_with_the_extent() -> None:
    """m[i[:, None], j[None, :]]: the result's rows are i's axis, its columns j's."""
    from tvm.script import relax as R

    from msc_rules.engine import infer_view
    from msc_rules.graph import build_view

    @R.function
    def main(m: R.Tensor((4, 6), "float32"), i: R.Tensor((4,), "int64"),
             j: R.Tensor((6,), "int64")):
        with R.dataflow():
            a = R.expand_dims(i, [1])
            b = R.expand_dims(j, [0])
            c = R.index_tensor(m, (a, b))
            R.output(c)
        return c

    view = build_view(tvm.IRModule({"main": main}), "main")
    seeds = {v.struct: lay for v in view.values for name, lay in (("i", "N"), ("j", "S"))
             if v.name == name and isinstance(v.struct, int)}
    res = infer_view(view, RULES, seeds)
    got = {v.name: res.marker(v.struct) for v in view.values}
    assert got["c"] == "NS"
    assert not res.conflicts

"""SetExprLayout on real models: complete, axis-consistent, idempotent, semantics-preserving."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from models import bert_like, resnet18_like, tiny_mlp
from oracles import missing_or_wrong_rank, symbol_violations
from tvm import relax

import msc_rules
from msc_rules.errors import MissingLayoutError
from msc_rules.passes import layout_edits
from msc_rules.rewrite import rewrite_module


def markers(mod: tvm.IRModule) -> list[tuple[str, str]]:
    """(var name, layout) of every param and binding, and the layout of every bound value."""
    out: list[tuple[str, str]] = []
    f = mod["main"]
    out += [(p.name, msc_rules.get_layout(p)) for p in f.params]
    for block in f.body.blocks:
        for b in block.bindings:
            out.append((b.var.name, msc_rules.get_layout(b.var)))
            out.append((b.var.name + "=", msc_rules.get_layout(b.value)))
    return out


def consts_of(mod: tvm.IRModule) -> list[object]:
    found: list[object] = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(e) if isinstance(e, tvm.ir.GenericConst) else None
    )
    return found


@pytest.fixture(scope="module")
def resnet() -> tuple[object, msc_rules.InferenceResult, tvm.IRModule]:
    m = resnet18_like()
    return m, msc_rules.infer_layouts(m.mod), msc_rules.SetExprLayout()(m.mod)


@pytest.fixture(scope="module")
def bert() -> tuple[object, msc_rules.InferenceResult, tvm.IRModule]:
    m = bert_like()
    return m, msc_rules.infer_layouts(m.mod), msc_rules.SetExprLayout()(m.mod)


def test_resnet_every_tensor_has_a_layout_of_its_rank(resnet) -> None:  # type: ignore[no-untyped-def]
    _, res, _ = resnet
    assert missing_or_wrong_rank(res) == []
    assert res.conflicts == []


def test_resnet_follows_cnn_conventions(resnet) -> None:  # type: ignore[no-untyped-def]
    _, _, annotated = resnet
    f = annotated["main"]
    assert msc_rules.get_layout(f.params[0]) == "NCHW"
    calls = [
        b
        for blk in f.body.blocks
        for b in blk.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    ]
    by_op: dict[str, list[str]] = {}
    for b in calls:
        by_op.setdefault(b.value.op.name, []).append(msc_rules.get_layout(b.value))
    for op in ("relax.nn.conv2d", "relax.nn.relu", "relax.nn.max_pool2d", "relax.add"):
        acts = [lay for lay in by_op[op] if len(lay) == 4]
        assert acts and set(acts) == {"NCHW"}, (op, by_op[op])
    conv_weights = [
        msc_rules.get_layout(b.value.args[1]) for b in calls if b.value.op.name == "relax.nn.conv2d"
    ]
    assert conv_weights and set(conv_weights) == {"OIHW"}
    # the flattened classifier input and the classifier output are NC
    assert by_op["relax.reshape"][-1] == "NC"
    assert by_op["relax.matmul"] == ["NC"]
    assert msc_rules.get_layout(calls[-1].value) == "NC"
    bn = [lay for lay in by_op["relax.nn.batch_norm"]]
    assert set(bn) == {"NCHW,O,O"}


def test_resnet_constants_carry_layouts(resnet) -> None:  # type: ignore[no-untyped-def]
    _, _, annotated = resnet
    consts = consts_of(annotated)
    assert consts and all(msc_rules.get_layout(c) for c in consts)


def test_resnet_symbolic_batch_keeps_one_letter(resnet) -> None:  # type: ignore[no-untyped-def]
    m, res, _ = resnet
    assert symbol_violations(res, m.batch_sym) == []


def test_bert_every_tensor_has_a_layout_of_its_rank(bert) -> None:  # type: ignore[no-untyped-def]
    _, res, _ = bert
    assert missing_or_wrong_rank(res) == []


def test_bert_symbolic_batch_and_sequence_keep_one_letter(bert) -> None:  # type: ignore[no-untyped-def]
    m, res, _ = bert
    assert symbol_violations(res, m.batch_sym) == []
    assert symbol_violations(res, m.seq_sym) == []


def test_bert_has_no_conflicts(bert) -> None:  # type: ignore[no-untyped-def]
    _, res, _ = bert
    assert [c.message for c in res.conflicts] == []


@pytest.mark.parametrize("which", ["resnet", "bert"])
def test_pass_is_idempotent_and_structure_preserving(which: str, request) -> None:  # type: ignore[no-untyped-def]
    m, _, annotated = request.getfixturevalue(which)
    tvm.ir.assert_structural_equal(m.mod, annotated)
    twice = msc_rules.SetExprLayout()(annotated)
    tvm.ir.assert_structural_equal(annotated, twice)
    assert markers(twice) == markers(annotated)
    again = msc_rules.SetExprLayout()(m.mod)
    assert markers(again) == markers(annotated)  # deterministic


def test_input_module_is_not_modified(resnet) -> None:  # type: ignore[no-untyped-def]
    m, _, _ = resnet
    assert all(lay == "" for _, lay in markers(m.mod))


@pytest.mark.parametrize("mode", ["0", "1"])
def test_releasing_rewrite_writes_the_same_and_frees_the_records(
        resnet, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # SetExprLayout rewrites with release=True. For the Python rebuild the edits hold the
    # view's records, each dropped once its binding is rebuilt; for the native one they
    # hold flat arrays only (no records: the view can go before the rewrite), and are
    # emptied once handed over. The result must not differ from a plain rewrite.
    monkeypatch.setenv("MSC_RULES_NATIVE", mode)
    m, _, _ = resnet
    res = msc_rules.infer_layouts(m.mod)
    kept_edits = layout_edits(res)
    kept = rewrite_module(m.mod, kept_edits)
    edits = layout_edits(res)
    released = rewrite_module(m.mod, edits, release=True)
    tvm.ir.assert_structural_equal(released, kept)
    assert markers(released) == markers(kept)
    records = edits["main"].records
    if mode == "1":
        assert records is None and not kept_edits["main"].records
        columns = kept_edits["main"].columns
        assert len(columns) == 1 and len(columns[0].texts) > 10
        assert not edits["main"].columns and not edits["main"].values
    else:
        assert records and all(r is None for _, recs in records.values() for r in recs)


def run_vm(mod: tvm.IRModule, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    exe = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    items = out if isinstance(out, (list, tuple)) or hasattr(out, "__len__") else [out]
    return [np.asarray(o.numpy()) for o in items]


@pytest.mark.parametrize("builder", [tiny_mlp, resnet18_like])
def test_annotated_module_compiles_and_gives_identical_outputs(builder) -> None:  # type: ignore[no-untyped-def]
    m = builder()
    before = run_vm(m.mod, m.example_inputs)
    after = run_vm(msc_rules.SetExprLayout()(m.mod), m.example_inputs)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_allow_missing_false_lists_every_unruled_binding(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = resnet18_like()
    rules_file = tmp_path / "strict.rules"
    rules_file.write_text("# nothing\n")
    # zeros_like has no rule in a library without it: use a library-less rule set
    rules = msc_rules.load_rules(rules_file, builtin=False)
    with pytest.raises(MissingLayoutError) as info:
        msc_rules.SetExprLayout(allow_missing=False, rules=rules)(m.mod)
    err = info.value
    assert err.function == "main" and len(err.bindings) == 40  # one per call binding
    assert "no rule for relax.nn.conv2d" in str(err)
    # with the library every binding is decided
    msc_rules.SetExprLayout(allow_missing=False)(tiny_mlp().mod)

"""Propagation: priorities, conflicts, provenance, calls between functions."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import models
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from strategies import relax_modules
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import msc_rules
from msc_rules import engine
from msc_rules.dsl.ruleset import RuleSet
from msc_rules.engine import infer_view
from msc_rules.graph import build_view
from msc_rules.library import default_rules


def layouts_by_name(result: msc_rules.InferenceResult) -> dict[str, str]:
    return {
        f"{v.func}:{v.name}": result.marker(v.struct)
        for v in result.view.values
        if v.kind != "const"
    }


def user_rules(tmp_path: Path, text: str) -> RuleSet:
    p = tmp_path / "user.rules"
    p.write_text(text)
    return msc_rules.load_rules(p)


@I.ir_module
class Elementwise:
    @R.function
    def main(x: R.Tensor((2, 3), "float32")) -> R.Tensor((2, 3), "float32"):
        with R.dataflow():
            a = R.exp(x)
            b = R.nn.relu(a)
            c = R.add(a, b)
            R.output(c)
        return c


def test_pure_elementwise_graph_gets_initial_letters() -> None:
    res = msc_rules.infer_layouts(Elementwise)
    assert set(layouts_by_name(res).values()) == {"AB"}
    assert res.conflicts == []
    x_leaf = res.view.values[0].struct
    assert isinstance(x_leaf, int)
    decision = res.decisions[x_leaf]
    assert decision is not None and decision.kind == "fallback"


def test_provenance_names_rule_and_order() -> None:
    res = msc_rules.infer_layouts(Elementwise)
    by = {v.name: v for v in res.view.values}
    leaf_b = by["b"].struct
    assert isinstance(leaf_b, int)
    d = res.decisions[leaf_b]
    assert d is not None and d.kind == "rule" and d.equation is not None
    assert d.equation.text == "out  = data" and d.equation.pos.file.endswith("elementwise.rules")
    assert res.site_name(d.site) == "main:b"
    leaf_x = by["x"].struct
    assert isinstance(leaf_x, int)
    dx = res.decisions[leaf_x]
    assert dx is not None and dx.order < d.order


def test_conflict_records_both_decisions(tmp_path: Path) -> None:
    rules = user_rules(
        tmp_path,
        'override op relax.exp(data) {\n    out = "AB"\n}\n'
        'override op relax.nn.relu(data) {\n    out = "BA"\n}\n',
    )

    @I.ir_module
    class M:
        @R.function
        def main(x: R.Tensor((3, 3), "float32")) -> R.Tensor((3, 3), "float32"):
            with R.dataflow():
                a = R.exp(x)
                b = R.nn.relu(x)
                c = R.add(a, b)
                R.output(c)
            return c

    res = msc_rules.infer_layouts(M, rules)
    assert len(res.conflicts) == 1
    c = res.conflicts[0]
    assert c.kind == "disagree" and c.proposed == "AB"
    assert c.existing is not None and c.existing.layout == "BA"
    assert res.site_name(c.site) == "main:c"
    assert c.equation.text.startswith("rhs = ") and c.equation.pos.file.endswith("broadcast.rules")
    assert c.existing.equation is not None and c.existing.equation.pos.file == str(
        tmp_path / "user.rules"
    )
    # the first strong decision is kept
    assert layouts_by_name(res)["main:b"] == "BA"


def test_rank_is_checked_on_every_decision(tmp_path: Path) -> None:
    rules = user_rules(tmp_path, 'override op relax.exp(data) {\n    out = "ABC"\n}\n')
    res = msc_rules.infer_layouts(Elementwise, rules)
    ranks = [c for c in res.conflicts if c.kind == "rank"]
    assert len(ranks) == 1 and "3 letters for a rank-2 tensor" in ranks[0].message
    assert all(len(lay) == 2 for lay in layouts_by_name(res).values())


def test_rule_evaluation_errors_become_conflicts(tmp_path: Path) -> None:
    rules = user_rules(
        tmp_path, "override op relax.exp(data) {\n    out = permute(data, [0, 5])\n}\n"
    )
    res = msc_rules.infer_layouts(Elementwise, rules)
    errs = [c for c in res.conflicts if c.kind == "error"]
    assert len(errs) == 1 and "out of range" in errs[0].message


@I.ir_module
class Linear:
    @R.function
    def main(
        w: R.Tensor((16, 8), "float32"),
        x: R.Tensor(("n", 16), "float32"),
        b: R.Tensor((8,), "float32"),
    ) -> R.Tensor(("n", 8), "float32"):
        with R.dataflow():
            y = R.matmul(x, w)
            z = R.add(y, b)
            R.output(z)
        return z


def test_weak_defaults_decide_weights_and_inputs() -> None:
    res = msc_rules.infer_layouts(Linear)
    got = layouts_by_name(res)
    # the weight comes first in program order, but waits for its weak default (IO)
    assert got == {"main:w": "IO", "main:x": "NC", "main:b": "C", "main:y": "NC", "main:z": "NC"}
    assert res.conflicts == []


@I.ir_module
class AttentionScores:
    @R.function
    def main(
        q: R.Tensor(("b", 4, "s", 8), "float32"), k: R.Tensor(("b", 4, "s", 8), "float32")
    ) -> R.Tensor(("b", 4, "s", "s"), "float32"):
        with R.dataflow():
            q1 = R.nn.relu(q)
            kt = R.permute_dims(k, [0, 1, 3, 2])
            s = R.matmul(q1, kt)
            R.output(s)
        return s


def test_role_letters_never_override_producer_letters() -> None:
    res = msc_rules.infer_layouts(AttentionScores)
    got = layouts_by_name(res)
    # K^T keeps K's letters (permuted) instead of taking the weight's "..IO"
    assert got["main:kt"] == "".join(got["main:k"][i] for i in (0, 1, 3, 2))
    assert "I" not in got["main:kt"] or got["main:k"].count("I") == 1
    # q and k share the batch symbol b: same letter on axis 0
    assert got["main:q"][0] == got["main:k"][0]


@I.ir_module
class Calls:
    @R.function
    def helper(a: R.Tensor((1, 3, 8, 8), "float32")) -> R.Tensor((1, 3, 8, 8), "float32"):
        with R.dataflow():
            r = R.nn.relu(a)
            R.output(r)
        return r

    @R.function
    def main(
        x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((3, 3, 1, 1), "float32")
    ) -> R.Tensor((1, 3, 8, 8), "float32"):
        cls = Calls
        y = cls.helper(x)
        z = (
            R.nn.conv2d(y, w, data_layout="NHWC", kernel_layout="OHWI")
            if False
            else R.nn.conv2d(y, w)
        )
        return z


def test_layouts_flow_through_calls_to_other_functions() -> None:
    res = msc_rules.infer_layouts(Calls)
    got = layouts_by_name(res)
    assert got["helper:a"] == "NCHW" and got["helper:r"] == "NCHW"
    assert got["main:x"] == "NCHW" and got["main:y"] == "NCHW"
    assert res.view.functions == ["main", "helper"]


def test_local_functions_are_walked() -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 3, 4, 4], "float32"))
    w = relax.Var("w", relax.TensorType([3, 3, 1, 1], "float32"))
    p = relax.Var("p", relax.TensorType([1, 3, 4, 4], "float32"))
    inner = relax.Function(
        [p], relax.SeqExpr([], relax.op.nn.relu(p)), relax.TensorType([1, 3, 4, 4], "float32")
    )
    with bb.function("main", [x, w]):
        f = bb.emit(inner)
        y = bb.emit(relax.Call(f, [x]))
        z = bb.emit(relax.op.nn.conv2d(y, w))
        bb.emit_func_output(z)
    mod = bb.get()
    res = msc_rules.infer_layouts(mod)
    got = layouts_by_name(res)
    local = f"main.{f.name}"
    assert got["main:x"] == "NCHW" and got[f"{local}:p"] == "NCHW"
    assert local in res.view.functions


def test_missing_entry_function_is_a_clear_error() -> None:
    try:
        msc_rules.infer_layouts(Elementwise, entry_name="nope")
    except msc_rules.IRError as err:
        assert "entry function 'nope'" in str(err) and "main" in str(err)
    else:
        raise AssertionError("expected IRError")


def test_results_are_deterministic() -> None:
    a = layouts_by_name(msc_rules.infer_layouts(AttentionScores))
    b = layouts_by_name(msc_rules.infer_layouts(AttentionScores))
    assert a == b


def test_broadcast_waits_for_the_full_shape_operand() -> None:
    @I.ir_module
    class M:
        @R.function
        def main(x: R.Tensor((2, 1, 5), "float32"), y: R.Tensor((2, 4, 5), "float32")) -> R.Tensor(
            (2, 4, 5), "float32"
        ):
            with R.dataflow():
                a = R.add(x, y)
                b = R.permute_dims(y, [2, 0, 1])
                c = R.nn.softmax(b)
                R.output(a, c)
            return a

    res = msc_rules.infer_layouts(M)
    got = layouts_by_name(res)
    assert got["main:a"] == got["main:y"]
    # x's stretched axis 1 does not lend its letter to the output
    assert got["main:x"][0] == got["main:y"][0] and got["main:x"][2] == got["main:y"][2]
    assert res.conflicts == []


def test_tuple_outputs_and_items() -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 6], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit(relax.op.split(x, 2, axis=1))
            a = bb.emit(relax.TupleGetItem(t, 1))
            b = bb.emit(relax.op.nn.softmax(a))
            gv = bb.emit_output(b)
        bb.emit_func_output(gv)
    res = msc_rules.infer_layouts(bb.get())
    got = layouts_by_name(res)
    assert got["main:x"] == "AB" and got[f"main:{b.name}"] == "AB"
    by = {v.name: v for v in res.view.values}
    assert res.marker(by[t.name].struct) == "AB,AB"
    assert by[a.name].struct == by[t.name].struct[1]  # the item shares its leaf


def test_unknown_rank_tensors_are_left_alone() -> None:
    @I.ir_module
    class M:
        @R.function
        def main(x: R.Tensor(dtype="float32", ndim=-1)) -> R.Tensor(dtype="float32", ndim=-1):
            with R.dataflow():
                y = R.exp(x)
                R.output(y)
            return y

    res = msc_rules.infer_layouts(M)
    assert layouts_by_name(res) == {"main:x": "", "main:y": ""}
    assert res.conflicts == []


def test_constants_get_layouts() -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    with bb.function("main", [x]):
        w = relax.const(tvm.runtime.tensor(__import__("numpy").zeros((4, 4, 3, 3), "float32")))
        y = bb.emit(relax.op.nn.conv2d(x, w))
        bb.emit_func_output(y)
    res = msc_rules.infer_layouts(bb.get())
    consts = [res.marker(v.struct) for v in res.view.values if v.kind == "const"]
    assert consts == ["OIHW"]


def test_reshape_ids_results_memoised_per_run_match_fresh_evaluation(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # reshape_ids keeps each call's result per run (functions.ReshapeMemo.done): the
    # encoder's head splits and merges repeat per layer. Every layout must be what a run
    # that evaluates every call afresh gives.
    from models import bert_like

    from msc_rules.dsl import functions

    mod = bert_like().mod
    memoised = msc_rules.infer_layouts(mod)

    class Forgetful(dict):  # type: ignore[type-arg]
        def __setitem__(self, key: object, value: object) -> None:
            pass

    original_init = functions.ReshapeMemo.__init__

    def fresh_init(self: functions.ReshapeMemo) -> None:
        original_init(self)
        self.done = Forgetful()

    monkeypatch.setattr(functions.ReshapeMemo, "__init__", fresh_init)
    fresh = msc_rules.infer_layouts(mod)
    assert fresh.layouts == memoised.layouts
    assert len(fresh.conflicts) == len(memoised.conflicts)
    assert sum(lay is not None for lay in fresh.layouts) > 100


def test_reshape_met_backward_waits_for_the_operands_producer() -> None:
    # c's backward reshape would split y's channel into fresh letters for b; it waits,
    # so b is named forward by its producer (relu of a, a split of x once the add
    # names x) and c's split then gives the same letters back
    @I.ir_module
    class M:
        @R.function
        def main(x: R.Tensor((4, 16), "float32"), y: R.Tensor((4, 16), "float32")):
            with R.dataflow():
                a = R.reshape(x, (4, 2, 8))
                b = R.nn.relu(a)
                c = R.reshape(b, (4, 16))
                d = R.add(y, c)
                e = R.add(x, y)
                out = (d, e)
                R.output(out)
            return out

    view = build_view(M, "main")
    leaf = {v.name: v.struct for v in view.values if isinstance(v.struct, int)}
    res = infer_view(view, default_rules(), seeds={leaf["y"]: "NC"})
    made = res.decisions[leaf["b"]]
    assert made is not None and res.site_name(made.site) == "main:b"
    assert res.layouts[leaf["a"]] == res.layouts[leaf["b"]]
    assert res.layouts[leaf["c"]] == "NC" and res.conflicts == []


def test_reshape_memo_undo_takes_back_a_deferred_evaluation() -> None:
    from msc_rules.dsl.functions import ReshapeMemo

    memo = ReshapeMemo()
    memo.record("C", 16, ("A", "B"), (2, 8))
    before = (dict(memo.split), dict(memo.merge), {k: set(v) for k, v in memo.parts.items()})
    memo.journal = []
    memo.record("C", 32, ("D", "E"), (4, 8))
    memo.record("F", 6, ("A", "G"), (2, 3))
    memo.remember(("C", 1, 2), (None, None, "ABD"))
    journal, memo.journal = memo.journal, None
    assert memo.split[("C", 32)] == (("D", "E"), (4, 8)) and memo.parts["C"] >= {"D", "E"}
    memo.undo(journal)
    assert (memo.split, memo.merge, memo.parts, memo.done) == (*before, {})


def test_static_leaf_types_made_in_bulk_match_those_read_one_by_one(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The engine numbers the natively read static shapes in bulk (_static_types): the
    same shape lists and type numbers as _tid makes leaf by leaf, the others left to it."""
    from models import resnet18_like

    from msc_rules import engine as E

    monkeypatch.setenv("MSC_RULES_NATIVE", "1")
    view = build_view(resnet18_like(dynamic=True).mod)
    assert any(i >= 0 for i in view._static_ids) and any(i < 0 for i in view._static_ids)
    eng = E._Engine(view, default_rules())
    bulk_shapes, bulk_tids = list(eng._shapes), list(eng._tids)
    assert sum(t is not E._ABSENT for t in bulk_tids) > len(bulk_tids) // 2
    n = len(bulk_tids)
    eng._shapes, eng._tids = [E._ABSENT] * n, [E._ABSENT] * n
    for leaf in range(n):
        one = eng._tid(leaf)
        if bulk_tids[leaf] is not E._ABSENT:
            assert bulk_tids[leaf] == one, leaf
            assert bulk_shapes[leaf] is eng._shapes[leaf], leaf
        else:
            assert view._static_ids[leaf] < 0 if leaf < len(view._static_ids) else True


class _CountingHeap:
    """engine's heapq, counting the pops (a stale weak default is popped, or pruned)."""

    def __init__(self) -> None:
        self.pops = 0

    def heappush(self, heap: list[Any], item: Any) -> None:
        heapq.heappush(heap, item)

    def heappop(self, heap: list[Any]) -> Any:
        self.pops += 1
        return heapq.heappop(heap)

    def heapify(self, heap: list[Any]) -> None:
        heapq.heapify(heap)


def _infer_pruning(mod: tvm.IRModule, prune_at: int, monkeypatch: Any) -> tuple[Any, int]:
    """Inference with the weak-default heap pruned at `prune_at` (engine.WEAK_PRUNE_AT):
    everything it tells, and the pops it took."""
    counter = _CountingHeap()
    monkeypatch.setattr(engine, "heapq", counter)
    monkeypatch.setattr(engine, "WEAK_PRUNE_AT", prune_at)
    res = infer_view(build_view(mod, "main"), default_rules())
    return (res.layouts, res.decisions, res.conflicts, res.unruled), counter.pops


@pytest.mark.parametrize("name", sorted(set(models.BUILDERS) - models.SLOW_BUILDERS))
def test_pruning_the_weak_heap_changes_nothing(name: str, monkeypatch: Any) -> None:
    mod = models.BUILDERS[name]().mod
    never, pops_never = _infer_pruning(mod, 1 << 60, monkeypatch)
    always, pops_always = _infer_pruning(mod, 0, monkeypatch)
    assert always == never
    # the stale weak defaults (a conv's, queued before its input was decided) are
    # dropped in one pass, not popped one by one
    assert pops_always <= pops_never
    if name in ("resnet18_like", "mobilenet_like", "unet_like"):
        assert pops_always < pops_never


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.function_scoped_fixture])
@given(mod=relax_modules())
def test_pruning_the_weak_heap_changes_nothing_on_random_modules(
        mod: tvm.IRModule, monkeypatch: Any) -> None:
    assert _infer_pruning(mod, 0, monkeypatch)[0] == _infer_pruning(mod, 1 << 60, monkeypatch)[0]

"""The engine's memo (engine.MEMOISE) changes nothing: differential tests.

The engine memoises pure equations' results per site signature and replays recorded
examinations of sites (msc_rules/engine.py). Every real model of the suite (models.py,
every import route of letter_models.py, channel_models.py) and random modules
(strategies.py) are inferred with the memo on and off: layouts, decisions (layout,
kind, site, equation, order), conflicts, unruled ops and `explain`'s text must be
identical. The paths those models never take are forced: a replay that diverges after
every decision it repeats, attributes that stop being shared, and a builtin that reads
run state without saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import channel_models as cm
import letter_models as lm
import models
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from strategies import relax_modules
from tvm.script import ir as I
from tvm.script import relax as R

import msc_rules
from msc_rules import engine
from msc_rules.dsl.functions import BUILTINS, Builtin, Env
from msc_rules.dsl.ruleset import RuleSet
from msc_rules.engine import InferenceResult, infer_view
from msc_rules.graph import build_view
from msc_rules.library import default_rules
from msc_rules.report import analyze, explain, render

Outcome = tuple[Any, ...]


def outcome(result: InferenceResult) -> Outcome:
    """Everything an inference result tells: layouts, decisions, conflicts, unruled."""
    return result.layouts, result.decisions, result.conflicts, result.unruled


def infer(mod: tvm.IRModule, memo: bool, rules: RuleSet | None = None) -> InferenceResult:
    saved = engine.MEMOISE
    engine.MEMOISE = memo
    try:
        return infer_view(build_view(mod, "main"), rules or default_rules())
    finally:
        engine.MEMOISE = saved


def assert_same(mod: tvm.IRModule, rules: RuleSet | None = None) -> InferenceResult:
    """Infer `mod` with the memo off and on; the outcomes must be equal."""
    off = infer(mod, False, rules)
    on = infer(mod, True, rules)
    assert outcome(on) == outcome(off)
    return on


# ---- every real model of the suite -----------------------------------------------------


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in models.SLOW_BUILDERS else n
    for n in sorted(models.BUILDERS)])
def test_models(name: str) -> None:
    build = models.BUILDERS[name]
    assert_same(build().mod)
    if name not in models.SLOW_BUILDERS:
        assert_same(build(dynamic=False).mod)


@pytest.mark.parametrize(("name", "route"), [(m, r) for m in lm.MODELS for r in lm.ROUTES])
def test_letter_models(name: str, route: str) -> None:
    try:
        model = lm.build(name, route)
    except lm.RouteUnsupported as e:
        pytest.skip(str(e))
    assert_same(model.mod)


@pytest.mark.parametrize("build", [cm.conv_bias_net, cm.dense_net, cm.depthwise_net,
                                   cm.gqa_decoder], ids=lambda f: f.__name__)
def test_channel_models(build: Callable[[], tuple[tvm.IRModule, Any]]) -> None:
    assert_same(build()[0])


@pytest.mark.parametrize("name", [*cm.ONNX_MODELS, "gqa_decoder"])
def test_channel_models_onnx(name: str) -> None:
    assert_same(cm.onnx_model(name)[0])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(relax_modules())
def test_random_modules(mod: tvm.IRModule) -> None:
    assert_same(mod)


def test_explain_text_is_the_same() -> None:
    mod = lm.build("bert", "ep").mod
    texts = []
    for memo in (False, True):
        engine.MEMOISE = memo
        try:
            analysis = analyze(mod, default_rules())
            last = analysis.names.value_name[-1]
            texts.append(render(explain(analysis, last, tree=True)))
        finally:
            engine.MEMOISE = True
    assert texts[0] == texts[1]
    assert "rule" in texts[0]


def scans(mod: tvm.IRModule, memo: bool, op: str | None = None) -> int:
    """The examinations of sites (of `op`, or all) that scanned their equations (the
    others replayed a recorded examination)."""
    count = []
    original = engine._Engine._scan

    def counting(self: engine._Engine, site: Any, pending: Any, start: int, *rest: Any) -> Any:
        if start == 0 and (op is None or site.rule.op == op):
            count.append(site.index)
        return original(self, site, pending, start, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine._Engine, "_scan", counting)
        infer(mod, memo)
    return len(count)


def test_memo_is_used_on_repeated_layers() -> None:
    """The memo replays most examinations of a model whose layers repeat (what makes
    it worth its keys): BERT's adds, matmuls, permutes and reshapes."""
    mod = models.bert_like().mod
    assert scans(mod, True) < scans(mod, False) // 2


# ---- the paths the models never take --------------------------------------------------


def end_state(mod: tvm.IRModule, memo: bool) -> tuple[Outcome, list[Any]]:
    """The outcome and, per site, the equations still pending at the end."""
    saved = engine.MEMOISE
    engine.MEMOISE = memo
    try:
        eng = engine._Engine(build_view(mod, "main"), default_rules())
        eng.run()
    finally:
        engine.MEMOISE = saved
    pending = [None if s is None else tuple(s.pending) for s in eng.sites]
    return (eng.layouts, eng.kinds, eng.decided_by, eng.sequence, eng.raw_conflicts), pending


def test_a_replay_that_diverges_scans_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decision a replay repeats 'comes out differently' (its recorded layouts
    never match): the scan goes on after it each time, and nothing changes, down to
    the equations left pending at each site."""
    original = engine._Engine._replay
    diverged = []

    def never_matching(self: engine._Engine, site: Any, transcript: Any) -> None:
        events, final, *_ = transcript
        # (a first decision as the result it records, given to its equation's target)
        number = {id(step[0]): k for k, step in enumerate(site.plan.steps)}
        forged = tuple(
            (e[0], engine._GIVE, number[id(e[2])], e[3], ("differs",), e[5])
            if e[1] == engine._FIRST
            else (*e[:4], ("differs",), *e[5:]) if e[1] == engine._GIVE else e
            for e in events)
        diverged.extend(e for e in forged if e[1] == engine._GIVE)
        original(self, site, (forged, final, None))
        # the layouts did match: scanning on kept what the replay would have kept
        assert tuple(site.pending) == final

    mods = (models.bert_like().mod, models.gpt2_like().mod, lm.build("bert", "ep").mod,
            lm.build("swin", "ep").mod)
    expected = [end_state(mod, False) for mod in mods]
    record = engine._Engine._record

    def through_replay(self: engine._Engine, site: Any, key: Any) -> None:
        # (a transcript whose effects cannot come out differently is replayed without
        # checks: none is, here)
        record(self, site, key)
        got = self._transcripts[key]  # type: ignore[index]
        if got is not engine._UNRECORDED:
            self._transcripts[key] = (*got[:2], None)  # type: ignore[index]

    monkeypatch.setattr(engine._Engine, "_replay", never_matching)
    monkeypatch.setattr(engine._Engine, "_record", through_replay)
    assert [end_state(mod, True) for mod in mods] == expected
    assert diverged


def test_attributes_printed_with_str_stop_sharing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attribute value read through str() may differ between structurally equal
    attributes (bound var names): its type stops sharing, every memoised result is
    dropped, and nothing changes."""
    unshared = []
    original = engine._Engine._unshare

    def counting(self: engine._Engine, site: Any) -> None:
        unshared.append(type(site.call_attrs))
        original(self, site)

    monkeypatch.setattr(engine, "_exact", lambda v: False)
    monkeypatch.setattr(engine._Engine, "_unshare", counting)
    for mod in (models.bert_like().mod, models.resnet18_like().mod):
        assert_same(mod)
    assert len(set(unshared)) > 1


@I.ir_module
class TwoReluOfOne:
    @R.function
    def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
        with R.dataflow():
            a = R.nn.relu(x)
            b = R.nn.relu(x)
            c = R.add(a, b)
            R.output(c)
        return c


def _tick(env: Env, role: str) -> str | None:
    """The port's layout rotated by the number of calls so far (run state)."""
    layout = env.layout(role)
    if not isinstance(layout, str) or not layout:
        return None
    calls: list[int] = env.run_state("tick", list)
    calls.append(1)
    k = len(calls) % len(layout)
    return layout[k:] + layout[:k]


def test_undeclared_run_state_is_not_memoised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A builtin that reads run state without `stateful=True`: the engine sees the read
    and memoises neither the result nor the examination, so the two relus of one input
    get different results (memoised, the second would repeat the first's)."""
    monkeypatch.setitem(BUILTINS, "tick", Builtin(
        "tick", _tick, 1, 1, (0,), (), True, False, False, "test", False, "", False, False))
    path = tmp_path / "tick.rules"
    path.write_text("override op relax.nn.relu(data) {\n    out = tick(data)\n}\n")
    rules = msc_rules.load_rules(path)
    relu = rules.lookup("relax.nn.relu")
    assert relu is not None and relu.equations[0].inputs is not None  # looks pure
    result = assert_same(TwoReluOfOne, rules)
    by_name = {v.name: result.marker(v.struct) for v in result.view.values}
    assert by_name["a"] != by_name["b"]


def test_stateful_equations_are_marked() -> None:
    """Equations calling reshape_ids (reshape memory) have no Inputs (their results are
    no function of the call alone) but settle (CompiledEquation.settled: memoised once
    an evaluation is kept, the shapes they read in the signature); those calling
    fresh_beside do not settle; the others say what they read."""
    rules = default_rules()
    reshape = rules.lookup("relax.reshape")
    permute = rules.lookup("relax.permute_dims")
    assert reshape is not None and permute is not None
    assert all(eq.inputs is None for eq in reshape.equations)
    assert [eq.settled.types for eq in reshape.equations if eq.settled] == [("data", "out")] * 2
    fresh = [eq for rule in rules.rules.values() for eq in rule.equations
             if "fresh_beside" in eq.text]
    assert fresh and all(eq.inputs is None and eq.settled is None for eq in fresh)
    forward = permute.equations[0].inputs
    assert forward is not None
    assert forward.layouts == ("data",) and forward.attrs


def test_reshape_sites_are_replayed() -> None:
    """reshape_ids settles: the examinations of reshape sites are recorded and replayed
    like any other (BERT's head splits and merges repeat per layer), and the outcome
    is the memo-off one, where every reshape is evaluated afresh."""
    mod = models.bert_like().mod
    result = assert_same(mod)
    reshapes = sum(op == "relax.reshape" for op in result.view.sites.op)
    off = scans(mod, False, "relax.reshape")
    assert off >= reshapes and scans(mod, True, "relax.reshape") < off // 2



@I.ir_module
class ThreeConvs:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w: R.Tensor((4, 4, 3, 3), "float32"),
             v: R.Tensor((3, 3, 8, 8), "float32")) -> R.Tensor((1, 2, 4, 8), "float32"):
        with R.dataflow():
            a = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            b = R.nn.conv2d(a, w, padding=[1, 1, 1, 1])
            c = R.nn.conv2d(b, v, strides=[2, 2], padding=[1, 1, 1, 1], data_layout="NHWC",
                            kernel_layout="HWIO", out_layout="NHWC")
            R.output(c)
        return c


def test_attribute_seeds_are_evaluated_once_per_attributes() -> None:
    """The attribute seeds of calls with structurally equal attributes (and ports of the
    same ranks) are evaluated once: the second conv repeats the first's results, the
    third (other layouts) evaluates its own; the outcome is the memo-off one."""
    evaluated = []
    original = engine._Engine._evaluate

    def counting(self: engine._Engine, site: Any, eq: Any, roles: Any) -> Any:
        evaluated.append(site.index)
        return original(self, site, eq, roles)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine._Engine, "_evaluate", counting)
        result = assert_same(ThreeConvs)
        evaluated.clear()
        infer(ThreeConvs, True)
    first, _, third = (i for i, op in enumerate(result.view.sites.op) if op == "relax.nn.conv2d")
    assert sorted(set(evaluated)) == [first, third]
    by_name = {v.name: result.marker(v.struct) for v in result.view.values}
    assert by_name["b"] == "NCHW" and by_name["c"] == "NHWC"


@I.ir_module
class MergeBeforeAGuess:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), g: R.Tensor((1, 4, 8, 8, 1), "float32")):
        with R.dataflow():
            a = R.reshape(x, (1, 4, 64))
            z = R.nn.relu(x)
            h = R.squeeze(g, axis=[4])
            b = R.reshape(h, (1, 4, 64))
            out = (a, z, b)
            R.output(out)
        return out


def test_a_replayed_merge_mints_apart_from_a_later_guess() -> None:
    """`a` merges x's last two axes into a minted letter (E) before any guess; g is then
    guessed ABCDE, and `b` repeats a's examination (same signature, same layouts): its
    merged axis must not take the guess's E (minted apart: F), so the replay cannot
    decide the recorded result as it is."""
    outcomes, names = [], []
    for memo in (False, True):
        saved = engine.MEMOISE
        engine.MEMOISE = memo
        try:
            view = build_view(MergeBeforeAGuess, "main")
            leaf = {v.name: v.struct for v in view.values if isinstance(v.struct, int)}
            result = infer_view(view, default_rules(), seeds={leaf["z"]: "ABCD"})
        finally:
            engine.MEMOISE = saved
        outcomes.append(outcome(result))
        names.append({name: result.layouts[x] for name, x in leaf.items()})  # type: ignore[index]
    assert outcomes[0] == outcomes[1]
    assert names[1]["g"] == "ABCDE" and names[1]["a"] == "ABE" and names[1]["b"] == "ABF"
    assert scans(MergeBeforeAGuess, True, "relax.reshape") < scans(MergeBeforeAGuess, False,
                                                                     "relax.reshape")


# ---- what a site keeps ----------------------------------------------------------------


@I.ir_module
class OddArities:
    """A tuple port (concat), a call lacking its optional operand (a conv without a
    bias is fine; nll_loss without weights), a tuple output (split)."""

    @R.function
    def main(x: R.Tensor((2, 4, 6), "float32"), t: R.Tensor((2,), "int64")) \
            -> R.Tensor((), "float32"):
        with R.dataflow():
            c = R.concat((x, x), axis=1)
            s = R.split(c, 2, axis=1)
            a = s[0]
            m = R.mean(a, axis=[1])
            loss = R.nn.nll_loss(m, t)
            R.output(loss)
        return loss


@pytest.mark.parametrize("native", ["0", "1"])
def test_a_sites_values_are_its_ports(native: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A site keeps its ports as values by position (read so by replays); its ports by
    role, made from them when first needed, are the call's arguments by role and its
    output, as the view's site table holds them (read natively or not), and a port
    read by position agrees."""
    monkeypatch.setenv("MSC_RULES_NATIVE", native)
    for mod in (OddArities, models.bert_like().mod):
        view = build_view(mod, "main")
        eng = engine._Engine(view, default_rules())
        seen = 0
        for i, site in enumerate(eng.sites):
            if site is None:
                continue
            roles = site.rule.roles
            want: dict[str, Any] = dict(zip(roles, view.sites.args_of(i)))
            want["out"] = view.sites.out[i]
            assert engine._ports(site) == want
            for role in (*roles, "out"):
                assert site.at(role) == want.get(role)
            seen += 1
        assert seen > 3
        eng.run()  # (ports made before the run change nothing either)


def test_a_rules_plan_is_kept_while_the_rule_lives() -> None:
    """Engines share a rule's plan; it goes with its rule (a new rule at a reused id
    gets its own)."""
    import gc

    rules = default_rules()
    e1 = engine._Engine(build_view(OddArities, "main"), rules)
    e2 = engine._Engine(build_view(OddArities, "main"), rules)
    assert [s.plan for s in e1.sites if s] == [s.plan for s in e2.sites if s]
    rule = engine._identity_rule()
    plan = engine._plan_of(rule)
    assert engine._plan_of(rule) is plan and plan.rule() is rule
    key = id(rule)
    del rule, plan
    gc.collect()
    assert key not in engine._PLANS

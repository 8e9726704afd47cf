"""The native naming walk (msc_rules/native/naming.cc) against the Python one.

`plan_names` runs with MSC_RULES_NATIVE=0 (naming.py's `_Namer`) and =1 on every real
model of the suite, on those models already named (names kept from the spans), with
their markers under the legacy keys and with clashing old names, on the hand-built
modules of test_naming.py and test_odd_modules.py and on random modules; every name,
node, SharedRef and edit must be the same, and the native walk must really have run.
A module it does not know goes to the Python walk whole, with the same plan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from models import BUILDERS, SLOW_BUILDERS
from strategies import relax_modules
from tvm import relax

import msc_rules
from msc_rules import naming
from msc_rules.rewrite import JoinedTexts

Plan = tuple[Any, ...]


def snapshot(plan: naming.NamePlan) -> Plan:
    """Everything a plan tells: names, nodes, SharedRefs, edits (as compared values)."""
    edits = {top: (e.values, e.vars) for top, e in plan.edits(columns=False).items()}
    columns = {top: [(c.key, c.texts, c.vars, c.values) for c in e.columns]
               for top, e in plan.edits().items()}
    return (plan.names(), plan.handles, plan.shared_refs(), edits,
            [(top, list(nodes), list(what)) for top, nodes, what in plan.changes], columns)


def both_ways(mod: tvm.IRModule, **kwargs: Any) -> tuple[Plan, Plan, list[Any]]:
    """(Python plan, native plan, the native walk's fallbacks meanwhile)."""
    plans = []
    before = len(naming.fallbacks)
    with pytest.MonkeyPatch.context() as mp:
        for mode in ("0", "1"):
            mp.setenv("MSC_RULES_NATIVE", mode)
            plans.append(snapshot(naming.plan_names(mod, **kwargs)))
    return plans[0], plans[1], naming.fallbacks[before:]


def same_both_ways(mod: tvm.IRModule, **kwargs: Any) -> Plan:
    """The plan, checked to be the same both ways and made by the native walk."""
    py, cc, fell_back = both_ways(mod, **kwargs)
    assert not fell_back  # the native walk really ran
    assert py == cc
    return py


def relabel(mod: tvm.IRModule, *pairs: tuple[str, str]) -> tvm.IRModule:
    """`mod` with its span text edited (`old` -> `new` in every span, through JSON)."""
    text = tvm.ir.save_json(mod)
    for old, new in pairs:
        text = text.replace(old, new)
    out = tvm.ir.load_json(text)
    assert isinstance(out, tvm.IRModule)
    return out


LEGACY = (("<Name>", "<name>"), ("</Name>", "</name>"), ("<SharedRef>", "<master>"),
          ("</SharedRef>", "</master>"))


def _params(names: Any) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILDERS else n
            for n in names]


@pytest.mark.parametrize("name", _params(BUILDERS))
def test_real_models_get_the_same_plan_both_ways(name: str) -> None:
    mod = BUILDERS[name]().mod
    names, handles, refs, edits, _, columns = same_both_ways(mod)
    # the columns form: the Name column first, one text per name
    assert columns["main"][0][0] == "Name" and columns["main"][0][1] == names
    assert len(names) == len(handles) > 10 and len(set(names)) == len(names)
    assert set(edits) == {"main"} and len(edits["main"][0]) == len(names)
    named = msc_rules.SetExprName()(mod)
    again = same_both_ways(named)
    assert again[0] == names and again[3] == {}  # names kept from the spans: no edits
    # the legacy keys are read and rewritten; clashing old names are deduplicated
    legacy = same_both_ways(relabel(named, *LEGACY))
    assert legacy[0] == names and len(legacy[3]["main"][0]) == len(names)
    clashing = same_both_ways(relabel(named, ("<Name>relu", "<Name>add"),
                                      ("<Name>conv2d", "<Name>matmul")))
    assert len(set(clashing[0])) == len(clashing[0])
    if refs:  # a SharedRef already written is kept; a stale one is rewritten
        assert same_both_ways(named)[2] == refs
        stale = relabel(named, ("<SharedRef>", "<SharedRef>x"))
        assert same_both_ways(stale)[2] == refs


@pytest.mark.parametrize("name", ["resnet18_like", "onnx_cnn",
                                  pytest.param("llama_like", marks=pytest.mark.slow)])
def test_var_names_and_target_give_the_same_plan_both_ways(name: str) -> None:
    mod = BUILDERS[name]().mod
    wishes = {str(b.var.name): f"block.{i}/x::y" for i, b in
              enumerate(mod["main"].body.blocks[0].bindings) if i % 3 == 0}
    plan = same_both_ways(mod, var_names=wishes, target="llvm")
    assert "block_0_x_y" in plan[0]


def _hand_built() -> list[Any]:
    """The hand-built modules of test_naming.py and test_odd_modules.py."""
    import test_naming as tn
    import test_odd_modules as odd

    mods: list[Any] = [pytest.param(v, {}, id=k) for k, v in sorted(vars(odd).items())
                       if isinstance(v, tvm.IRModule)]
    mods += [pytest.param(odd.call_tir_module(), {}, id="call_tir_module"),
             pytest.param(odd.shared_constant_module(), {}, id="shared_constant_module"),
             pytest.param(odd.nested_local_functions(30), {}, id="nested_local_functions"),
             pytest.param(tn.Branches, {}, id="Branches"),
             pytest.param(tn.conv_bn_ln(), {}, id="conv_bn_ln"),
             pytest.param(tn.chain(200), {}, id="chain"),
             pytest.param(tn.fused_module(twice=True), {}, id="fused_twice"),
             pytest.param(tn.fused_module(unique="block1.conv"), {}, id="fused_unique"),
             pytest.param(tn.fused_module(composite="dnnl.nn.conv2d"), {"target": "dnnl"},
                          id="fused_composite")]
    return mods


@pytest.mark.parametrize(("mod", "kwargs"), _hand_built())
def test_hand_built_modules_get_the_same_plan_both_ways(mod: tvm.IRModule,
                                                         kwargs: dict[str, Any]) -> None:
    same_both_ways(mod, **kwargs)
    named = msc_rules.SetExprName(**kwargs)(mod)
    same_both_ways(named, **kwargs)
    same_both_ways(relabel(named, *LEGACY), **kwargs)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])
@given(mod=relax_modules())
def test_random_modules_get_the_same_plan_both_ways(mod: tvm.IRModule) -> None:
    same_both_ways(mod)
    same_both_ways(msc_rules.SetExprName()(mod))


def _fused_with(attr: str, value: Any) -> tvm.IRModule:
    """test_naming.py's fused module, its function's attribute `attr` set to `value`."""
    import test_naming as tn

    mod = tn.fused_module()
    mod[mod.get_global_var("fused")] = mod["fused"].with_attr(attr, value)
    return mod


@pytest.mark.parametrize(("make", "kwargs", "expected"), [
    # not a string: the native walk reads string attributes only
    (lambda: _fused_with("Unique", 7), {}, "7"),
    (lambda: _fused_with("Composite", 3), {}, "conv2d_1"),
    # a name with a NUL character cannot go through the NUL-joined names
    (lambda: _fused_with("Unique", "u"), {"var_names": {"lv": "a\0b"}}, "a\0b"),
    # nor one with the unit separator that joins them for the rebuild
    (lambda: _fused_with("Unique", "u"), {"var_names": {"lv": "a\x1fb"}}, "a\x1fb"),
], ids=["int_unique", "int_composite", "nul_in_a_name", "separator_in_a_name"])
def test_a_module_the_native_walk_does_not_know_falls_back_with_the_same_plan(
        make: Callable[[], tvm.IRModule], kwargs: dict[str, Any], expected: str) -> None:
    py, cc, fell_back = both_ways(make(), **kwargs)
    assert len(fell_back) == 1 and fell_back[0][0] == "main"
    assert py == cc
    assert expected in py[0]


def test_a_rule_that_fails_fails_the_same_way_both_ways(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rules = msc_rules.load_rules()

    def base_name(op: str) -> str:
        raise msc_rules.MscRulesError(f"no base name for {op}")

    monkeypatch.setattr(rules, "base_name", base_name)
    mod = BUILDERS["tiny_mlp"]().mod
    for mode in ("0", "1"):
        monkeypatch.setenv("MSC_RULES_NATIVE", mode)
        with pytest.raises(msc_rules.MscRulesError, match="no base name for relax"):
            naming.plan_names(mod, rules)
        # annotate too, where the native naming goes along with the read (its error
        # caught inside the one walk, the names handed to Python, which raises it)
        before = len(naming.fallbacks)
        with pytest.raises(msc_rules.MscRulesError, match="no base name for relax"):
            msc_rules.annotate(mod, rules)
        if mode == "1":
            assert [f for f, _ in naming.fallbacks[before:]] == ["main"]
            assert "no base name for relax" in naming.fallbacks[-1][1]


def test_name_of_finds_a_node_by_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = BUILDERS["tiny_mlp"]().mod
    call = mod["main"].body.blocks[0].bindings[-1].value
    found = []
    for mode in ("0", "1"):
        monkeypatch.setenv("MSC_RULES_NATIVE", mode)
        plan = naming.plan_names(mod)
        assert plan.name_of(relax.const(1.0)) == "" and plan.name_of("not a node") == ""
        found.append(plan.name_of(call))
    assert found[0] and found[0] == found[1]


def test_the_native_name_column_is_one_joined_text_and_writes_the_same_markers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mod = BUILDERS["resnet18_like"]().mod
    written = []
    for mode in ("0", "1"):
        monkeypatch.setenv("MSC_RULES_NATIVE", mode)
        plan = naming.plan_names(mod)
        column = plan.edits()["main"].columns[0]
        assert column.key == "Name" and list(column.texts) == plan.names()
        # natively: one str for the whole column, no str per name until asked
        assert isinstance(column.texts, JoinedTexts) == (mode == "1")
        out = msc_rules.SetExprName()(mod)
        bindings = out["main"].body.blocks[0].bindings
        got = [msc_rules.get_name(b.value) for b in bindings]
        assert got == [plan.name_of(b.value) for b in mod["main"].body.blocks[0].bindings]
        written.append(got)
    assert written[0] == written[1] and len(set(written[0])) == len(written[0]) > 10


def test_joined_texts_refuse_a_text_holding_the_separator() -> None:
    texts = JoinedTexts("a\x1fb\x1fc", 3)
    assert len(texts) == 3 and list(texts) == ["a", "b", "c"] and texts[1] == "b"
    assert texts == ["a", "b", "c"] and list(JoinedTexts("", 0)) == []
    with pytest.raises(ValueError, match="separator"):
        JoinedTexts("a\x1fb", 1)

"""annotate's one read (msc_rules/joint_read.py, native/naming.cc's `read_and_name`).

With the native walk on, annotate calls the native side once to read the module: one
`read_and_name` (the names plan along with the entry function's read for the view), no
`plan_names`, and a `read` only for each other global function the view reads. The
view and the plan it gives are those of `build_view` and `plan_names` made apart (both
ways on the real models, the odd modules and random modules); each half falls back to
Python alone; and annotate's markers are SetExprName's then SetExprLayout's.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from models import BUILDERS, SLOW_BUILDERS
from strategies import relax_modules
from test_naming_native import _fused_with, snapshot
from test_native import _odd_modules, span_texts
from tvm import relax
from view_compare import view_data

import msc_rules
from msc_rules import graph, naming, native
from msc_rules.joint_read import read_and_name
from msc_rules.library import default_rules


class _Counting:
    """The native module, counting the calls of each of its functions."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.module, name)

        def call(*args: Any) -> Any:
            self.calls[name] += 1
            return fn(*args)

        return call


def _counted_annotate(mod: tvm.IRModule, monkeypatch: pytest.MonkeyPatch
                      ) -> tuple[tvm.IRModule, Counter[str]]:
    monkeypatch.setenv("MSC_RULES_NATIVE", "1")
    counting = _Counting(native.load())
    with monkeypatch.context() as mp:
        mp.setattr(native, "get", lambda: counting)
        out = msc_rules.annotate(mod)
    return out, counting.calls


def _two_passes(mod: tvm.IRModule) -> tvm.IRModule:
    out = msc_rules.SetExprLayout()(msc_rules.SetExprName()(mod))
    assert isinstance(out, tvm.IRModule)
    return out


def _check_markers(mod: tvm.IRModule, out: tvm.IRModule,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`out` (annotate's, natively) has the markers of SetExprName then SetExprLayout,
    natively and in Python, and annotate's in Python."""
    tvm.ir.assert_structural_equal(out, mod)
    got = span_texts(out)
    assert any("<Name>" in t and "<Layout>" in t for _, t in got)
    assert got == span_texts(_two_passes(mod))
    monkeypatch.setenv("MSC_RULES_NATIVE", "0")
    assert got == span_texts(_two_passes(mod))
    assert got == span_texts(msc_rules.annotate(mod))
    monkeypatch.setenv("MSC_RULES_NATIVE", "1")


def _params(names: Any) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILDERS else n
            for n in names]


@pytest.mark.parametrize("name", _params(BUILDERS))
def test_annotate_reads_a_real_model_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = BUILDERS[name]().mod
    read_before, names_before = len(graph.read_fallbacks), len(naming.fallbacks)
    out, calls = _counted_annotate(mod, monkeypatch)
    assert graph.read_fallbacks[read_before:] == [] and naming.fallbacks[names_before:] == []
    reads = {k: calls[k] for k in ("read_and_name", "read", "plan_names")}
    assert reads == {"read_and_name": 1, "read": 0, "plan_names": 0}
    _check_markers(mod, out, monkeypatch)


def test_a_callee_is_read_apart_and_named_in_the_one_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import test_naming as tn

    mod = tn.fused_module(twice=True)
    out, calls = _counted_annotate(mod, monkeypatch)
    # main's read walks main only: the view reads `fused` (once) on its own
    assert (calls["read_and_name"], calls["read"], calls["plan_names"]) == (1, 1, 0)
    _check_markers(mod, out, monkeypatch)


def _joint(mod: tvm.IRModule) -> tuple[dict[str, Any], Any]:
    read = read_and_name(mod, default_rules())
    return view_data(read.view), snapshot(read.names())


def _apart(mod: tvm.IRModule) -> tuple[dict[str, Any], Any]:
    return view_data(graph.build_view(mod)), snapshot(naming.plan_names(mod))


def _same_as_apart(mod: tvm.IRModule, monkeypatch: pytest.MonkeyPatch) -> None:
    """The view and plan of the one walk are those of build_view and plan_names, both
    ways, and the native walks did not hand anything to Python."""
    monkeypatch.setenv("MSC_RULES_NATIVE", "0")
    py = _apart(mod)
    monkeypatch.setenv("MSC_RULES_NATIVE", "1")
    read_before, names_before = len(graph.read_fallbacks), len(naming.fallbacks)
    apart, joint = _apart(mod), _joint(mod)
    assert graph.read_fallbacks[read_before:] == [] and naming.fallbacks[names_before:] == []
    assert joint == apart
    assert joint == py


@pytest.mark.parametrize("name", _params(BUILDERS))
def test_the_one_walk_gives_the_view_and_plan_of_the_two(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _same_as_apart(BUILDERS[name]().mod, monkeypatch)


@pytest.mark.parametrize("mod", _odd_modules())
def test_odd_modules_get_the_view_and_plan_of_the_two(
        mod: tvm.IRModule, monkeypatch: pytest.MonkeyPatch) -> None:
    _same_as_apart(mod, monkeypatch)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])
@given(mod=relax_modules())
def test_random_modules_get_the_view_and_plan_of_the_two(mod: tvm.IRModule) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _same_as_apart(mod, mp)


def test_names_the_native_walk_refuses_leave_the_read_native(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A `Unique` that is no string: the native naming refuses the module, which is
    named in Python; the read of main stays native."""
    mod = _fused_with("Unique", 7)
    read_before, names_before = len(graph.read_fallbacks), len(naming.fallbacks)
    out, calls = _counted_annotate(mod, monkeypatch)
    assert [f for f, _ in naming.fallbacks[names_before:]] == ["main"]
    assert graph.read_fallbacks[read_before:] == []
    assert calls["read_and_name"] == 1 and calls["plan_names"] == 0
    assert "<Name>7</Name>" in str(span_texts(out))
    _check_markers(mod, out, monkeypatch)


def _free_alias_module() -> tvm.IRModule:
    """main binds `y` to a var bound nowhere (an alias the native read leaves to
    Python: it cannot tell the struct of a var it did not see defined)."""
    t = relax.TensorType((2, 3), "float32")
    x, free, y, z = (relax.Var(n, t) for n in ("x", "free", "y", "z"))
    body = relax.SeqExpr([relax.BindingBlock([
        relax.VarBinding(z, relax.op.add(x, x)),
        relax.VarBinding(y, free),
        relax.VarBinding(relax.Var("w", t), relax.op.multiply(y, z)),
        relax.VarBinding(relax.Var("v", t), relax.op.exp(z)),
    ])], z)
    return tvm.IRModule({tvm.ir.GlobalVar("main"): relax.Function([x], body, t)})


def test_a_read_the_native_walk_refuses_leaves_the_names_native(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The read refuses main midway: the view reads it in Python, and the naming walk
    goes on alone over the bindings the read did not hand over."""
    mod = _free_alias_module()
    read_before, names_before = len(graph.read_fallbacks), len(naming.fallbacks)
    out, calls = _counted_annotate(mod, monkeypatch)
    refused = graph.read_fallbacks[read_before:]
    assert [f for f, _ in refused] == ["main"]
    assert "an alias of a value of another function" in refused[0][1]
    assert naming.fallbacks[names_before:] == []
    assert calls["read_and_name"] == 1 and calls["plan_names"] == 0
    names = [t for _, t in span_texts(out) if "<Name>" in t]
    assert any("<Name>exp</Name>" in t for t in names)  # (a binding after the refusal)
    _check_markers(mod, out, monkeypatch)
    monkeypatch.setenv("MSC_RULES_NATIVE", "1")
    assert _joint(mod) == _apart(mod)


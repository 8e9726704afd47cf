"""The native read (msc_rules/native/read.cc) against graph.py's Python read: the
dependency view built both ways must be the same, value for value, site for site, on
every real model of the suite, random modules (tests/strategies.py) and the odd modules
of tests/test_odd_modules.py; a function the C++ read does not know is read in Python."""

from __future__ import annotations

from typing import Any

import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from models import BUILDERS, SLOW_BUILDERS
from strategies import relax_modules
from test_native import _odd_modules
from tvm import relax
from view_compare import view_data

from msc_rules import graph


def _both_ways(mod: tvm.IRModule, monkeypatch: pytest.MonkeyPatch,
               entry: str = "main") -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """(view data read in Python, read natively, the functions the native read refused)."""
    monkeypatch.setenv("MSC_RULES_NATIVE", "0")
    py = view_data(graph.build_view(mod, entry))
    monkeypatch.setenv("MSC_RULES_NATIVE", "1")
    before = len(graph.read_fallbacks)
    cc = view_data(graph.build_view(mod, entry))
    return py, cc, graph.read_fallbacks[before:]


def _params(names: Any) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILDERS else n
            for n in names]


@pytest.mark.parametrize("name", _params(BUILDERS))
def test_real_models_get_the_same_view_both_ways(name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    py, cc, refused = _both_ways(BUILDERS[name]().mod, monkeypatch)
    assert refused == []  # the native read really ran
    assert cc == py
    assert py["sites"] and py["values"]


@pytest.mark.parametrize("mod", _odd_modules())
def test_odd_modules_get_the_same_view_both_ways(mod: tvm.IRModule,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    py, cc, refused = _both_ways(mod, monkeypatch)
    assert cc == py, refused


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])
@given(mod=relax_modules())
def test_random_modules_get_the_same_view_both_ways(mod: tvm.IRModule) -> None:
    with pytest.MonkeyPatch.context() as mp:
        py, cc, refused = _both_ways(mod, mp)
    assert refused == []
    assert cc == py


def _helper_module(item: bool) -> tvm.IRModule:
    """main(x) calls helper(p), which uses main's `x` (a free var in helper: not valid
    IR, but graph.py takes it as main's value): `add(x, p)`, or with `item` (x a tuple)
    `add(x[0], p)`."""
    t = relax.TensorType((2, 3), "float32")
    xt = tvm.ir.type.TupleType([t, t]) if item else t
    x, p, w = relax.Var("x", xt), relax.Var("p", t), relax.Var("w", t)
    lhs = tvm.ir.expr.TupleGetItem(x, 0) if item else x
    helper = relax.Function([p], relax.SeqExpr(
        [relax.BindingBlock([relax.VarBinding(w, relax.op.add(lhs, p))])], w), t)
    gv = tvm.ir.GlobalVar("helper")
    z = relax.Var("z", t)
    arg = tvm.ir.expr.TupleGetItem(x, 1) if item else x
    call = tvm.ir.expr.Call(gv, [arg], None, [], None, ret_ty=t)
    main = relax.Function([x], relax.SeqExpr(
        [relax.BindingBlock([relax.VarBinding(z, call)])], z), t)
    return tvm.IRModule({gv: helper, tvm.ir.GlobalVar("main"): main})


def test_a_var_of_another_function_is_looked_up_in_the_view(
        monkeypatch: pytest.MonkeyPatch) -> None:
    py, cc, refused = _both_ways(_helper_module(item=False), monkeypatch)
    assert refused == []
    assert cc == py
    assert (0, 3) in py["edges"]  # helper's add reads main's x (values x, z, p, w)


def test_a_function_the_native_read_does_not_know_is_read_in_python(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An item of another function's tuple: the C++ read does not know its struct, so
    it refuses helper, which is read in Python (main natively); the view is the same."""
    py, cc, refused = _both_ways(_helper_module(item=True), monkeypatch)
    assert [f for f, _ in refused] == ["helper"]
    assert "an item of a value of another function" in refused[0][1]
    assert cc == py
    assert py["sites"][0][2] == "relax.add" and py["sites"][0][3][0] == 0  # x[0]: leaf 0


def test_a_link_from_an_unknown_var_goes_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """A match_cast of a var bound nowhere: the C++ side leaves it to the view to look
    up (none: no link, no edge), as graph.py's read drops it; the sites after it keep
    their places."""
    t = relax.TensorType((2, 3), "float32")
    x, free, y, z = (relax.Var(n, t) for n in ("x", "free", "y", "z"))
    body = relax.SeqExpr([relax.BindingBlock([
        relax.VarBinding(z, relax.op.add(x, x)),
        relax.MatchCast(y, free, t),
        relax.VarBinding(relax.Var("w", t), relax.op.multiply(y, z)),
    ])], z)
    mod = tvm.IRModule({tvm.ir.GlobalVar("main"): relax.Function([x], body, t)})
    py, cc, refused = _both_ways(mod, monkeypatch)
    assert refused == []
    assert cc == py
    assert [s[2] for s in py["sites"]] == ["relax.add", "relax.multiply"]

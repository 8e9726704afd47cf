"""Properties of the passes on random Relax modules (tests/strategies.py).

For every generated module: SetExprLayout and infer_layouts never raise; the pass is
idempotent and leaves the module structurally equal; every tensor of known rank gets
a layout of exactly `ndim` distinct letters; the result is deterministic (the same
module, and a JSON round-trip copy of it, give the same markers); `annotate` gives
every named node a unique name.

Budget: explicit example counts (200, 60, 100, 20) on top of the `ci` profile of
tests/conftest.py (derandomized); about 10 s in all.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import tvm
from hypothesis import HealthCheck, given, note, settings
from strategies import relax_modules
from tvm import relax

import msc_rules
from msc_rules.engine import InferenceResult

# ---- walking a module ---------------------------------------------------------------------


def _vars_of_function(func: Any, out: list[Any]) -> None:
    """Params and binding vars of `func`, its local functions and If branches, in order."""
    out.extend(func.params)
    _vars_of_expr(func.body, out)


def _vars_of_expr(e: Any, out: list[Any]) -> None:
    if isinstance(e, relax.SeqExpr):
        for block in e.blocks:
            for b in block.bindings:
                out.append(b.var)
                _vars_of_expr(b.value, out)
    elif isinstance(e, relax.Function):
        _vars_of_function(e, out)
    elif isinstance(e, relax.If):
        _vars_of_expr(e.true_branch, out)
        _vars_of_expr(e.false_branch, out)


def all_vars(mod: tvm.IRModule) -> list[Any]:
    out: list[Any] = []
    for gv in sorted(mod.get_global_vars(), key=lambda g: g.name_hint):
        func = mod[gv]
        if isinstance(func, relax.Function):
            _vars_of_function(func, out)
    return out


def layout_markers(mod: tvm.IRModule) -> list[tuple[str, str]]:
    """(var name, Layout marker) of every param and binding var, in a fixed order, and
    the marker of every bound value."""
    out: list[tuple[str, str]] = []
    for v in all_vars(mod):
        out.append((str(v.name), msc_rules.get_layout(v)))
    for node in named_nodes(mod):
        out.append((type(node).__name__, msc_rules.get_layout(node)))
    return out


_NAMED = (tvm.ir.expr.Call, tvm.ir.expr.GenericConst, tvm.ir.expr.Tuple,
          tvm.ir.expr.TupleGetItem)


def named_nodes(mod: tvm.IRModule) -> list[Any]:
    """Every Call, Constant, Tuple, TupleGetItem and ShapeExpr argument of the module,
    once each (not the ShapeExprs inside types, which the visitor also reaches)."""
    seen: set[int] = set()
    found: list[Any] = []

    def add(e: Any) -> None:
        if e.__chandle__() not in seen:
            seen.add(e.__chandle__())
            found.append(e)

    def visit(e: Any) -> None:
        if isinstance(e, _NAMED):
            add(e)
        if isinstance(e, tvm.ir.expr.Call):
            for a in e.args:
                if isinstance(a, relax.ShapeExpr):
                    add(a)

    for gv in sorted(mod.get_global_vars(), key=lambda g: g.name_hint):
        func = mod[gv]
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


def check_layout(text: str, ndim: int, where: str) -> None:
    assert len(text) == ndim, f"{where}: layout '{text}' for a rank-{ndim} tensor"
    assert len(set(text)) == ndim, f"{where}: repeated letters in '{text}'"
    assert (text.isalpha() and text.isupper()) or text == "", f"{where}: '{text}'"


def check_result(res: InferenceResult) -> None:
    """Every leaf of known rank has a layout of exactly ndim distinct letters."""
    for leaf, ndim in enumerate(res.view.leaf_ndim):
        if ndim < 0:
            assert res.layouts[leaf] is None
            continue
        lay = res.layouts[leaf]
        assert lay is not None, f"{res.leaf_place(leaf)}: no layout"
        check_layout(lay, ndim, res.leaf_place(leaf))


def check_markers(mod: tvm.IRModule) -> None:
    """Every tensor var of known rank carries a Layout marker of its rank; flat tuples
    of such tensors carry the comma-joined layouts."""
    for v in all_vars(mod):
        ty = v.ty
        marker = msc_rules.get_layout(v)
        if isinstance(ty, relax.TensorType) and ty.ndim > 0:
            check_layout(marker, int(ty.ndim), str(v.name))
        elif isinstance(ty, relax.TensorType):
            assert marker == "", (v.name, marker)  # rank 0 ("") or unknown rank
        elif isinstance(ty, tvm.ir.type.TupleType) and all(
                isinstance(f, relax.TensorType) and f.ndim > 0 for f in ty.fields):
            parts = marker.split(",")
            assert len(parts) == len(ty.fields), (v.name, marker)
            for p, f in zip(parts, ty.fields):
                check_layout(p, int(f.ndim), str(v.name))


# ---- the properties ------------------------------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
@given(mod=relax_modules())
def test_random_modules_get_complete_consistent_layouts(mod: tvm.IRModule) -> None:
    note(mod.script())
    relax.analysis.well_formed(mod)  # the generator makes legal modules (raises if not)

    res = msc_rules.infer_layouts(mod)
    check_result(res)

    after = msc_rules.SetExprLayout()(mod)
    tvm.ir.assert_structural_equal(mod, after)
    check_markers(after)
    assert all(lay == "" for _, lay in layout_markers(mod))  # the input is untouched

    twice = msc_rules.SetExprLayout()(after)
    tvm.ir.assert_structural_equal(after, twice)
    assert layout_markers(twice) == layout_markers(after)  # idempotent

    again = msc_rules.SetExprLayout()(mod)
    assert layout_markers(again) == layout_markers(after)  # deterministic
    assert msc_rules.infer_layouts(mod).layouts == res.layouts


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(mod=relax_modules())
def test_random_modules_are_deterministic_across_copies(mod: tvm.IRModule) -> None:
    # a JSON round trip makes new nodes (new handles, new Python wrappers): nothing may
    # depend on object identity or hashing order
    copy = tvm.ir.load_json(tvm.ir.save_json(mod))
    note(mod.script())
    a = msc_rules.SetExprLayout()(mod)
    b = msc_rules.SetExprLayout()(copy)
    assert layout_markers(a) == layout_markers(b)


@pytest.mark.skipif(not hasattr(msc_rules, "annotate"), reason="no msc_rules.annotate")
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(mod=relax_modules())
def test_random_modules_annotate_with_unique_names(mod: tvm.IRModule) -> None:
    note(mod.script())
    out = msc_rules.annotate(mod)
    tvm.ir.assert_structural_equal(mod, out)
    check_markers(out)
    nodes = named_nodes(out)
    names = [msc_rules.get_name(n) for n in nodes]
    assert all(names), [(type(n).__name__, nm) for n, nm in zip(nodes, names)]
    # a call of a function shares the name of the call it wraps (naming.py, "Calls to
    # other functions", the one documented exception); calls of functions are unique
    # among themselves, and everything else is unique in the module
    fcall = [isinstance(n, tvm.ir.expr.Call) and not isinstance(n.op, tvm.ir.Op)
             for n in nodes]
    for group in (True, False):
        picked = [nm for nm, f in zip(names, fcall) if f is group]
        dups = [n for n, c in Counter(picked).items() if c > 1]
        assert dups == [], (group, dups)
    # the layout pass after the name pass keeps the names; a second annotate keeps both
    # (function calls included: test_annotate_twice_keeps_the_names_of_function_calls)
    again = msc_rules.annotate(out)
    assert [msc_rules.get_name(n) for n in named_nodes(again)] == names
    assert layout_markers(again) == layout_markers(out)


def test_annotate_twice_keeps_the_names_of_function_calls() -> None:
    # found by test_random_modules_annotate_with_unique_names. A call of a function
    # deliberately shares the name of the first call inside it (naming.py, "Calls to
    # other functions"); on a rerun both names were "already in a span", round 1 claimed
    # the name for the first of the two in walk order and deduplicated the other, so
    # the call became `relu_1` + `_1`. Running twice must change nothing.
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([2], "float32"))
    with bb.function("helper", [a]):
        bb.emit_func_output(bb.emit(relax.op.nn.relu(a)))
    x = relax.Var("x", relax.TensorType([2], "float32"))
    with bb.function("main", [x]):
        y = bb.emit(relax.op.nn.relu(x))
        z = bb.emit(relax.Call(bb.get().get_global_var("helper"), [y]))
        bb.emit_func_output(z)
    once = msc_rules.annotate(bb.get())
    twice = msc_rules.annotate(once)
    names = [msc_rules.get_name(n) for n in named_nodes(once)]
    assert names == ["relu_1", "relu", "relu_1"]  # helper's relu, main's relu, the call
    assert [msc_rules.get_name(n) for n in named_nodes(twice)] == names


@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
@given(mod=relax_modules())
def test_random_modules_strict_mode_lists_nothing(mod: tvm.IRModule) -> None:
    # every op the generator uses has a rule: allow_missing=False must not complain
    note(mod.script())
    msc_rules.SetExprLayout(allow_missing=False)(mod)

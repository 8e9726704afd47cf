"""The native rebuild reads a function's edits in the order it meets the nodes (cursors
over the handle arrays, rebuild.cc `Cursor`), and from hash tables of all entries when
some node comes out of that order. A node referenced more than once is rebuilt once,
and a var's uses find its new var through a small table of recent definitions. Every
way must write what the Python rebuild writes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tvm
from models import BUILDERS
from test_native import span_texts
from tvm import relax

import msc_rules
from msc_rules import native, span
from msc_rules.rewrite import SpanEdits, handle_bytes, rewrite_layers

_T = relax.TensorType((2, 3), "float32")


@pytest.fixture
def set_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def choose(value: str) -> None:
        monkeypatch.setenv("MSC_RULES_NATIVE", value)

    yield choose


def _from_tables() -> int:
    """How many native rebuilds so far went to the hash tables."""
    return int(native.load().rebuild_from_tables())


def _both_ways(mod: tvm.IRModule, layers: list[dict[str, SpanEdits]],
               set_mode: Any) -> tuple[list[tuple[str, str]], int]:
    """The span texts of `mod` rewritten with `layers`, the same natively and in Python
    (checked), and how many native rebuilds went to the tables."""
    set_mode("0")
    expected = span_texts(rewrite_layers(mod, layers))
    set_mode("1")
    before = _from_tables()
    out = rewrite_layers(mod, layers)
    tvm.ir.assert_structural_equal(out, mod)
    assert span_texts(out) == expected
    return expected, _from_tables() - before


def _chain(n: int) -> tvm.IRModule:
    """x -> y1 = add(x, x) -> y2 = add(y1, x) -> ...: every binding uses the param too,
    so its uses lie far from its definition."""
    x = relax.Var("x", _T)
    bindings = []
    prev = x
    for i in range(n):
        y = relax.Var(f"y{i}", _T)
        bindings.append(relax.VarBinding(y, relax.op.add(prev, x)))
        prev = y
    body = relax.SeqExpr([relax.DataflowBlock(bindings)], prev)
    return tvm.IRModule({"main": relax.Function([x], body, _T)})


def _columns(mod: tvm.IRModule, order: Any = None) -> dict[str, SpanEdits]:
    """A Name column on every call and a Layout column on every binding var, listed in
    program order, or in `order` (a permutation of the bindings)."""
    func = mod["main"]
    bindings = list(func.body.blocks[0].bindings)
    at = np.arange(len(bindings)) if order is None else np.asarray(order)
    calls = handle_bytes((bindings[i].value.__chandle__() for i in at), len(at))
    vars_ = handle_bytes((bindings[i].var.__chandle__() for i in at), len(at))
    e = SpanEdits()
    e.add_column(span.NAME, [f"call_{i}" for i in at], values=calls)
    e.add_column(span.LAYOUT, ["AB" if i % 3 else "BA" for i in at], vars=vars_, share=True)
    e.add_var(func.params[0], span.LAYOUT, "AB")
    return {"main": e}


@pytest.mark.parametrize("name", ["resnet18_like", "unet_like", "vit_like", "llama_like"])
def test_annotate_reads_its_edits_in_order(name: str, set_mode: Any) -> None:
    """annotate's edits (names planned natively, layouts from the native read) list the
    nodes as the rebuild meets them: no rebuild goes to the tables, and the markers are
    the Python rebuild's."""
    mod = BUILDERS[name]().mod
    set_mode("0")
    expected = span_texts(msc_rules.annotate(mod))
    set_mode("1")
    before = _from_tables()
    out = msc_rules.annotate(mod)
    assert _from_tables() == before
    tvm.ir.assert_structural_equal(out, mod)
    assert span_texts(out) == expected


def test_edits_out_of_order_are_read_from_the_tables(set_mode: Any) -> None:
    """Columns listing the nodes backwards (or one node of another function) write the
    same markers as in order: the rebuild notices and reads them from the tables."""
    mod = _chain(40)
    in_order, went = _both_ways(mod, [_columns(mod)], set_mode)
    assert went == 0
    backwards, went = _both_ways(mod, [_columns(mod, range(39, -1, -1))], set_mode)
    assert went == 1
    assert backwards == in_order
    assert ("ir.Call", "<Name>call_7</Name>") in in_order
    swapped = list(range(40))
    swapped[10], swapped[11] = 11, 10
    assert _both_ways(mod, [_columns(mod, swapped)], set_mode) == (in_order, 1)
    other = _chain(3)
    stray = _columns(mod)
    stray["main"].add_value(other["main"].body.blocks[0].bindings[0].value, span.NAME, "x")
    assert _both_ways(mod, [stray], set_mode) == (in_order, 1)


def test_layers_in_order_compose_each_nodes_markers(set_mode: Any) -> None:
    """Two layers, both in order: names then layouts on every call, a key of the
    first layer set again by the second in place."""
    mod = _chain(30)
    names = _columns(mod)
    layouts = {"main": SpanEdits()}
    bindings = list(mod["main"].body.blocks[0].bindings)
    calls = handle_bytes((b.value.__chandle__() for b in bindings), len(bindings))
    layouts["main"].add_column(span.LAYOUT, ["AB"] * 30, values=calls, share=True)
    layouts["main"].add_column(span.NAME, [f"again_{i}" if i % 2 else "" for i in range(30)],
                               values=calls)
    texts, went = _both_ways(mod, [names, layouts], set_mode)
    assert went == 0
    assert ("ir.Call", "<Name>call_0</Name><Layout>AB</Layout>") in texts
    assert ("ir.Call", "<Name>again_1</Name><Layout>AB</Layout>") in texts


def test_a_var_used_far_from_its_definition_keeps_its_new_var(set_mode: Any) -> None:
    """The param is used by every one of 16000 bindings: it leaves the table of recent
    definitions (2048 slots: pushed out by a later definition, all but surely) and
    every use still takes the new var."""
    mod = _chain(16000)
    texts, went = _both_ways(mod, [_columns(mod)], set_mode)
    assert went == 0
    assert texts.count(("ir.Var", "<Layout>AB</Layout>")) >= 16000 + 10666


def test_nodes_referenced_twice_get_their_markers_everywhere(set_mode: Any) -> None:
    """One call bound twice, one argument array shared by two calls and one constant
    used three times: each is rebuilt once and carries its markers in every place."""
    x = relax.Var("x", _T)
    c = relax.const(np.ones((2, 3), "float32"))
    shared = relax.op.add(x, c)
    first = relax.op.multiply(x, c)
    second = relax.Call(tvm.ir.Op.get("relax.subtract"), first.args)
    vs = [relax.Var(f"v{i}", _T) for i in range(4)]
    bindings = [relax.VarBinding(vs[0], shared), relax.VarBinding(vs[1], shared),
                relax.VarBinding(vs[2], first), relax.VarBinding(vs[3], second)]
    body = relax.SeqExpr([relax.BindingBlock(bindings)], vs[3])
    mod = tvm.IRModule({"main": relax.Function([x], body, _T)})
    del x, c, shared, first, second, vs, bindings, body
    e = SpanEdits()
    func = mod["main"]
    for i, b in enumerate(func.body.blocks[0].bindings):
        e.add_value(b.value, span.NAME, f"call_{i}")
        e.add_var(b.var, span.LAYOUT, "AB")
    e.add_value(func.body.blocks[0].bindings[0].value.args[1], span.NAME, "const")
    del func
    texts, _ = _both_ways(mod, [{"main": e}], set_mode)
    assert texts.count(("ir.GenericConst", "<Name>const</Name>")) == 4
    assert texts.count(("ir.Call", "<Name>call_1</Name>")) == 2


def test_set_expr_name_then_layout_read_in_order(set_mode: Any) -> None:
    """SetExprName's and SetExprLayout's own rebuilds take the ordered way too."""
    mod = BUILDERS["resnet18_like"]().mod
    set_mode("1")
    before = _from_tables()
    out = msc_rules.SetExprLayout()(msc_rules.SetExprName()(mod))
    assert _from_tables() == before
    set_mode("0")
    assert span_texts(out) == span_texts(msc_rules.SetExprLayout()(msc_rules.SetExprName()(mod)))

"""Marker columns (rewrite.MarkerColumn, SpanEdits.add_column): the flat form the native
rebuild takes without a Python object per entry. Written natively and in Python, they
must give the markers the dict form gives, on real models too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import tvm
from models import BUILDERS
from test_native import span_texts
from tvm import relax

import msc_rules
from msc_rules import rewrite, span
from msc_rules.naming import plan_names
from msc_rules.passes import layout_edits
from msc_rules.rewrite import SpanEdits, handle_bytes, rewrite_layers

MODELS = ["tiny_mlp", "resnet18_like", "unet_like"]


@pytest.fixture
def set_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def choose(value: str) -> None:
        monkeypatch.setenv("MSC_RULES_NATIVE", value)

    yield choose


def as_columns(edits: dict[str, SpanEdits]) -> dict[str, SpanEdits]:
    """The same edits with every marker key of every dict as one column (what a caller
    of the bulk API, naming say, would hand over)."""
    out: dict[str, SpanEdits] = {}
    for name, e in edits.items():
        new = out[name] = SpanEdits()
        for on_vars, entries in ((True, e.vars), (False, e.values)):
            by_key: dict[str, tuple[list[int], list[str]]] = {}
            for h, markers in entries.items():
                for k, v in markers:
                    handles, texts = by_key.setdefault(k, ([], []))
                    handles.append(h)
                    texts.append(v)
            for k, (handles, texts) in by_key.items():
                hb = handle_bytes(handles, len(handles))
                if on_vars:
                    new.add_column(k, texts, vars=hb)
                else:
                    new.add_column(k, texts, values=hb)
    return out


def _two_node_module() -> tuple[tvm.IRModule, Any]:
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3), "float32"))
    blocks = [relax.BindingBlock([relax.VarBinding(y, relax.op.nn.relu(x))])]
    mod = tvm.IRModule({"main": relax.Function([x], relax.SeqExpr(blocks, y),
                                               relax.TensorType((2, 3), "float32"))})
    return mod, mod["main"].body.blocks[0].bindings[0]


@pytest.mark.parametrize("name", MODELS)
def test_names_as_columns_write_what_the_dicts_write(name: str, set_mode: Any) -> None:
    mod = BUILDERS[name]().mod
    got = {}
    for mode in ("0", "1"):
        set_mode(mode)
        plan = plan_names(mod)
        names = plan.edits(columns=False)
        assert all(e.values and not e.columns for e in names.values())
        assert all(e.columns and not e.values for e in plan.edits().values())
        layouts = layout_edits(msc_rules.infer_layouts(mod))
        before = len(rewrite.fallbacks)
        dicts = rewrite_layers(mod, [names, layouts])
        columns = rewrite_layers(mod, [as_columns(names), layouts])
        assert span_texts(rewrite_layers(mod, [plan.edits(), layouts])) == span_texts(dicts)
        assert len(rewrite.fallbacks) == before, rewrite.fallbacks[before:]
        tvm.ir.assert_structural_equal(columns, mod)
        got[mode] = span_texts(columns)
        assert got[mode] == span_texts(dicts)
    assert got["0"] == got["1"]
    assert any("<Name>" in t and "<Layout>" in t for _, t in got["1"])


@pytest.mark.parametrize("name", MODELS)
def test_either_form_of_layout_edits_is_written_alike_by_either_rebuild(
        name: str, set_mode: Any) -> None:
    """layout_edits gives columns when the native rebuild is on and the view's records
    otherwise; each rebuild takes both forms."""
    mod = BUILDERS[name]().mod
    texts = set()
    for made in ("0", "1"):
        for written in ("0", "1"):
            set_mode(made)
            edits = layout_edits(msc_rules.infer_layouts(mod))
            assert bool(edits["main"].columns) == (made == "1")
            assert (edits["main"].records is not None) == (made == "0")
            set_mode(written)
            before = len(rewrite.fallbacks)
            out = rewrite_layers(mod, [plan_names(mod).edits(), edits], release=True)
            assert len(rewrite.fallbacks) == before
            tvm.ir.assert_structural_equal(out, mod)
            texts.add(tuple(span_texts(out)))
    assert len(texts) == 1


def test_a_column_writes_after_the_dicts_as_a_layer_of_its_own(set_mode: Any) -> None:
    mod, b = _two_node_module()
    e = SpanEdits()
    e.vars[b.var.__chandle__()] = (("Layout", "AB"), ("Name", "y"))
    e.add_column("Layout", ["CD"], vars=handle_bytes([b.var.__chandle__()], 1), share=True)
    e.add_column("Name", ["relu", "ignored"],
                 values=handle_bytes([b.value.__chandle__(), b.var.__chandle__()], 2))
    got = {}
    for mode in ("0", "1"):
        set_mode(mode)
        before = len(rewrite.fallbacks)
        got[mode] = span_texts(rewrite.rewrite_module(mod, {"main": e}))
        assert len(rewrite.fallbacks) == before
    assert got["0"] == got["1"]
    # the key set again keeps its place; a var handle among values is not a var's marker
    assert ("ir.Var", "<Layout>CD</Layout><Name>y</Name>") in got["1"]
    assert ("ir.Call", "<Name>relu</Name>") in got["1"]


def test_a_column_text_with_the_separator_takes_the_python_rebuild(set_mode: Any) -> None:
    mod, b = _two_node_module()
    e = SpanEdits()
    e.add_column("Name", ["odd\x1fname"], values=handle_bytes([b.value.__chandle__()], 1))
    set_mode("1")
    out = rewrite.rewrite_module(mod, {"main": e})
    assert msc_rules.get_name(out["main"].body.blocks[0].bindings[0].value) == "odd\x1fname"


def test_a_column_needs_one_handle_per_text() -> None:
    with pytest.raises(ValueError, match="one handle per text"):
        SpanEdits().add_column("Name", ["a", "b"], values=handle_bytes([1], 1))


def test_dicts_of_several_keys_or_pairs_go_as_marker_sets(set_mode: Any) -> None:
    """The one-key fast path (_as_column) declines mixed dicts: they go as sets, alike."""
    mod, b = _two_node_module()
    x = mod["main"].params[0]
    e = SpanEdits()
    e.add_value(b.value, span.NAME, "relu")
    e.add_value(b.value, span.SHARED_REF, "conv")
    e.add_var(x, span.LAYOUT, "NC")
    e.add_var(b.var, span.NAME, "y")
    assert rewrite._as_column(e.values, False) is None
    assert rewrite._as_column(e.vars, True) is None
    got = {}
    for mode in ("0", "1"):
        set_mode(mode)
        got[mode] = span_texts(rewrite.rewrite_module(mod, {"main": e}))
    assert got["0"] == got["1"]
    assert ("ir.Call", "<Name>relu</Name><SharedRef>conv</SharedRef>") in got["1"]
    assert ("ir.Var", "<Layout>NC</Layout>") in got["1"]


def test_a_released_function_handed_back_to_python_keeps_its_markers(set_mode: Any) -> None:
    """With release=True the edits are emptied before the native rebuild runs: a
    function it hands back is rebuilt in Python from what was handed over."""
    from test_native import _opaque_module

    mod = _opaque_module()
    b = mod["main"].body.blocks[0].bindings[0]
    expected = {}
    for mode in ("0", "1"):
        set_mode(mode)
        e = SpanEdits()
        e.add_var(b.var, span.LAYOUT, "AB")
        e.add_value(b.value, span.NAME, "relu")
        e.add_value(b.value, span.SHARED_REF, "conv")
        before = len(rewrite.fallbacks)
        out = rewrite.rewrite_module(mod, {"main": e}, release=True)
        assert (len(rewrite.fallbacks) > before) == (mode == "1")
        assert not e.vars and not e.values if mode == "1" else e.vars
        expected[mode] = span_texts(out)
    assert expected["0"] == expected["1"]
    assert ("ir.Call", "<Name>relu</Name><SharedRef>conv</SharedRef>") in expected["1"]

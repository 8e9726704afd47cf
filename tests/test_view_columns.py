"""The view's flat records (graph.SiteTable, NativeValue, LeafTypes, the lazy value_of)
and what the engine reads of them: the native read (flat arrays) and the Python read
(objects) must give the engine the same sites, attribute keys and signatures, and so
the same layouts, decisions, conflicts and `explain` text, on real models."""

from __future__ import annotations

from typing import Any

import models
import pytest
import tvm
from tvm import relax
from tvm_ffi._ffi_api import StructuralHash

from msc_rules import engine, graph
from msc_rules.engine import infer_view
from msc_rules.library import default_rules
from msc_rules.report import analyze, explain, render

MODELS = ("tiny_mlp", "resnet18_like", "bert_like", "gpt2_like")


def _view(mod: tvm.IRModule, native: bool, mp: pytest.MonkeyPatch) -> graph.DependencyView:
    mp.setenv("MSC_RULES_NATIVE", "1" if native else "0")
    before = len(graph.read_fallbacks)
    view = graph.build_view(mod, "main")
    assert graph.read_fallbacks[before:] == []
    return view


def _signatures(view: graph.DependencyView) -> list[Any]:
    """Per site: its attributes' key and its signature, as a fresh engine makes them."""
    eng = engine._Engine(view, default_rules())
    out: list[Any] = []
    for site in eng.sites:
        if site is None:
            out.append(None)
            continue
        akey = eng._attrs_key(site)
        out.append((akey if type(akey) is tuple else "own", eng._signature(site)))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_the_engine_sees_the_same_sites_both_ways(name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    mod = models.BUILDERS[name]().mod
    py, cc = _view(mod, False, monkeypatch), _view(mod, True, monkeypatch)
    assert cc.sites._flat  # natively read op calls keep their arguments flat
    assert any(a is graph.NATIVE for a in cc.sites._attrs)
    assert not py.sites._flat and graph.NATIVE not in py.sites._attrs
    # column for column, the same sites (the flat ones decoded)
    assert [cc.sites.args_of(i) for i in range(len(cc.sites))] == [
        py.sites.args_of(i) for i in range(len(py.sites))]
    assert cc.sites.op == py.sites.op and cc.sites.out == py.sites.out
    assert cc.sites.value_id == py.sites.value_id
    # the attribute keys the C++ side hashed are those of the attributes themselves
    for i in range(len(cc.sites)):
        if cc.sites._attrs[i] is graph.NATIVE:
            attrs = cc.sites.attrs_of(i)
            assert attrs.same_as(py.sites.attrs_of(i))
            assert cc.sites.native_attrs_key(i) == (
                type(attrs).__tvm_ffi_type_info__.type_index,
                StructuralHash(attrs, False, False))
    assert _signatures(cc) == _signatures(py)


@pytest.mark.parametrize("name", MODELS)
def test_inference_is_the_same_both_ways(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = models.BUILDERS[name]().mod
    rules = default_rules()
    results = [infer_view(_view(mod, native, monkeypatch), rules) for native in (False, True)]
    py, cc = ((r.layouts, r.decisions, r.conflicts, r.unruled) for r in results)
    assert cc == py
    texts = []
    for native in ("0", "1"):
        monkeypatch.setenv("MSC_RULES_NATIVE", native)
        analysis = analyze(mod, rules)
        texts.append(render(explain(analysis, analysis.names.value_name[-1], tree=True)))
    assert texts[0] == texts[1] and "rule" in texts[0]


def test_site_table_is_a_sequence_of_call_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = models.BUILDERS["tiny_mlp"]().mod
    view = _view(mod, True, monkeypatch)
    sites = view.sites
    n = len(sites)
    assert n > 2
    listed = list(sites)
    assert all(isinstance(cs, graph.CallSite) for cs in listed)
    assert sites[-1] == listed[-1] and sites[1:3] == listed[1:3]
    with pytest.raises(IndexError):
        sites[n]
    for cs in listed:
        if cs.op == "<link>":
            assert cs.call is None
        else:  # a site's call is its binding's value
            assert cs.call.same_as(view.values[cs.value_id].value)
            assert isinstance(cs.call, relax.Call)
    # a site added by value (the Python read's way) reads back as given
    sites.append(graph.CallSite(0, None, "<link>", [0], 1))
    assert sites[n] == graph.CallSite(0, None, "<link>", [0], 1, None)


def test_native_values_keep_their_nodes_in_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = models.BUILDERS["resnet18_like"]().mod
    view = _view(mod, True, monkeypatch)
    natives = [v for v in view.values
               if type(v) is graph.NativeValue and isinstance(v.struct, int)]
    assert natives
    v = natives[len(natives) // 2]
    assert v.__slots__ == ("_read",)  # the rest is in the read's arrays, by id
    var_handle, call_handle = v.handles()
    assert var_handle == v.expr.__chandle__() and call_handle == v.value.__chandle__()
    assert v.binding.var.same_as(v.expr) and v.op.same_as(v.value.op)
    assert [a.__chandle__() for a in v.args] == [a.__chandle__() for a in v.value.args]
    assert v.name == str(v.expr.name) and v.kind == "binding"
    # the lookups are made on first use, and agree with the nodes
    assert view._unmapped
    assert view.value_id(v.expr) == v.id and not view._unmapped
    leaf = v.struct
    assert isinstance(leaf, int) and view.leaf_type._items[leaf] is None
    assert view.leaf_type[leaf].same_as(v.ty) and view.leaf_type._items[leaf] is not None


def test_native_values_are_made_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """No object per call binding until asked: a NativeValue is made on access (and
    kept), sites' calls come without one, iterating makes them all."""
    mod = models.BUILDERS["resnet18_like"]().mod
    view = _view(mod, True, monkeypatch)
    table = view.values
    lazy = [i for i, v in enumerate(table._items) if v is None]
    assert len(lazy) >= 20  # (every call binding)
    assert len(lazy) == sum(1 for v in graph.build_view(mod).values if v.args is not None)
    for i in range(len(view.sites)):
        if view.sites.op[i] != "<link>":
            call = view.sites.call_of(i)
            assert isinstance(call, relax.Call)
    kinds = [table.kind_of(i) for i in range(len(table))]
    assert [i for i, v in enumerate(table._items) if v is None] == lazy  # none made
    assert kinds == [v.kind for v in table]
    vid = lazy[len(lazy) // 2]
    v = table[vid]
    assert type(v) is graph.NativeValue and v.id == vid and table[vid] is v
    assert table[vid - len(table)] is v and table[vid:vid + 1] == [v]
    walked = list(table)  # (made for the walk: not kept)
    assert len(walked) == len(table) and walked[vid] is v
    assert all(type(x) is graph.NativeValue for i, x in enumerate(walked) if i in lazy)
    assert [i for i, x in enumerate(table._items) if x is None] == [i for i in lazy if i != vid]


def test_block_records_are_made_on_access(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = models.BUILDERS["bert_like"]().mod
    view = _view(mod, True, monkeypatch)
    records = view.block_records
    assert all(type(x) is graph._LazyRecords for x in records._items.values())
    handle = next(iter(records))
    block, recs = records[handle]
    assert block.__chandle__() == handle and records.get(handle)[1] is recs
    assert [r.id for r in recs] == [view.values[r.id].id for r in recs]
    assert all(r is view.values[r.id] for r in recs)
    assert type(records._items[handle]) is tuple  # made once, kept
    assert records.get(-1) is None and -1 not in records


@pytest.mark.parametrize("native", [False, True])
def test_call_bindings_come_as_columns(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ValueTable.call_bindings`: the Values with args, a chunk per function, with their
    structs coded and their var and call handles, read both ways alike."""
    mod = models.BUILDERS["gpt2_like"]().mod
    view = _view(mod, native, monkeypatch)
    chunks = list(view.values.call_bindings())
    got: list[Any] = []
    for chunk in chunks:
        n = len(chunk.ids)
        assert len(chunk.structs) == n
        assert len(chunk.var_handles) == len(chunk.call_handles) == 8 * n
        var_handles = memoryview(chunk.var_handles).cast("q").tolist()
        call_handles = memoryview(chunk.call_handles).cast("q").tolist()
        for k, vid in enumerate(chunk.ids.tolist()):
            v = view.values[vid]
            st = v.struct
            assert v.top == chunk.top
            assert int(chunk.structs[k]) == (st if type(st) is int else -1 if st is None else -2)
            assert var_handles[k] == v.expr.__chandle__()
            assert call_handles[k] == v.value.__chandle__()
            got.append(vid)
    assert got == [v.id for v in view.values if v.args is not None]


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("name", MODELS)
def test_value_codes_are_the_values_structs_and_handles(name: str, native: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`ValueTable.codes` (made without the Values) gives each value's struct code and
    node handle as its Value has them."""
    view = _view(models.BUILDERS[name]().mod, native, monkeypatch)
    made = sum(v is not None for v in view.values._items)
    codes, handles = view.values.codes()
    assert sum(v is not None for v in view.values._items) == made
    structs = [v.struct for v in view.values]
    assert codes.tolist() == [s if type(s) is int else -1 if s is None else -2 for s in structs]
    assert handles.tolist() == [v.expr.__chandle__() for v in view.values]


@pytest.mark.parametrize("name", ("resnet18_like", "bert_like"))
def test_the_bulk_columns_say_what_the_per_site_reads_say(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """flat_args/arg_starts, attr_entries/attr_info and static_shape_ids/static_shapes
    (what channel_native and prune_cut take as arrays) against args_of, attrs_of and
    shape, site by site and leaf by leaf."""
    mod = getattr(models, name)(dynamic=False).mod
    view = _view(mod, True, monkeypatch)
    sites = view.sites
    flat, starts = sites.flat_args(), sites.arg_starts()
    entries, info = sites.attr_entries(), sites.attr_info()
    assert len(starts) == len(entries) == len(sites)
    assert (starts >= 0).any() and (entries >= 0).any()
    for i in range(len(sites)):
        if starts[i] >= 0:
            k = int(starts[i])
            got = [int(x) for x in flat[k + 1:k + 1 + flat[k]]]
            assert [-1 if a is None else a for a in sites.args_of(i)] == got
        if entries[i] >= 0:
            attrs = sites.attrs_of(i)
            assert int(info[entries[i], 1]) == attrs.__tvm_ffi_type_info__.type_index
            key = sites.native_attrs_key(i)
            assert key is None or key == (int(info[entries[i], 1]), int(info[entries[i], 2]))
    ids, shapes = view.static_shape_ids(), view.static_shapes
    assert (ids >= 0).sum() > 0
    for leaf, sid in enumerate(ids.tolist()):
        assert view.static_shape_id(leaf) == sid
        if sid >= 0:
            assert shapes[sid] == view.shape(leaf)
    assert view.static_shape_id(len(ids)) == -1

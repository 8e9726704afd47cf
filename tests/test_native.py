"""The native rebuild (msc_rules/native) against the Python one, marker for marker.

Every real model of the suite and random modules (tests/strategies.py) go through
SetExprLayout, SetExprName and annotate with MSC_RULES_NATIVE=0 and =1; the span text
of every node must be the same, and annotate (one rebuild) must write what SetExprName
then SetExprLayout wrote. The loader's choices (env, cache folder, a failing build) and
the fallback of a function the C++ walk does not know are checked too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tvm
import tvm_ffi
from hypothesis import HealthCheck, given, settings
from models import BUILDERS, SLOW_BUILDERS
from strategies import relax_modules
from tvm import relax

import msc_rules
from msc_rules import native, rewrite
from msc_rules.rewrite import SpanEdits, rewrite_module

_FOLLOW = ("params", "body", "blocks", "bindings", "var", "value", "args", "fields",
           "tuple_value", "cond", "true_branch", "false_branch", "op")
_OPAQUE = ("ir.Op", "ir.GlobalVar", "relax.expr.ExternFunc")


def span_texts(mod: tvm.IRModule) -> list[tuple[str, str]]:
    """(type key, span text) of every node of every Relax function, in a fixed order
    (functions by name, then depth first through the fields that hold expressions)."""
    out: list[tuple[str, str]] = []

    def walk(o: Any) -> None:
        if isinstance(o, (list, tuple, tvm_ffi.Array)):
            for x in o:
                walk(x)
            return
        info = getattr(type(o), "__tvm_ffi_type_info__", None)
        if info is None or info.type_key in _OPAQUE:
            return
        sp = getattr(o, "span", None)
        sn = None if sp is None else sp.source_name
        out.append((info.type_key, "" if sn is None else str(sn.name)))
        for f in _FOLLOW:
            if f == "value" and info.type_key == "ir.GenericConst":
                continue
            v = getattr(o, f, None)
            if v is not None:
                walk(v)

    for gv in sorted(mod.get_global_vars(), key=lambda g: g.name_hint):
        func = mod[gv]
        if isinstance(func, relax.Function):
            walk(func)
    return out


@pytest.fixture
def set_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def choose(value: str) -> None:
        monkeypatch.setenv("MSC_RULES_NATIVE", value)

    yield choose


def _all_ways(mod: tvm.IRModule, set_mode: Any) -> dict[str, list[list[tuple[str, str]]]]:
    """The span texts after each pass, per path; the outputs are checked to be
    structurally equal to the input."""
    got: dict[str, list[list[tuple[str, str]]]] = {}
    for mode in ("0", "1"):
        set_mode(mode)
        outs = [msc_rules.SetExprLayout()(mod), msc_rules.SetExprName()(mod),
                msc_rules.SetExprLayout()(msc_rules.SetExprName()(mod)),
                msc_rules.annotate(mod)]
        for out in outs:
            tvm.ir.assert_structural_equal(out, mod)
        got[mode] = [span_texts(out) for out in outs]
    return got


def _params(names: Any) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILDERS else n
            for n in names]


@pytest.mark.parametrize("name", _params(BUILDERS))
def test_real_models_get_the_same_markers_both_ways(name: str, set_mode: Any) -> None:
    mod = BUILDERS[name]().mod
    before = len(rewrite.fallbacks)
    got = _all_ways(mod, set_mode)
    assert len(rewrite.fallbacks) == before, rewrite.fallbacks[before:]  # native really ran
    py, cc = got["0"], got["1"]
    assert py == cc
    layout, names, both, annotated = py
    assert annotated == both  # one rebuild writes what the two passes wrote
    assert any("<Layout>" in t for _, t in layout) and any("<Name>" in t for _, t in names)
    assert any("<Name>" in t and "<Layout>" in t for _, t in annotated)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])
@given(mod=relax_modules())
def test_random_modules_get_the_same_markers_both_ways(mod: tvm.IRModule) -> None:
    with pytest.MonkeyPatch.context() as mp:
        got = _all_ways(mod, lambda v: mp.setenv("MSC_RULES_NATIVE", v))
    assert got["0"] == got["1"]
    assert got["0"][3] == got["0"][2]


def _odd_modules() -> list[Any]:
    """The hand-built modules of tests/test_odd_modules.py: MatchCast, If, functions
    without dataflow blocks, call_tir, call_packed / call_dps_packed, constants shared by
    functions, recursion, nested local functions, ..."""
    import test_odd_modules as odd

    mods = [pytest.param(v, id=k) for k, v in sorted(vars(odd).items())
            if isinstance(v, tvm.IRModule)]
    mods += [pytest.param(odd.call_tir_module(), id="call_tir_module"),
             pytest.param(odd.shared_constant_module(), id="shared_constant_module"),
             pytest.param(odd.nested_local_functions(30), id="nested_local_functions")]
    return mods


@pytest.mark.parametrize("mod", _odd_modules())
def test_odd_modules_get_the_same_markers_both_ways(mod: tvm.IRModule, set_mode: Any) -> None:
    before = len(rewrite.fallbacks)
    got = _all_ways(mod, set_mode)
    assert len(rewrite.fallbacks) == before, rewrite.fallbacks[before:]
    assert got["0"] == got["1"]
    assert got["0"][3] == got["0"][2]


def _opaque_module() -> tvm.IRModule:
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3), "float32"))
    z = relax.Var("z", relax.TensorType((2, 3), "float32"))
    blocks = [relax.BindingBlock([
        relax.VarBinding(y, relax.op.nn.relu(x)),
        relax.VarBinding(z, tvm.ir.expr.TensorRegion(y, [], y.ty)),
    ])]
    func = relax.Function([x], relax.SeqExpr(blocks, z), relax.TensorType((2, 3), "float32"))
    return tvm.IRModule({"main": func})


def test_a_node_the_native_rebuild_does_not_know_sends_its_function_to_python(
        set_mode: Any) -> None:
    mod = _opaque_module()
    y = mod["main"].body.blocks[0].bindings[0].var
    edits = {"main": SpanEdits()}
    edits["main"].add_var(y, "Layout", "AB")
    set_mode("0")
    expected = span_texts(rewrite_module(mod, edits))
    set_mode("1")
    before = len(rewrite.fallbacks)
    out = rewrite_module(mod, edits)
    assert rewrite.fallbacks[before:] and rewrite.fallbacks[-1][0] == "main"
    assert "ir.TensorRegion" in rewrite.fallbacks[-1][1]
    assert span_texts(out) == expected
    assert msc_rules.get_layout(out["main"].body.blocks[0].bindings[0].var) == "AB"


def test_markers_with_separator_characters_take_the_python_rebuild(set_mode: Any) -> None:
    mod = _opaque_module()
    y = mod["main"].body.blocks[0].bindings[0].var
    edits = {"main": SpanEdits()}
    edits["main"].add_var(y, "Name", "odd\x1fname")
    set_mode("1")
    out = rewrite_module(mod, edits)
    assert msc_rules.get_name(out["main"].body.blocks[0].bindings[0].var) == "odd\x1fname"


def test_the_native_rebuild_rejects_inconsistent_arguments() -> None:
    mod = _opaque_module()
    rebuild = native.load().rebuild
    one = (0).to_bytes(8, "little")

    def sets(text: str = "Layout\x1fAB", sizes: bytes = b"\x01") -> list[Any]:
        return ["sets", text, sizes, one, b""]

    with pytest.raises(Exception, match="do not match the marker text"):
        rebuild(mod["main"], [sets(sizes=b"\x02")])
    with pytest.raises(Exception, match="do not match the marker text"):
        rebuild(mod["main"], [sets(text="Layout\x1fAB\x1fName")])
    with pytest.raises(Exception, match="differ in length"):
        rebuild(mod["main"], [sets(sizes=b"\x01\x01")])
    with pytest.raises(Exception, match="bad edit item"):
        rebuild(mod["main"], [sets()[:4]])
    with pytest.raises(Exception, match="differ in length"):
        rebuild(mod["main"], [["column", "Layout", "AB\x1fBA\x1fCD", one * 2, b"", True]])
    with pytest.raises(Exception, match="bad var handles"):
        rebuild(mod["main"], [["column", "Layout", "AB", b"\x00" * 7, b"", True]])
    with pytest.raises(Exception, match=r"relax\.Function"):
        rebuild(mod["main"].body, [])


def test_layers_write_what_their_combination_writes(set_mode: Any) -> None:
    """rewrite_layers: a node's markers layer after layer (a key set again keeps its
    place, a later entry of one layer wins), natively as in Python and as
    rewrite_module of the combined edits."""
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3), "float32"))
    blocks = [relax.BindingBlock([relax.VarBinding(y, relax.op.nn.relu(x))])]
    mod = tvm.IRModule({"main": relax.Function([x], relax.SeqExpr(blocks, y),
                                               relax.TensorType((2, 3), "float32"))})
    b = mod["main"].body.blocks[0].bindings[0]
    first, second, third = {"main": SpanEdits()}, {"main": SpanEdits()}, {"main": SpanEdits()}
    first["main"].vars[b.var.__chandle__()] = (("Layout", "AB"), ("Name", "y"))
    first["main"].values[b.value.__chandle__()] = (("Name", "relu"),)
    second["main"].add_var(b.var, "Layout", "BA")
    second["main"].add_var(x, "Name", "x")
    third["main"].add_var(x, "Name", "x2")
    third["main"].add_value(b.value, "Layout", "CD")
    layers = [first, second, third]
    texts = {}
    for mode in ("0", "1"):
        set_mode(mode)
        before = len(rewrite.fallbacks)
        out = rewrite.rewrite_layers(mod, layers)
        assert len(rewrite.fallbacks) == before
        tvm.ir.assert_structural_equal(out, mod)
        texts[mode] = span_texts(out)
        assert texts[mode] == span_texts(rewrite_module(mod, rewrite.combine(*layers)))
    assert texts["0"] == texts["1"]
    assert ("ir.Var", "<Layout>BA</Layout><Name>y</Name>") in texts["1"]
    assert ("ir.Call", "<Name>relu</Name><Layout>CD</Layout>") in texts["1"]
    assert ("ir.Var", "<Name>x2</Name>") in texts["1"]


def test_existing_span_text_is_kept_and_legacy_markers_replaced(set_mode: Any) -> None:
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    call = relax.op.nn.relu(x)
    old_span = tvm.ir.Span(tvm.ir.SourceName("model.py<layout>NC</layout><b>1</b>"),
                           3, 4, 5, 6)
    call = tvm.ir.expr.Call(call.op, [x], call.attrs, call.ty_args, old_span, ret_ty=call.ty)
    y = relax.Var("y", relax.TensorType((2, 3), "float32"), old_span)
    blocks = [relax.BindingBlock([relax.VarBinding(y, call)])]
    func = relax.Function([x], relax.SeqExpr(blocks, y), relax.TensorType((2, 3), "float32"))
    mod = tvm.IRModule({"main": func})
    texts = {}
    for mode in ("0", "1"):
        set_mode(mode)
        out = msc_rules.annotate(mod)
        texts[mode] = span_texts(out)
        b = out["main"].body.blocks[0].bindings[0]
        assert b.value.span.line == 3 and b.value.span.end_column == 6
    assert texts["0"] == texts["1"]
    assert ("ir.Call", "model.py<Layout>AB</Layout><b>1</b><Name>relu</Name>") in texts["1"]


@pytest.mark.parametrize("mode", ["1", "0"])
def test_markers_are_not_interned_and_the_module_still_works(set_mode: Any, mode: str) -> None:
    """Both rebuilds make their SourceNames without TVM's interning table (which is
    never freed): a marker text they wrote is not the interned SourceName of that text,
    and the annotated module still prints, round-trips through JSON and compiles."""
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3), "float32"))
    z = relax.Var("z", relax.TensorType((2, 3), "float32"))
    blocks = [relax.BindingBlock([relax.VarBinding(y, relax.op.nn.relu(x)),
                                  relax.VarBinding(z, relax.op.add(y, x))])]
    mod = tvm.IRModule({"main": relax.Function([x], relax.SeqExpr(blocks, z),
                                               relax.TensorType((2, 3), "float32"))})
    set_mode(mode)
    before = len(rewrite.fallbacks)
    out = msc_rules.annotate(mod)
    assert len(rewrite.fallbacks) == before
    marked = [(b.var.span.source_name, b.value.span.source_name)
              for b in out["main"].body.blocks[0].bindings]
    assert all("<Name>" in str(value.name) for _, value in marked)
    for source in [s for pair in marked for s in pair]:
        assert not tvm.ir.SourceName(str(source.name)).same_as(source)
    assert "R.nn.relu" in out.script()
    again = tvm.ir.load_json(tvm.ir.save_json(out))
    tvm.ir.assert_structural_equal(again, out)
    assert span_texts(again) == span_texts(out)
    assert span_texts(out) != span_texts(mod)
    assert tvm.compile(out, target="llvm") is not None


# ---- the loader ----------------------------------------------------------------------------


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A loader that has not built or failed yet, caching under tmp_path."""
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setattr(native, "_noticed", False)
    monkeypatch.setattr(native, "_held", None)
    monkeypatch.setenv("MSC_RULES_CACHE", str(tmp_path))
    return tmp_path


def test_mode_zero_never_builds(fresh_loader: Path, set_mode: Any) -> None:
    set_mode("0")
    assert native.get() is None
    assert not list(fresh_loader.iterdir())


def test_a_bad_mode_is_a_clear_error(set_mode: Any) -> None:
    set_mode("yes")
    with pytest.raises(msc_rules.MscRulesError, match="MSC_RULES_NATIVE"):
        native.get()


def test_the_cache_folder_names_the_versions(fresh_loader: Path) -> None:
    import tvm_ffi

    folder = native.cache_dir()
    assert folder.parent == fresh_loader
    assert tvm.__version__ in folder.name and tvm_ffi.__version__ in folder.name
    assert folder.name.startswith("native-0.")


def test_a_failing_build_falls_back_with_one_notice_line(
        fresh_loader: Path, set_mode: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CXX", "false")  # a compiler that always fails
    monkeypatch.delenv("MSC_RULES_NATIVE", raising=False)
    mod = _opaque_module()
    assert native.get() is None
    out = msc_rules.SetExprLayout()(mod)
    assert msc_rules.get_layout(out["main"].params[0]) != ""
    assert native.get() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "using the Python walk" in err and "Traceback" not in err
    set_mode("1")
    with pytest.raises(native.NativeBuildError, match=r"compiling naming\.cc, prune\.cc failed"):
        msc_rules.SetExprLayout()(mod)


def test_compilers_run_no_more_at_once_than_cores_longest_first(
        fresh_loader: Path, set_mode: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a "compiler" that logs when it starts and ends each source, then fails
    log = fresh_loader / "log"
    fake = fresh_loader / "fake-cxx"
    fake.write_text('#!/bin/sh\nfor a; do case "$a" in *.cc) src=$a;; esac; done\n'
                    f'echo "start $src" >> {log}\nsleep 0.2\necho "end $src" >> {log}\n'
                    'exit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setattr(native, "_workers", lambda: 2)
    set_mode("1")
    with pytest.raises(native.NativeBuildError, match="compiling naming\\.cc, prune\\.cc failed"):
        native.load()
    events = [line.split(" ", 1) for line in log.read_text().splitlines()]
    running, most = 0, 0
    for what, _ in events:
        running += 1 if what == "start" else -1
        most = max(most, running)
    starts = [Path(src).stem for what, src in events if what == "start"]
    assert most == 2 and sorted(starts) == sorted("_".join(g) for g in native.UNITS)
    assert "naming_prune" in starts[:2]  # (the longest first: the first two start together)


def test_a_missing_compiler_is_a_build_error(fresh_loader: Path, set_mode: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", os.path.join(str(fresh_loader), "no-such-compiler"))
    set_mode("1")
    with pytest.raises(native.NativeBuildError, match="cannot run the C\\+\\+ compiler"):
        native.load()


def test_a_build_goes_to_the_cache_and_is_reused(fresh_loader: Path) -> None:
    module = native.load()
    assert module.version() == native.VERSION
    built = list(native.cache_dir().glob("*.so"))
    assert [p.name for p in built] == ["msc_rules_native.so"]
    stamp = built[0].stat().st_mtime_ns
    native._module = None
    assert native.load().version() == native.VERSION
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


def test_an_unwritable_cache_is_a_build_error(fresh_loader: Path, set_mode: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = fresh_loader / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MSC_RULES_CACHE", str(blocker))
    set_mode("1")
    with pytest.raises(native.NativeBuildError, match="cannot write the cache folder"):
        native.load()


def test_a_refusal_is_the_first_line_of_its_error_and_logs_keep_the_last_ones() -> None:
    assert native.refusal(RuntimeError("no rule for x\n  at binding 3")) == "no rule for x"
    assert native.refusal(KeyError()) == "KeyError()"  # (no text: its repr)
    assert native.refusal("a node it does not know\nmore") == "a node it does not know"
    assert native.refusal("") == "" and native.refusal("\n") == ""
    log: list[int] = []
    for k in range(native.REFUSALS_KEPT + 5):
        native.note_refusal(log, k)
    assert log == list(range(5, native.REFUSALS_KEPT + 5))

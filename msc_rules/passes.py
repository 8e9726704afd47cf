"""The module passes: SetExprLayout (and the marker plan it writes), SetExprName,
`annotate` (names, then layouts) and the `msc_rules` relax pipeline."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
import tvm
from tvm import relax

from . import native as _native
from . import span
from .dsl.ruleset import RuleSet
from .engine import InferenceResult, infer_layouts, infer_view, marker_text
from .errors import MissingLayoutError, MscRulesError, remember
from .graph import DependencyView
from .joint_read import read_and_name
from .library import default_rules
from .naming import plan_names
from .rewrite import Markers, SpanEdits, marked, rewrite_layers, rewrite_module
from .util import paused_gc

_MARKED_VALUES = frozenset((tvm.ir.expr.Call, tvm.ir.expr.Tuple, tvm.ir.expr.TupleGetItem,
                            tvm.ir.expr.GenericConst))


def layout_edits(result: InferenceResult) -> dict[str, SpanEdits]:
    """The Layout markers to write, per global function, from an inference result.

    The other values (`DependencyView.others`) get plain entries. Call bindings get
    theirs by leaf: for the native rebuild as one column per function (`MarkerColumn`,
    flat arrays read from the view here, so the view can go before the rewrite), for
    the Python one as markers per leaf with the view's records (`SpanEdits.leaf_markers`:
    its rebuild reuses what the view read of each binding).
    """
    view = result.view
    edits = {top: SpanEdits() for top in view.tops}
    # one marker tuple per layout text (each node gets just this one key here, so the
    # general merge of SpanEdits.add_* is not needed)
    markers_of: dict[str, Markers] = {}

    def markers(text: str) -> Markers:
        got = markers_of.get(text)
        if got is None:
            got = markers_of[text] = marked(None, span.LAYOUT, text)
        return got

    layouts = result.layouts
    for vid in view.others:
        v = view.values[vid]
        st = v.struct
        text = (layouts[st] or "") if type(st) is int else marker_text(layouts, st)
        if not text:
            continue
        m = markers(text)
        if v.kind == "const":
            # a constant object can sit in several functions: mark it wherever it is
            for e in edits.values():
                e.values[v.expr.__chandle__()] = m
            continue
        e = edits[v.top]
        e.vars[v.expr.__chandle__()] = m
        if v.kind == "binding" and type(v.value) in _MARKED_VALUES:
            e.values[v.value.__chandle__()] = m
    if _native.get() is not None:
        _binding_columns(view, layouts, edits)
        return edits
    leaf_markers = [markers(x) if x else None for x in layouts]

    def struct_markers(struct: Any) -> Markers | None:
        # (reads the layouts only: the result, and so the view, can go before the rewrite)
        text = marker_text(layouts, struct)
        return markers(text) if text else None

    for e in edits.values():
        e.records, e.leaf_markers, e.struct_markers = (
            view.block_records, leaf_markers, struct_markers)
    return edits


def _binding_columns(view: DependencyView, layouts: list[str | None],
                     edits: dict[str, SpanEdits]) -> None:
    """Add to each function's edits a column of its call bindings: the handles of their
    vars and calls and their layout texts, from the view's columns in bulk (no Value
    made: `DependencyView.values.call_bindings`)."""
    # per leaf its text, and "" last: a struct of -1 (None) picks it
    texts_of = np.array([*(x or "" for x in layouts), ""], dtype=object)
    for run in view.values.call_bindings():
        e = edits.get(run.top)
        if e is None or not len(run.ids):
            continue
        structs = run.structs
        texts: list[str] = texts_of[np.maximum(structs, -1)].tolist()
        for k in np.flatnonzero(structs == -2).tolist():  # (a tuple: its leaves' texts)
            texts[k] = marker_text(layouts, view.values[int(run.ids[k])].struct)
        e.add_column(span.LAYOUT, texts, vars=run.var_handles, values=run.call_handles,
                     share=True)


def write_layouts(mod: tvm.IRModule, result: InferenceResult) -> tvm.IRModule:
    """`mod` with the Layout markers of `result`, an inference made on `mod` itself
    (what SetExprLayout writes, for a caller that already has the result)."""
    with paused_gc():
        return rewrite_module(mod, layout_edits(result))


def missing_layouts(result: InferenceResult) -> list[str]:
    """Bindings and constants left without a layout, or computed by an op without a rule."""
    missing: list[str] = []
    for v in result.view.values:
        leaves: list[int] = []
        _collect(v.struct, leaves)
        if any(result.layouts[x] is None and result.view.leaf_ndim[x] >= 0 for x in leaves):
            missing.append(f"{v.func}:{v.name}")
    for site in result.view.sites:
        if site.op == "<link>" or site.call is None:
            continue
        if site.op.startswith("plugin:"):
            ruled = result.rules.plugin(site.op[7:]) is not None
        else:
            ruled = bool(site.op) and result.rules.status(site.op) != "undecided"
        if not ruled:
            v = result.view.values[site.value_id]
            missing.append(f"{v.func}:{v.name} (no rule for {site.op or 'an opaque call'})")
    return missing


def _collect(struct: Any, out: list[int]) -> None:
    if isinstance(struct, int):
        out.append(struct)
    elif isinstance(struct, tuple):
        for s in struct:
            _collect(s, out)


_T = TypeVar("_T")


def _keeps_errors(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Let our errors cross TVM's pass machinery with their fields (see errors.remember)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> _T:
        try:
            return fn(*args, **kwargs)
        except MscRulesError as err:
            remember(err)
            raise

    return run


@tvm.transform.module_pass(opt_level=0, name="SetExprLayout")
class SetExprLayout:
    """Write a `<Layout>` marker on every param, binding var, bound value and constant."""

    def __init__(self, allow_missing: bool = True, entry_name: str = "main",
                 rules: RuleSet | None = None) -> None:
        self.allow_missing = allow_missing
        self.entry_name = entry_name
        self.rules = rules

    @_keeps_errors
    def transform_module(self, mod: tvm.IRModule, ctx: Any) -> tvm.IRModule:
        """Infer layouts for the entry function (and its callees) and write them."""
        # One pause for the whole pass, and the temporaries freed inside it: objects
        # allocated while paused count towards the collector's first generation, so
        # re-enabling it with them still alive triggers a scan of all of them.
        with paused_gc():
            result = infer_layouts(mod, self.rules, self.entry_name)
            if not self.allow_missing:
                missing = missing_layouts(result)
                if missing:
                    raise MissingLayoutError(self.entry_name, missing)
            edits = layout_edits(result)
            del result  # the view lives on in the edits' records, which the rewrite frees
            out = rewrite_module(mod, edits, release=True)
            del edits
        return out


@tvm.transform.module_pass(opt_level=0, name="SetExprName")
class SetExprName:
    """Write a unique `<Name>` marker on every Call, Constant, Tuple, TupleGetItem and
    ShapeExpr of the entry function and the functions it calls (rules: naming.py).

    `target` strips a `"<target>."` prefix from composite function kinds; `var_names`
    maps binding-var names to wanted names; `rules` (default: the builtin library)
    supplies base names and the argument roles that name constants.
    """

    def __init__(self, entry_name: str = "main", target: str = "",
                 var_names: Mapping[str, str] | None = None,
                 rules: RuleSet | None = None) -> None:
        self.entry_name = entry_name
        self.target = target
        self.var_names = dict(var_names or {})
        self.rules = rules

    @_keeps_errors
    def transform_module(self, mod: tvm.IRModule, ctx: Any) -> tvm.IRModule:
        """Plan the names of the entry function (and its callees) and write them."""
        with paused_gc():
            plan = plan_names(mod, self.rules, self.entry_name, self.target, self.var_names)
            edits = plan.edits()
            return rewrite_module(mod, edits) if edits else mod


def annotate(mod: tvm.IRModule, rules: RuleSet | None = None,
             entry_name: str = "main") -> tvm.IRModule:
    """Names, then layouts: both markers end up side by side on one span.

    The markers of SetExprName then SetExprLayout, from one read of the module (the
    view and the names plan in one walk: joint_read.py) and written in one rebuild: the
    layouts are inferred on the input module (names do not change them) and each node gets its
    Name (and SharedRef) markers, then its Layout marker (the two sets of edits go to
    the rebuild as layers: the native one merges them per node itself).
    """
    rs = rules if rules is not None else default_rules()
    with paused_gc():
        # one walk over the module for the view and the names (joint_read.py)
        read = read_and_name(mod, rs, entry_name)
        result = infer_view(read.view, rs)
        layouts = layout_edits(result)
        plan = read.names()  # (planned here if in Python: never beside the engine)
        del result, read  # (for the Python rebuild the view lives on in the records)
        names = plan.edits()
        del plan
        out = rewrite_layers(mod, [names, layouts], release=True)
        del names, layouts
    return out


def annotation_passes(rules: RuleSet | None = None, entry_name: str = "main",
                      target: str = "", var_names: Mapping[str, str] | None = None,
                      allow_missing: bool = True) -> list[tvm.transform.Pass]:
    """[SetExprName, SetExprLayout], configured alike (for a custom Sequential)."""
    return [SetExprName(entry_name=entry_name, target=target, var_names=var_names,
                        rules=rules),
            SetExprLayout(allow_missing=allow_missing, entry_name=entry_name, rules=rules)]


PIPELINE_NAME = "msc_rules"


def annotated_pipeline(base: str | tvm.transform.Pass = "default",
                       rules: RuleSet | None = None, entry_name: str = "main",
                       target: str = "", var_names: Mapping[str, str] | None = None,
                       allow_missing: bool = True) -> tvm.transform.Pass:
    """The recipe: annotate (names, then layouts), then a relax build pipeline.

    Markers live in spans, which LegalizeOps and FuseOps drop, so annotation has to
    run first. Use it directly, or by its registered name::

        seq = msc_rules.annotated_pipeline()            # tvm.transform.Sequential
        ex = tvm.compile(mod, target="llvm", relax_pipeline=seq)
        ex = tvm.compile(mod, target="llvm", relax_pipeline="msc_rules")

    An equivalent hand-written recipe::

        seq = tvm.transform.Sequential([
            msc_rules.SetExprName(),
            msc_rules.SetExprLayout(),
            tvm.relax.get_pipeline("default"),
        ])

    `base` names a registered relax pipeline (`tvm.relax.get_pipeline`) or is a Pass
    (for a GPU target pass `tvm.relax.get_default_pipeline(target)`: tvm.compile only
    picks the target's pipeline itself for the name "default"); the other arguments
    configure SetExprName and SetExprLayout. Insert a pass that
    reads the markers (a quantizer, an exporter) between the two parts by building
    the Sequential from `annotation_passes()` yourself.
    """
    lower = relax.get_pipeline(base) if isinstance(base, str) else base
    passes = [*annotation_passes(rules, entry_name, target, var_names, allow_missing), lower]
    return tvm.transform.Sequential(passes, name="msc_rules.annotated_pipeline")


def _register_pipeline() -> None:
    """Register `annotated_pipeline` as the relax pipeline "msc_rules" (once)."""
    from tvm.relax import pipeline

    if PIPELINE_NAME not in pipeline.PIPELINE_MAP:
        relax.register_pipeline(PIPELINE_NAME)(annotated_pipeline)


_register_pipeline()


__all__ = ["PIPELINE_NAME", "SetExprLayout", "SetExprName", "annotate", "annotated_pipeline",
           "annotation_passes", "layout_edits", "missing_layouts", "write_layouts"]

"""Reports of the `msc-rules` command as plain data, and their text/JSON/Markdown renderers.

- `library_coverage(rules)`: every registered relax op with its status in the rule set
  (rule file:line with forward/backward equation counts, ignored with a reason, or
  undecided) and whether TVM has a built-in FRelaxInferLayout for it.
- `model_coverage(analysis)`: the ops a module uses, bindings per op, ops without rules,
  tensors left without a layout, guessed layouts and guessed weights (per op and in
  total; definitions in guesses.py), and conflicts.
- `explain(analysis, name)`: the chain of decisions that gave one tensor its layout,
  and every conflict touching it.
- `tensor_rows(mod, entry)`: one row per tensor of an annotated module (name, op,
  shape, layout, guessed), read back from the span markers.

One definition of "tensor" for every report: a tensor-typed leaf of the dependency
view. A tuple counts its fields, an alias (`lv = R.const(...)`, `y = x`, `t[0]`) is
not a second tensor, and a scalar (rank 0) has the empty layout and is not missing.

Every report is a dataclass with `to_dict()` (the JSON form); `render(report, fmt)`
turns one into text, JSON or Markdown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import tvm

from . import span
from .dsl.ruleset import Rule, RuleSet
from .engine import Conflict, Decision, InferenceResult, infer_view
from .errors import MscRulesError
from .graph import DependencyView, Struct, build_view
from .guesses import (
    Guesses,
    describe,
    equation_reads,
    find_guesses,
    leaves_of,
    site_ports,
    site_rule,
)

FORMATS = ("text", "json", "markdown")


class ReportError(MscRulesError):
    """A report cannot be made (e.g. no tensor has the name asked for)."""


# --------------------------------------------------------------------------- names


def _path_to(struct: Struct, leaf: int) -> list[int] | None:
    if struct == leaf:
        return []
    if isinstance(struct, tuple):
        for i, s in enumerate(struct):
            sub = _path_to(s, leaf)
            if sub is not None:
                return [i, *sub]
    return None


def _marker_name(node: Any) -> str:
    if isinstance(node, tvm.ir.Node) and hasattr(node, "span"):
        return span.get_marker(node, span.NAME)
    return ""


class Names:
    """Readable names for the values and leaves of a view.

    A value's name is its `<Name>` marker (on the bound value, or on a constant), else
    its variable name; unnamed constants are `const`, `const_1`, ... in program order.
    A tuple field's leaf is `<name>.<i>`, as MSC names tuple items.
    """

    def __init__(self, view: DependencyView) -> None:
        self.view = view
        self.value_name: list[str] = []
        self.var_name: list[str] = []
        consts = 0
        for v in view.values:
            name = _marker_name(v.value) if v.kind == "binding" else _marker_name(v.expr)
            if not name and v.kind == "const":
                name = "const" if consts == 0 else f"const_{consts}"
                consts += 1
            self.value_name.append(name or v.name)
            self.var_name.append(v.name if v.kind != "const" else "")

    def leaf_name(self, leaf: int) -> str:
        """`<owner name>` or `<owner name>.<i>...` for a tuple field."""
        vid = self.view.leaf_value[leaf]
        path = _path_to(self.view.values[vid].struct, leaf) or []
        return self.value_name[vid] + "".join(f".{i}" for i in path)

    def find(self, query: str) -> list[tuple[str, list[int]]]:
        """Values or leaves called `query` (Name marker, var name, `func:var`, `name.i`).

        Returns (label, leaves) pairs; several pairs mean the name is ambiguous.
        """
        exact: dict[int, tuple[str, list[int]]] = {}
        for vid, v in enumerate(self.view.values):
            leaves = leaves_of(v.struct)
            if not leaves:
                continue
            place = f"{v.func}:{v.name}"
            if query in (self.value_name[vid], self.var_name[vid], place):
                exact.setdefault(leaves[0], (f"{self.value_name[vid]} ({place})", leaves))
        if not exact:
            for leaf in range(len(self.view.leaf_ndim)):
                if query == self.leaf_name(leaf):
                    exact.setdefault(leaf, (query, [leaf]))
        # aliases (x = y, x = t[i]) share leaves: one entry per distinct set of leaves
        seen: dict[tuple[int, ...], tuple[str, list[int]]] = {}
        for label, leaves in exact.values():
            seen.setdefault(tuple(leaves), (label, leaves))
        return list(seen.values())


@dataclass
class Analysis:
    """A module with names, the inference result on it, and readable names."""

    mod: tvm.IRModule
    entry: str
    result: InferenceResult
    names: Names
    named: bool  # whether a naming pass wrote Name markers

    @property
    def view(self) -> DependencyView:
        """The dependency view the result was computed on."""
        return self.result.view


def name_pass(rules: RuleSet | None = None, entry: str = "main") -> Any:
    """A configured `msc_rules.SetExprName` pass when the naming pass exists, else None."""
    import inspect

    import msc_rules

    cls = getattr(msc_rules, "SetExprName", None)
    if cls is None:
        return None
    kwargs: dict[str, Any] = {"entry_name": entry}
    try:
        if "rules" in inspect.signature(cls).parameters:
            kwargs["rules"] = rules
    except (TypeError, ValueError):
        pass
    return cls(**kwargs)


def check_entry(mod: tvm.IRModule, entry: str) -> None:
    """Raise IRError unless `entry` is a Relax function of `mod`.

    Checked before any pass runs: an error raised inside a TVM pass reaches the caller
    as a plain RuntimeError.
    """
    from .errors import IRError

    funcs = {gv.name_hint: mod[gv] for gv in mod.get_global_vars()}
    if not isinstance(funcs.get(entry), tvm.relax.Function):
        names = ", ".join(sorted(n for n, f in funcs.items()
                                 if isinstance(f, tvm.relax.Function)))
        raise IRError(f"entry function '{entry}' is not a Relax function of the module "
                      f"(functions: {names or 'none'})")


def analyze(mod: tvm.IRModule, rules: RuleSet, entry: str = "main",
            progress: Callable[[str], None] | None = None) -> Analysis:
    """Name the module (when SetExprName exists) and infer its layouts."""
    check_entry(mod, entry)
    named = False
    set_name = name_pass(rules, entry)
    if set_name is not None:
        if progress:
            progress("naming")
        mod = set_name(mod)
        named = True
    if progress:
        progress("building the dependency view")
    view = build_view(mod, entry)
    if progress:
        progress("inferring layouts")
    result = infer_view(view, rules)
    return Analysis(mod, entry, result, Names(view), named)


# --------------------------------------------------------------------------- small helpers


def _pos(p: Any) -> str:
    """`file:line:col`, the file relative to the working directory when inside it."""
    if p is None:
        return ""
    return f"{short_path(p.file)}:{p.line}:{p.col}"


def short_path(file: str) -> str:
    """`file` relative to the working directory when it lies below it."""
    try:
        rel = os.path.relpath(file)
    except ValueError:
        return file
    return file if rel.startswith("..") else rel


def _op_label(op: str) -> str:
    if op == "<link>":
        return "<link> (call, If or MatchCast identity)"
    return op or "<opaque call>"


def _shape_text(ty: Any) -> str:
    if isinstance(ty, tvm.relax.TensorType):
        shape = getattr(ty, "shape", None)
        values = getattr(shape, "values", None)
        dtype = str(ty.dtype) if ty.dtype is not None else ""
        if values is None:
            dims = "?" if int(ty.ndim) < 0 else ", ".join("?" * int(ty.ndim))
        else:
            dims = ", ".join(str(int(d.value)) if isinstance(d, tvm.prim.IntImm) else str(d)
                             for d in values)
        return f"[{dims}] {dtype}".strip()
    if isinstance(ty, tvm.ir.type.TupleType):
        return "(" + ", ".join(_shape_text(f) for f in ty.fields) + ")"
    return ""


# --------------------------------------------------------------------------- library coverage


@dataclass
class OpStatus:
    """One registered relax op in the rule set."""

    op: str
    status: str  # "ruled" | "ignored" | "undecided"
    where: str = ""  # file:line:col of the rule or of the ignore
    family: str = ""
    forward: int = 0
    backward: int = 0
    reason: str = ""
    tvm_infer_layout: bool = False


@dataclass
class LibraryCoverage:
    """Every registered relax op and its status in a rule set."""

    ops: list[OpStatus]
    files: list[str]
    plugins: list[OpStatus] = field(default_factory=list)
    unregistered: list[OpStatus] = field(default_factory=list)  # rules for unknown ops

    @property
    def totals(self) -> dict[str, int]:
        """Counts by status, plus TVM's own layout coverage."""
        count = {"ops": len(self.ops), "ruled": 0, "ignored": 0, "undecided": 0}
        for o in self.ops:
            count[o.status] += 1
        count["tvm_infer_layout"] = sum(o.tvm_infer_layout for o in self.ops)
        count["ruled_without_tvm_infer_layout"] = sum(
            o.status == "ruled" and not o.tvm_infer_layout for o in self.ops)
        count["plugins"] = len(self.plugins)
        return count

    @property
    def percent(self) -> float:
        """Share of registered ops that are decided (ruled or ignored), in percent."""
        t = self.totals
        return 100.0 * (t["ruled"] + t["ignored"]) / t["ops"] if t["ops"] else 100.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "kind": "library-coverage",
            "percent": round(self.percent, 2),
            "totals": self.totals,
            "files": self.files,
            "ops": [asdict(o) for o in self.ops],
            "plugins": [asdict(o) for o in self.plugins],
            "unregistered": [asdict(o) for o in self.unregistered],
        }


def registered_relax_ops() -> list[str]:
    """Every op registered with TVM whose name starts with `relax.`, sorted."""
    return sorted(str(n) for n in tvm.ir.Op.list_op_names() if str(n).startswith("relax."))


def tvm_has_infer_layout(op: str) -> bool:
    """Whether TVM registers a built-in FRelaxInferLayout for `op` (ConvertLayout's rules)."""
    try:
        return tvm.ir.Op.get(op).get_attr("FRelaxInferLayout") is not None
    except Exception:
        return False


def _rule_status(rule: Rule, op: str, tvm_layout: bool) -> OpStatus:
    return OpStatus(op, "ruled", _pos(rule.pos), rule.family or "", len(rule.forward),
                    len(rule.backward), "", tvm_layout)


def library_coverage(rules: RuleSet) -> LibraryCoverage:
    """The status of every registered relax op in `rules`."""
    ops: list[OpStatus] = []
    registered = registered_relax_ops()
    for op in registered:
        builtin = tvm_has_infer_layout(op)
        rule = rules.lookup(op)
        if rule is not None:
            ops.append(_rule_status(rule, op, builtin))
            continue
        ign = rules.ignored(op)
        if ign is not None:
            ops.append(OpStatus(op, "ignored", _pos(ign.pos), reason=ign.reason,
                                tvm_infer_layout=builtin))
        else:
            ops.append(OpStatus(op, "undecided", tvm_infer_layout=builtin))
    known = set(registered)
    extra = [_rule_status(r, op, False) for op, r in sorted(rules.rules.items()) if op not in known]
    plugins = [_rule_status(r, name, False) for name, r in sorted(rules.plugins.items())]
    for p in plugins:
        p.status = "plugin"
    for e in extra:
        e.status = "unregistered"
    return LibraryCoverage(ops, list(rules.files), plugins, extra)


# --------------------------------------------------------------------------- model coverage


@dataclass
class ConflictInfo:
    """A conflict, with readable names."""

    tensor: str
    place: str
    kind: str
    proposed: str
    existing: str
    existing_by: str
    site: str
    op: str
    equation: str
    position: str
    message: str


def _eq_text(text: str) -> str:
    """An equation's source text with its alignment spaces collapsed."""
    return " ".join(text.split())


def _decision_text(result: InferenceResult, d: Decision | None) -> str:
    if d is None:
        return ""
    if d.equation is None:
        return d.kind
    op = result.view.sites[d.site].op if d.site >= 0 else ""
    return f"{_eq_text(d.equation.text)} ({_op_label(op)}, {_pos(d.equation.pos)})"


def conflict_info(analysis: Analysis, c: Conflict) -> ConflictInfo:
    """A conflict in readable form."""
    r = analysis.result
    cs = r.view.sites[c.site] if c.site >= 0 else None
    return ConflictInfo(
        tensor=analysis.names.leaf_name(c.leaf) if c.leaf >= 0 else "",
        place=r.leaf_place(c.leaf) if c.leaf >= 0 else "",
        kind=c.kind,
        proposed=c.proposed,
        existing=c.existing.layout if c.existing else "",
        existing_by=_decision_text(r, c.existing),
        site=analysis.names.value_name[cs.value_id] if cs else "",
        op=_op_label(cs.op) if cs else "",
        equation=_eq_text(c.equation.text),
        position=_pos(c.equation.pos),
        message=c.message,
    )


@dataclass
class ModelOp:
    """One op a module uses."""

    op: str
    bindings: int
    status: str  # "ruled" | "ignored" | "undecided" | "plugin" | "unruled plugin" | "opaque"
    where: str = ""
    guessed: int = 0  # output tensors of its bindings whose layout is guessed
    guessed_weights: int = 0  # guessed weights its bindings read


@dataclass
class TensorIssue:
    """A tensor without a layout, or with a guessed one."""

    tensor: str
    place: str
    layout: str
    reason: str
    derived: bool = False  # guessed: derived only from guesses, not initial letters


@dataclass
class GuessedWeight:
    """A weight (constant or non-input parameter reaching a conv, matmul or norm) whose
    layout is guessed."""

    tensor: str
    place: str
    layout: str
    consumers: list[str]  # "<consumer name> (<op> <role>)"
    reason: str

    def text(self) -> str:
        """One line: name, place, layout and the first consumer."""
        used = f", read by {self.consumers[0]}" if self.consumers else ""
        return f"{self.tensor} ({self.place}) '{self.layout}'{used}"


@dataclass
class ModelCoverage:
    """What the rules decide on one module.

    `tensors` counts every tensor-typed leaf of the dependency view (a tuple counts its
    fields; an alias such as `lv = R.const(...)` or `t[0]` is not a second tensor);
    scalars have the empty layout and are not missing. `annotate` counts the same set.
    """

    model: str
    entry: str
    tensors: int
    bindings: int
    ops: list[ModelOp]
    unruled: dict[str, int]
    without_layout: list[TensorIssue]
    guessed: list[TensorIssue]
    conflicts: list[ConflictInfo]
    guessed_weights: list[GuessedWeight] = field(default_factory=list)
    scalars: int = 0
    weights: int = 0

    @property
    def covered_bindings(self) -> int:
        """Call bindings whose op has a rule or is deliberately ignored."""
        return sum(o.bindings for o in self.ops if o.status in ("ruled", "ignored", "plugin"))

    @property
    def percent(self) -> float:
        """Share of call bindings whose op is ruled or ignored, in percent."""
        return 100.0 * self.covered_bindings / self.bindings if self.bindings else 100.0

    @property
    def totals(self) -> dict[str, int]:
        """Headline counts."""
        initial = sum(1 for g in self.guessed if not g.derived)
        return {
            "tensors": self.tensors,
            "with_layout": self.tensors - len(self.without_layout),
            "scalars": self.scalars,
            "bindings": self.bindings,
            "covered_bindings": self.covered_bindings,
            "ops": len(self.ops),
            "unruled_ops": len(self.unruled),
            "without_layout": len(self.without_layout),
            "guessed": len(self.guessed),
            "guessed_initial_letters": initial,
            "guessed_derived": len(self.guessed) - initial,
            "weights": self.weights,
            "guessed_weights": len(self.guessed_weights),
            "conflicts": len(self.conflicts),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "kind": "model-coverage",
            "model": self.model,
            "entry": self.entry,
            "percent": round(self.percent, 2),
            "totals": self.totals,
            "ops": [asdict(o) for o in self.ops],
            "unruled": dict(self.unruled),
            "without_layout": [asdict(t) for t in self.without_layout],
            "guessed": [asdict(t) for t in self.guessed],
            "guessed_weights": [asdict(t) for t in self.guessed_weights],
            "conflicts": [asdict(c) for c in self.conflicts],
        }


def _use_label(analysis: Analysis, site: int, role: str) -> str:
    """`<consumer name> (<op> <role>)`, e.g. `matmul (relax.matmul weight)`."""
    cs = analysis.view.sites[site]
    return f"{analysis.names.value_name[cs.value_id]} ({cs.op}{' ' + role if role else ''})"


def guessed_weights(analysis: Analysis, guesses: Guesses | None = None) -> list[GuessedWeight]:
    """The weights of the analysed module whose layout is guessed, in leaf order."""
    r = analysis.result
    g = guesses if guesses is not None else find_guesses(r, analysis.mod)
    out: list[GuessedWeight] = []
    for leaf in g.guessed_weights:
        consumers = [_use_label(analysis, u.site, u.role) for u in g.weights[leaf]]
        out.append(GuessedWeight(analysis.names.leaf_name(leaf), r.leaf_place(leaf),
                                 r.layouts[leaf] or "", list(dict.fromkeys(consumers)),
                                 describe(r, leaf, g)))
    return out


def model_coverage(analysis: Analysis, model: str = "",
                   guesses: Guesses | None = None) -> ModelCoverage:
    """Ops used, bindings per op, unruled ops, tensors without layouts or with guessed
    ones (guessed weights apart), and conflicts."""
    r = analysis.result
    rules = r.rules
    g = guesses if guesses is not None else find_guesses(r, analysis.mod)
    counts: dict[str, int] = {}
    op_guessed: dict[str, int] = {}
    op_weights: dict[str, int] = {}
    guessed_weight_set = set(g.guessed_weights)
    for cs in r.view.sites:
        if cs.op == "<link>" or cs.call is None:
            continue
        key = cs.op or "<opaque call>"
        counts[key] = counts.get(key, 0) + 1
        if r.view.values[cs.value_id].struct is not None:
            own = [x for x in leaves_of(cs.out) if r.view.leaf_value[x] == cs.value_id]
            op_guessed[key] = op_guessed.get(key, 0) + sum(g.guessed[x] for x in own)
    for leaf in guessed_weight_set:
        for op in dict.fromkeys(r.view.sites[u.site].op for u in g.weights[leaf]):
            op_weights[op] = op_weights.get(op, 0) + 1
    ops: list[ModelOp] = []
    for op in sorted(counts):
        n = counts[op]
        if op.startswith("plugin:"):
            rule = rules.plugin(op[len("plugin:"):])
            entry = ModelOp(op, n, "plugin" if rule else "unruled plugin",
                            _pos(rule.pos) if rule else "")
        elif op == "<opaque call>":
            entry = ModelOp(op, n, "opaque")
        else:
            status = rules.status(op)
            rule = rules.lookup(op)
            ign = rules.ignored(op)
            where = _pos(rule.pos) if rule else (ign.reason if ign else "")
            entry = ModelOp(op, n, status, where)
        entry.guessed = op_guessed.get(op, 0)
        entry.guessed_weights = op_weights.get(op, 0)
        ops.append(entry)
    without: list[TensorIssue] = []
    guessed: list[TensorIssue] = []
    names = analysis.names
    scalars = 0
    for leaf, ndim in enumerate(r.view.leaf_ndim):
        d = r.decisions[leaf]
        if ndim == 0:
            scalars += 1
        if ndim < 0:
            without.append(TensorIssue(names.leaf_name(leaf), r.leaf_place(leaf), "",
                                       "rank unknown"))
        elif d is None:
            without.append(TensorIssue(names.leaf_name(leaf), r.leaf_place(leaf), "",
                                       "no rule decided it"))
        elif g.guessed[leaf]:
            guessed.append(TensorIssue(names.leaf_name(leaf), r.leaf_place(leaf), d.layout,
                                       describe(r, leaf, g), not g.direct[leaf]))
    return ModelCoverage(
        model=model,
        entry=analysis.entry,
        tensors=len(r.view.leaf_ndim),
        bindings=sum(counts.values()),
        ops=ops,
        unruled=dict(sorted(r.unruled.items())),
        without_layout=without,
        guessed=guessed,
        conflicts=[conflict_info(analysis, c) for c in r.conflicts],
        guessed_weights=guessed_weights(analysis, g),
        scalars=scalars,
        weights=len(g.weights),
    )


# --------------------------------------------------------------------------- explain


@dataclass
class Read:
    """A neighbour tensor an equation read."""

    port: str
    tensor: str
    layout: str
    step: int | None = None  # the step that explains it, when shown


@dataclass
class Step:
    """One decision in an explanation chain."""

    index: int
    tensor: str
    place: str
    layout: str
    kind: str  # "rule" | "weak" | "fallback" | "seed" | "undecided"
    op: str = ""
    site: str = ""
    port: str = ""
    equation: str = ""
    position: str = ""
    reads: list[Read] = field(default_factory=list)
    note: str = ""
    considered: list[str] = field(default_factory=list)
    """For initial letters: each rule that could have decided the tensor, and why it
    did not (it waited for a tensor decided later, or it gave nothing)."""


@dataclass
class Explanation:
    """Why a tensor has its layout."""

    query: str
    tensor: str
    place: str
    layout: str
    steps: list[Step]
    conflicts: list[ConflictInfo]
    truncated: bool = False
    named: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "kind": "explanation",
            "query": self.query,
            "tensor": self.tensor,
            "place": self.place,
            "layout": self.layout,
            "steps": [asdict(s) for s in self.steps],
            "conflicts": [asdict(c) for c in self.conflicts],
            "truncated": self.truncated,
        }


def find_tensor(analysis: Analysis, query: str) -> tuple[str, list[int]]:
    """The leaves of the tensor called `query`, or a ReportError naming close matches."""
    found = analysis.names.find(query)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        listed = ", ".join(label for label, _ in found[:10])
        raise ReportError(f"tensor name '{query}' is ambiguous: {listed}; "
                          "use FUNCTION:VAR to pick one")
    import difflib

    pool = sorted({*analysis.names.value_name, *(n for n in analysis.names.var_name if n)})
    close = difflib.get_close_matches(query, pool, n=5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ReportError(f"no tensor named '{query}' in function '{analysis.entry}' "
                      f"or its callees{hint}")


def _step(analysis: Analysis, index: int, leaf: int) -> tuple[Step, list[tuple[str, int]]]:
    r = analysis.result
    names = analysis.names
    d = r.decisions[leaf]
    base = Step(index, names.leaf_name(leaf), r.leaf_place(leaf), r.layouts[leaf] or "",
                d.kind if d else "undecided")
    if d is None:
        base.note = ("rank unknown: no layout can be given" if r.view.leaf_ndim[leaf] < 0
                     else "no rule decided this tensor")
        return base, []
    if d.equation is None:
        if d.kind == "seed":
            base.note = "seeded before propagation"
        elif d.kind == "fallback":
            base.considered = _considered(analysis, leaf, d.order)
            base.note = ("initial letters (guessed): no rule could decide it when nothing "
                         "else was left, so the earliest unknown tensor got them; "
                         + ("the rules considered:" if base.considered else
                            "no call uses or defines it"))
        return base, []
    cs = r.view.sites[d.site]
    ports = site_ports(r, cs)
    reads = equation_reads(d.equation, ports)
    base.op = _op_label(cs.op)
    base.site = names.value_name[cs.value_id]
    base.port = d.equation.target_text
    base.equation = _eq_text(d.equation.text)
    base.position = _pos(d.equation.pos)
    if not reads:
        base.note = ("a weak default that reads no other tensor" if d.kind == "weak" else
                     "reads no other tensor: from the call's attributes or constants")
    return base, reads


def _considered(analysis: Analysis, leaf: int, order: int) -> list[str]:
    """Why no rule decided `leaf` before it got initial letters (at decision `order`):
    per call site where it is a port, each equation defining that port and what it
    lacked."""
    r = analysis.result
    out: list[str] = []
    for cs in r.view.sites:
        ports = site_ports(r, cs)
        roles = [role for role, st in ports.items() if leaf in leaves_of(st)]
        if not roles:
            continue
        where = f"{_op_label(cs.op)} at {analysis.names.value_name[cs.value_id]}"
        if cs.op == "<link>":
            out.append(f"{where}: an identity link; its other side was unknown too")
            continue
        rule = site_rule(r.rules, cs.op)
        if rule is None:
            out.append(f"{where}: the op has no rule")
            continue
        for role in roles:
            eqs = [eq for eq in rule.equations if eq.target[0] == role]
            if not eqs:
                out.append(f"{where}: no equation of its rule defines {role}")
            for eq in eqs:
                later = sorted({port for port, x in equation_reads(eq, ports)
                                if (dx := r.decisions[x]) is None or dx.order > order})
                why = (f"waited for {', '.join(later)} (decided after it)" if later else
                       "gave nothing (no evidence for this tensor)")
                out.append(f"{where}: `{_eq_text(eq.text)}` ({_pos(eq.pos)}) {why}")
    return out


def explain(analysis: Analysis, query: str, max_steps: int = 0, tree: bool = False) -> Explanation:
    """The decisions that gave the tensor `query` its layout, back to a seed or fallback.

    By default the chain follows, at each step, the neighbour whose decision came last
    (the one that let the equation fire); `tree=True` explains every neighbour read.
    `max_steps` (0 = no limit) bounds the number of steps.
    """
    label, leaves = find_tensor(analysis, query)
    r = analysis.result
    steps: list[Step] = []
    step_of: dict[int, int] = {}
    todo: list[int] = list(leaves)
    truncated = False
    pending: list[tuple[Step, list[tuple[str, int]]]] = []
    while todo:
        leaf = todo.pop(0)
        if leaf in step_of:
            continue
        if max_steps and len(steps) >= max_steps:
            truncated = True
            break
        st, reads = _step(analysis, len(steps) + 1, leaf)
        step_of[leaf] = st.index
        steps.append(st)
        pending.append((st, reads))
        if not reads:
            continue
        d = r.decisions[leaf]
        earlier = [x for _, x in reads if (dx := r.decisions[x]) is not None
                   and d is not None and dx.order < d.order]
        if tree:
            todo.extend(x for _, x in reads if x not in step_of)
        elif earlier:
            trigger = max(earlier, key=lambda x: r.decisions[x].order)  # type: ignore[union-attr]
            todo.insert(0, trigger)
    for st, reads in pending:
        st.reads = [Read(port, analysis.names.leaf_name(x), r.layouts[x] or "", step_of.get(x))
                    for port, x in reads]
    conflicts = touching_conflicts(analysis, set(leaves))
    first = leaves[0]
    owner = analysis.view.leaf_value[first]
    if len(leaves) > 1:  # a tuple: all its fields
        tensor, place = analysis.names.value_name[owner], label.rsplit(" (", 1)[-1].rstrip(")")
        layout = r.marker(analysis.view.values[owner].struct)
    else:
        tensor, place, layout = (analysis.names.leaf_name(first), r.leaf_place(first),
                                 r.layouts[first] or "")
    return Explanation(query, tensor, place, layout, steps, conflicts, truncated,
                       analysis.named)


def touching_conflicts(analysis: Analysis, leaves: set[int]) -> list[ConflictInfo]:
    """Conflicts on one of `leaves`, or whose equation read one of them."""
    r = analysis.result
    out: list[ConflictInfo] = []
    for c in r.conflicts:
        hit = c.leaf in leaves
        if not hit and c.site >= 0:
            ports = site_ports(r, r.view.sites[c.site])
            hit = any(x in leaves for _, x in equation_reads(c.equation, ports))
        if hit:
            out.append(conflict_info(analysis, c))
    return out


# --------------------------------------------------------------------------- tensor rows


@dataclass
class TensorRow:
    """One tensor (a leaf of the dependency view) of an annotated module, read back from
    its markers; a tuple field is `<owner name>.<i>`."""

    name: str
    op: str
    shape: str
    layout: str
    function: str
    var: str
    ndim: int = -1
    guessed: bool = False  # the layout is guessed (initial letters, or derived only from them)
    weight: bool = False  # a constant or non-input parameter reaching a conv, matmul or norm

    @property
    def has_layout(self) -> bool:
        """A layout is known: letters, or the empty layout of a scalar."""
        return bool(self.layout) or self.ndim == 0


@dataclass
class TensorTable:
    """The rows `msc-rules annotate` prints: one per tensor-typed leaf of the view, the
    set `coverage` counts."""

    model: str
    entry: str
    rows: list[TensorRow]
    output: str = ""

    @property
    def totals(self) -> dict[str, int]:
        """Headline counts (the same definitions as ModelCoverage.totals)."""
        with_layout = sum(r.has_layout for r in self.rows)
        return {
            "tensors": len(self.rows),
            "with_layout": with_layout,
            "scalars": sum(r.ndim == 0 for r in self.rows),
            "without_layout": len(self.rows) - with_layout,
            "guessed": sum(r.guessed for r in self.rows),
            "weights": sum(r.weight for r in self.rows),
            "guessed_weights": sum(r.guessed and r.weight for r in self.rows),
        }

    @property
    def guessed_by_op(self) -> dict[str, int]:
        """Guessed tensors per op of the row (`const` and `param` for those)."""
        out: dict[str, int] = {}
        for r in self.rows:
            if r.guessed:
                out[r.op] = out.get(r.op, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"kind": "tensors", "model": self.model, "entry": self.entry,
                "output": self.output, "totals": self.totals,
                "guessed_by_op": self.guessed_by_op,
                "tensors": [asdict(r) for r in self.rows]}


def _value_op(v: Any) -> str:
    if v.kind in ("param", "const"):
        return v.kind
    val = v.value
    if isinstance(val, tvm.ir.expr.Call):
        op = val.op
        if isinstance(op, tvm.ir.Op):
            name = str(op.name)
            if name == "relax.call_dps_packed" and val.args and isinstance(
                    val.args[0], tvm.relax.ExternFunc):
                return f"plugin:{val.args[0].global_symbol}"
            return name
        if isinstance(op, tvm.ir.expr.GlobalVar):
            return f"@{op.name_hint}"
        return "call"
    for cls, label in ((tvm.ir.expr.TupleGetItem, "get_item"), (tvm.ir.expr.Tuple, "tuple"),
                       (tvm.ir.expr.GenericConst, "const"), (tvm.ir.expr.Var, "var")):
        if isinstance(val, cls):
            return label
    return type(val).__name__


def _leaf_marker(v: Any, leaf: int) -> str:
    """The layout the markers give one leaf of a value (a field of a flat tuple's marker)."""
    text = span.get_layout(v.value) if v.kind == "binding" and isinstance(
        v.value, tvm.ir.Node) else ""
    text = text or span.get_layout(v.expr)
    if isinstance(v.struct, int):
        return text
    flat = v.struct if isinstance(v.struct, tuple) else ()
    if not text or not all(isinstance(x, int) for x in flat):
        return ""  # nested tuples carry no marker
    parts = text.split(",")
    return parts[flat.index(leaf)] if len(parts) == len(flat) and leaf in flat else ""


def tensor_rows(mod: tvm.IRModule, entry: str = "main", model: str = "",
                guesses: Guesses | None = None) -> TensorTable:
    """One row per tensor-typed leaf of the view (params, constants, binding results,
    tuple fields; aliases are not repeated), read from the span markers.

    `guesses` (from `find_guesses` on the inference that wrote the markers, whose view
    has the same leaves) fills the `guessed` and `weight` columns.
    """
    view = build_view(mod, entry)
    names = Names(view)
    if guesses is not None and len(guesses.guessed) != len(view.leaf_ndim):
        raise ReportError("the guesses were computed on a different module")
    rows: list[TensorRow] = []
    for leaf, owner in enumerate(view.leaf_value):
        v = view.values[owner]
        rows.append(TensorRow(
            names.leaf_name(leaf), _value_op(v), _shape_text(view.leaf_type[leaf]),
            _leaf_marker(v, leaf), v.func, v.name if v.kind != "const" else "",
            int(view.leaf_ndim[leaf]),
            bool(guesses and guesses.guessed[leaf]),
            bool(guesses and leaf in guesses.weights)))
    return TensorTable(model, entry, rows)


# --------------------------------------------------------------------------- renderers


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    body = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in body]
    return "\n".join(lines)


def _md_cell(c: Any) -> str:
    return str(c).replace("|", "\\|").replace("\n", " ") or " "


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _grid(md: bool, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    return _md_table(headers, rows) if md else _table(headers, rows)


def _status_detail(o: OpStatus) -> str:
    if o.status == "ignored":
        return f"{o.where} ignored: {o.reason}"
    if o.status in ("ruled", "plugin", "unregistered"):
        fam = f" family {o.family}" if o.family else ""
        return f"{o.where}{fam}"
    return ""


def _render_library(rep: LibraryCoverage, md: bool) -> str:
    t = rep.totals
    head = "# " if md else ""
    out = [f"{head}Rule coverage of registered relax ops", ""]
    out.append(_grid(md, ["op", "status", "rule / reason", "fwd", "bwd", "tvm layout"], (
        (o.op, o.status, _status_detail(o), o.forward if o.status == "ruled" else "",
         o.backward if o.status == "ruled" else "", "yes" if o.tvm_infer_layout else "no")
        for o in rep.ops)))
    if rep.plugins:
        out += ["", f"{head}call_dps_packed plugins" if md else "call_dps_packed plugins:", ""]
        out.append(_grid(md, ["plugin", "rule", "fwd", "bwd"],
                         ((p.op, p.where, p.forward, p.backward) for p in rep.plugins)))
    if rep.unregistered:
        out += ["", f"rules for ops TVM does not register ({len(rep.unregistered)}): "
                + ", ".join(f"{o.op} ({o.where})" for o in rep.unregistered)]
    out += ["", (f"**{t['ops']} ops: {t['ruled']} ruled, {t['ignored']} ignored, "
                 f"{t['undecided']} undecided; decided {rep.percent:.1f}%**" if md else
                 f"{t['ops']} ops: {t['ruled']} ruled, {t['ignored']} ignored, "
                 f"{t['undecided']} undecided; decided {rep.percent:.1f}%"),
            f"TVM's built-in FRelaxInferLayout covers {t['tvm_infer_layout']} ops; "
            f"the rules cover {t['ruled_without_tvm_infer_layout']} ops it does not."]
    return "\n".join(out)


def _render_model(rep: ModelCoverage, md: bool) -> str:
    t = rep.totals
    head = "# " if md else ""
    sub = "## " if md else ""
    out = [f"{head}Rule coverage of {rep.model or 'the model'} (entry {rep.entry})", ""]
    out.append(_grid(md, ["op", "bindings", "status", "rule / reason", "guessed",
                          "guessed weights"],
                     ((o.op, o.bindings, o.status, o.where, o.guessed or "",
                       o.guessed_weights or "") for o in rep.ops)))
    out.append("")
    if rep.unruled:
        out.append(f"{sub}ops without rules: " + ", ".join(
            f"{op} ({n} binding{'s' if n != 1 else ''})" for op, n in rep.unruled.items()))
    else:
        out.append(f"{sub}ops without rules: none")
    out.append("")
    out.append(f"{sub}tensors without a layout: {len(rep.without_layout)}")
    if rep.without_layout:
        out.append(_grid(md, ["tensor", "place", "why"],
                         ((x.tensor, x.place, x.reason) for x in rep.without_layout)))
    out.append("")
    out.append(f"{sub}weights with guessed layouts: {len(rep.guessed_weights)}"
               + (" (annotate --strict and coverage --fail-under fail on these)"
                  if rep.guessed_weights else ""))
    if rep.guessed_weights:
        out.append(_grid(md, ["weight", "place", "layout", "read by", "why"],
                         ((x.tensor, x.place, x.layout, "; ".join(x.consumers), x.reason)
                          for x in rep.guessed_weights)))
    out.append("")
    out.append(f"{sub}tensors with guessed layouts: {len(rep.guessed)} "
               f"({t['guessed_initial_letters']} initial letters, "
               f"{t['guessed_derived']} derived only from guesses)")
    if rep.guessed:
        out.append(_grid(md, ["tensor", "place", "layout", "why"],
                         ((x.tensor, x.place, x.layout, x.reason) for x in rep.guessed)))
    out.append("")
    out.append(f"{sub}conflicts: {len(rep.conflicts)}")
    if rep.conflicts:
        out.append(_grid(md, ["tensor", "kind", "proposed", "kept", "equation", "at", "message"], (
            (c.tensor, c.kind, c.proposed, c.existing, c.equation, c.position, c.message)
            for c in rep.conflicts)))
    out += ["", (f"{t['bindings']} call bindings, {t['covered_bindings']} with a rule or "
                 f"ignore ({rep.percent:.1f}%); " + _tensor_summary(t)
                 + f", {t['conflicts']} conflicts")]
    return "\n".join(out)


def _render_conflicts(conflicts: list[ConflictInfo], md: bool) -> list[str]:
    bullet = "- " if md else "  "
    out: list[str] = []
    for c in conflicts:
        out.append(f"{bullet}{c.kind} on {c.tensor} ({c.place}): {c.message}")
        out.append(f"{'  ' if md else '    '}proposed '{c.proposed}' by {c.equation} "
                   f"[{c.op} at {c.site}] ({c.position})")
        if c.existing:
            out.append(f"{'  ' if md else '    '}kept '{c.existing}' from {c.existing_by}")
    return out


def _render_explanation(rep: Explanation, md: bool) -> str:
    out = [f"{'# ' if md else ''}tensor {rep.tensor} [{rep.place}]: layout "
           f"{rep.layout or '(none)'}"]
    if not rep.named:
        out.append("(no naming pass available: names are variable names)")
    out.append("")
    for s in rep.steps:
        head = f"#{s.index} {s.tensor} = {s.layout or '(none)'}  [{s.kind}]"
        out.append(f"- **{head}**" if md else head)
        ind = "  - " if md else "   "
        if s.equation:
            out.append(f"{ind}`{s.equation}` at {s.position}" if md else
                       f"{ind}{s.equation}    ({s.position})")
            out.append(f"{ind}site: {s.site} ({s.op})")
        if s.reads:
            out.append(f"{ind}read: " + ", ".join(
                f"{rd.port} = {rd.tensor} '{rd.layout}'"
                + (f" (#{rd.step})" if rd.step is not None else "") for rd in s.reads))
        if s.note:
            out.append(f"{ind}{s.note}")
        sub = "    - " if md else "     "
        out += [f"{sub}{c}" for c in s.considered]
    if rep.truncated:
        out.append("... (more steps: raise --max-steps)")
    out.append("")
    out.append(f"conflicts touching {rep.tensor}: {len(rep.conflicts) or 'none'}")
    out += _render_conflicts(rep.conflicts, md)
    return "\n".join(out)


def _tensor_summary(t: dict[str, int]) -> str:
    """The tensor counts both `annotate` and `coverage` print, in the same words."""
    return (f"{t['tensors']} tensors, {t['with_layout']} with a layout ({t['scalars']} "
            f"scalars), {t['without_layout']} without, {t['guessed']} guessed, "
            f"{t['guessed_weights']} guessed weights")


def _guess_mark(r: TensorRow) -> str:
    return ("weight" if r.weight else "yes") if r.guessed else ""


def _render_tensors(rep: TensorTable, md: bool) -> str:
    rows = ((r.name, r.op, r.shape, r.layout, _guess_mark(r)) for r in rep.rows)
    text = _grid(md, ["name", "op", "shape", "layout", "guessed"], rows)
    out = [text, "", _tensor_summary(rep.totals)]
    by_op = rep.guessed_by_op
    if by_op:
        out.append("guessed by op: " + ", ".join(f"{op} {n}" for op, n in by_op.items()))
    return "\n".join(out)


Report = LibraryCoverage | ModelCoverage | Explanation | TensorTable


def render(rep: Report, fmt: str = "text") -> str:
    """Render a report as `text`, `json` or `markdown` (`table` is an alias of text)."""
    if fmt == "json":
        return json.dumps(rep.to_dict(), indent=2)
    if fmt not in ("text", "table", "markdown"):
        raise ReportError(f"unknown format '{fmt}' (use text, json or markdown)")
    md = fmt == "markdown"
    if isinstance(rep, LibraryCoverage):
        return _render_library(rep, md)
    if isinstance(rep, ModelCoverage):
        return _render_model(rep, md)
    if isinstance(rep, Explanation):
        return _render_explanation(rep, md)
    return _render_tensors(rep, md)


__all__ = [
    "Analysis", "ConflictInfo", "Explanation", "FORMATS", "GuessedWeight", "LibraryCoverage",
    "ModelCoverage", "ModelOp", "Names", "OpStatus", "Read", "ReportError", "Step",
    "TensorIssue", "TensorRow", "TensorTable", "analyze", "explain", "find_tensor",
    "guessed_weights", "library_coverage", "model_coverage", "registered_relax_ops", "render",
    "tensor_rows", "touching_conflicts", "tvm_has_infer_layout",
]

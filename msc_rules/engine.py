"""Layout propagation: seeds, a worklist to a fixpoint, conflicts and provenance.

Order of decisions (documented priority):
1. strong equations, whenever every port they read is known (forward or backward); a
   *late* one (a broadcast's `tie`, CompiledEquation.late) decides an unknown tensor
   only when no other strong equation can, so the tensor's own chain speaks first;
   a strong equation that would name an operand with letters none of its reads holds
   (a reshape met backward that splits an axis anew) waits after those, so the
   operand's producer names it first and two chains do not mint letters apart;
2. when nothing strong can fire, the weak default (`?=`) that can be evaluated now
   and whose target comes earliest in program order (graph inputs first);
3. only when no weak default anywhere can be evaluated, initial letters (A, B, C, ...)
   for the earliest unknown tensor, avoiding the letters of the tensors it meets.
Initial letters are the last resort for the whole graph: a weak default may reach an
unknown tensor through the strong equations of the ops in between (a matmul's `IO`
reaches the weight constant before a permute_dims), so it goes first wherever it is.
After each such step, strong propagation resumes.

Symbolic dims tie letters together: once an axis of symbolic size `n` (or a product
with a symbol, batch*seq) gets a letter, initial, assumed and freshly minted letters on
other axes of size exactly `n` reuse it (when the layout does not already hold it), so
independent inputs that share a batch or sequence symbol share its letter. A decision is
never replaced: a strong result that disagrees with an existing layout, or has the wrong rank, is
recorded as a conflict (both sides, both rules) and dropped. Weak defaults never
override or conflict: they only fill what is still unknown.

Models repeat themselves (every layer of a transformer, every block of a CNN), so the
engine memoises per *site signature*: the rule, the ranks and tuple structure of the
call's ports, the shapes of the ports its equations may read (a number per shape
list: one per distinct shape, see graph.read_shape) and its attributes (by structural
hash). A pure equation's result is memoised by (equation, signature, the layouts it
reads); a whole examination of a site (which equations fire, in which order, with
which results, which wait) is recorded by (signature, pending equations, late_ok, the
layouts of all the site's tensors) and replayed at the next site in the same state,
the decisions still made (and, where they can come out differently, checked) one by
one. Equations that keep run state (see Builtin.stateful) are never memoised,
and an examination that evaluates one is not recorded, unless the state settles
(Builtin.settles: reshape_ids keeps each call's result for the run, so its equations
are memoised once an evaluation is kept, and reshape sites are replayed; signatures
then number shapes per shape list, the identity reshape_ids keys its results by).
Pure attribute seeds are evaluated once per (rule, attributes, ranks of the ports).
The results are identical with the memo off (MEMOISE, MSC_RULES_MEMO=0).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import tvm
import tvm_ffi
from tvm_ffi._ffi_api import StructuralHash as _structural_hash

from . import layout as L
from .dsl.ast import Family
from .dsl.compile import CompiledEquation, compile_equations
from .dsl.functions import ReshapeMemo, remint_apart
from .dsl.parse import parse_text
from .dsl.ruleset import Rule, RuleSet
from .errors import RuleEvaluationError
from .ffi import items
from .graph import NATIVE, DependencyView, Struct, build_view
from .util import paused_gc

MEMOISE = os.environ.get("MSC_RULES_MEMO", "1") != "0"
"""Memoise equation results per call signature (see _Engine._memoised) and share the
attribute values of structurally equal attributes between calls. Identical results
either way; `MSC_RULES_MEMO=0` (read at import) or setting this to False turns both
off, for differential tests and A/B measurements. Read when an engine is made."""


WEAK_PRUNE_AT = 64
"""The weak-default heap is pruned of stale entries in one pass once it holds this many
more than twice what the last prune kept (see _Engine._next_weak); the results are the
same at any value (a test runs the models at 0 and at no pruning)."""


def _identity_rule() -> Rule:
    rf = parse_text("family link(data) {\n out = data\n data = out\n}\n", "<builtin link>")
    fam = rf.items[0]
    assert isinstance(fam, Family)
    eqs, _ = compile_equations(("data",), fam.equations)
    return Rule("<link>", ("data",), tuple(eqs), fam.pos, "link")


_LINK = _identity_rule()
_ABSENT: Any = object()  # a role the call has no argument for, an attribute not read yet
_new_tuple = tuple.__new__
# what an equation may raise on odd input: recorded as a conflict, never raised
_EVAL_ERRORS = (RuleEvaluationError, L.LayoutError, TypeError, ValueError, IndexError)


class Decision(NamedTuple):
    """How one tensor got its layout (made on demand from the engine's Provenance)."""

    layout: str
    kind: str  # "rule" | "weak" | "fallback" | "seed" | "scalar"
    site: int  # index into view.sites, -1 for fallback
    equation: CompiledEquation | None
    order: int  # decision number: earlier decisions have smaller numbers


@dataclass(frozen=True, slots=True)
class Conflict:
    """A strong result that was dropped: it disagreed, had the wrong rank, or failed."""

    leaf: int
    kind: str  # "disagree" | "rank" | "invalid" | "error"
    proposed: str
    existing: Decision | None
    site: int
    equation: CompiledEquation
    message: str


@dataclass(frozen=True, slots=True)
class Provenance:
    """How each leaf got its layout, as the engine records it: no object per decision
    (three list slots and an append), since most runs never ask. `decisions` makes them."""

    kinds: list[str | None]
    sites: list[int]
    equations: list[CompiledEquation | None]
    sequence: list[int]
    """The decided leaves in decision order (a decision's order is its position + 1)."""

    def decisions(self, layouts: list[str | None]) -> list[Decision | None]:
        """Per leaf, its Decision (None for a leaf without one)."""
        order = [0] * len(layouts)
        for i, leaf in enumerate(self.sequence, 1):
            order[leaf] = i
        return [
            None if kind is None
            else _new_tuple(Decision, (layouts[leaf], kind, self.sites[leaf],
                                       self.equations[leaf], order[leaf]))
            for leaf, kind in enumerate(self.kinds)
        ]


@dataclass
class InferenceResult:
    """Layouts for every tensor of the view, with provenance and conflicts."""

    view: DependencyView
    rules: RuleSet
    layouts: list[str | None]
    provenance: Provenance
    conflicts: list[Conflict] = field(default_factory=list)
    unruled: dict[str, int] = field(default_factory=dict)

    @functools.cached_property
    def decisions(self) -> list[Decision | None]:
        """How each leaf got its layout (None for a leaf without one); made on first use."""
        return self.provenance.decisions(self.layouts)

    def struct_layout(self, struct: Struct) -> str | tuple[Any, ...] | None:
        """The layout of a struct: a str, a tuple (tuples), or None."""
        if isinstance(struct, int):
            return self.layouts[struct]
        if isinstance(struct, tuple):
            return tuple(self.struct_layout(s) for s in struct)
        return None

    def marker(self, struct: Struct) -> str:
        """The marker text for a struct: the layout, comma-joined for a flat tuple."""
        return marker_text(self.layouts, struct)

    def layout_of(self, expr: Any) -> str:
        """The marker text for a param, binding var or constant of the view."""
        vid = self.view.value_id(expr)
        return "" if vid is None else self.marker(self.view.values[vid].struct)

    def site_name(self, site: int) -> str:
        """A readable place for a call site: function and binding var."""
        if site < 0:
            return "<fallback>"
        v = self.view.values[self.view.sites.value_id[site]]
        return f"{v.func}:{v.name}"

    def leaf_place(self, leaf: int) -> str:
        """A readable place for a leaf (function:value, with the tuple field path)."""
        v = self.view.values[self.view.leaf_value[leaf]]
        path = _path_to(v.struct, leaf)
        return f"{v.func}:{v.name}" + "".join(f"[{i}]" for i in path)


def marker_text(layouts: list[str | None], struct: Struct) -> str:
    """The marker text for a struct given the layouts of its leaves: the layout,
    comma-joined for a flat tuple ("" unless every leaf has one)."""
    if isinstance(struct, int):
        return layouts[struct] or ""
    if isinstance(struct, tuple) and struct and all(isinstance(s, int) for s in struct):
        got = [layouts[s] for s in struct]  # type: ignore[index]
        return "" if any(g is None for g in got) else ",".join(g or "" for g in got)
    return ""


def _path_to(struct: Struct, leaf: int) -> list[int]:
    if isinstance(struct, tuple):
        for i, s in enumerate(struct):
            sub = _path_to(s, leaf)
            if sub or s == leaf:
                return [i, *sub]
    return []


def _leaves(struct: Struct, out: list[int]) -> list[int]:
    if isinstance(struct, int):
        out.append(struct)
    elif isinstance(struct, tuple):
        for s in struct:
            _leaves(s, out)
    return out


_IntImm = tvm.prim.IntImm
_Array = tvm_ffi.Array
_PLAIN = (bool, int, float, str)
_EXACT = frozenset(_PLAIN)


def _py(v: Any) -> Any:
    """A TVM attribute value as plain Python (ints, strs, lists)."""
    if v is None or type(v) in _EXACT:
        return v
    if isinstance(v, str):
        # an FFI String (a str subclass): as a plain str, layouts read from attributes
        # take the engine's `type(x) is str` fast paths
        return str.__str__(v)
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, _Array):
        return [x if type(x) is int else _py(x) for x in items(v)]
    if isinstance(v, (list, tuple)):
        return [x if type(x) is int else _py(x) for x in v]
    if isinstance(v, _IntImm):
        return int(v.value)
    return str(v)


def _exact(v: Any) -> bool:
    """True when `_py(v)` is read from the value alone: no object printed with str(),
    whose text may hold what structural equality ignores (the names of bound vars)."""
    if v is None or isinstance(v, (_PLAIN, _IntImm)):
        return True
    if isinstance(v, (_Array, list, tuple)):
        return all(type(x) is int or _exact(x) for x in v)
    return False


_TYPE_INDEX: dict[type, int] = {}


def _static_types(view: DependencyView, n: int) -> tuple[list[Any], list[Any]]:
    """Per leaf (of `n`), its shape list and its type number as _Engine._tid makes
    them, for the leaves the native read found a static shape for (their lists are the
    ones read_shape returns: the numbers come out the same); _ABSENT for the others."""
    ids, table = view._static_ids, view._static_table
    m = min(len(ids), n)
    if not m or not table:
        return [_ABSENT] * n, [_ABSENT] * n
    rest = [_ABSENT] * (n - m)
    # (a static shape's rank is its length: the number is one per table entry, and a
    # static id of -1 picks the last entry, _ABSENT; a rank past 62: see _tid)
    tids = [id(dims) * 64 + len(dims) + 1 if len(dims) < 63 else _ABSENT for dims in table]
    tids.append(_ABSENT)
    sids = ids[:m] if m < len(ids) else ids
    return (list(map([*table, _ABSENT].__getitem__, sids)) + rest,
            list(map(tids.__getitem__, sids)) + rest)


def _type_index(cls: type) -> int:
    """The FFI type index of an attributes class (the native read keys them by it)."""
    got = _TYPE_INDEX.get(cls)
    if got is None:
        got = _TYPE_INDEX[cls] = int(cls.__tvm_ffi_type_info__.type_index)  # type: ignore[attr-defined]
    return got


class _Failure(NamedTuple):
    """A memoised evaluation that raised (replayed as the same "error" conflict)."""

    err: Exception


class _Settled(NamedTuple):
    """A memoised result of an equation that settles (CompiledEquation.settled), with
    the calls of reshape_ids its evaluation counted (a hit counts them again: within one
    evaluation the engine tells by the count whether a reshape ran, see _mints_new)."""

    value: Any
    calls: int


_GIVE, _WEAK, _FAIL, _LATE, _BACK, _FIRST = range(6)
_Event = tuple[int, int, Any, Any, Any, int]
"""One effect of an examination (see _Engine._replay): the position in the pending
equations, the kind (a result given to its target, a weak default queued, a failed
evaluation, a wait for the late or the waiting minting equations, a first decision),
the equation (its number; a _FIRST: the equation), the result (or the exception), the
target's layouts after a result (a _FIRST: the target role), the kept equations so far.
A _FIRST decides the target (a tensor) with a result that names nothing anew (an
equation that mints nothing, or a result of letters it read), so it comes out the same
at every replay; re-derivations of a decided layout are not recorded."""
_SIMPLE = frozenset((_FIRST, _WEAK, _LATE))
_Transcript = tuple[tuple[_Event, ...], tuple[int, ...],
                    tuple[tuple[int, Any, Any, Any], ...] | None]
"""A recorded examination: its effects, the pending equations it left and, when its
effects are all first decisions, weak defaults queued and waits for late equations
(none can come out differently), those as (kind, target role, layout, equation) or
(kind, _Step, equation number, None)."""
_UNRECORDED: Any = object()  # an examination that evaluated a stateful equation


class _Site:
    """A call site as the engine runs it (made in _Engine._make_sites)."""

    __slots__ = ("akey", "attrs", "call_attrs", "index", "leaves", "pending", "plan", "ports",
                 "sig", "values")
    index: int
    plan: _RulePlan
    values: tuple[Struct, ...]
    """Its ports' structs in the order of its rule's roles, `out` last (a call lacking
    roles: the last ones are missing; see _RulePlan.slot)."""
    ports: dict[str, Struct] | None
    """Its ports by role, made from `values` when first needed (see _ports): most
    sites replay recorded examinations, which read `values` by position."""
    # equations not fired yet; replaced (never changed in place), so sites of one rule
    # can start out sharing one tuple
    pending: tuple[int, ...] | list[int]
    attrs: dict[str, Any] | None
    call_attrs: Any
    akey: Any  # see _Engine._attrs_key
    sig: int | None  # see _Engine._signature
    leaves: tuple[int, ...]  # its ports' leaves (set with sig)

    @property
    def rule(self) -> Rule:
        """The site's rule."""
        rule = self.plan.rule()
        assert rule is not None  # (the engine's rule set holds it)
        return rule

    def at(self, role: str) -> Struct:
        """The port of `role` (None when the call lacks it), read from `values`."""
        values = self.values
        j = self.plan.slot.get(role, len(values))
        return values[j] if j < len(values) - 1 else None


def _ports(site: _Site) -> dict[str, Struct]:
    """A site's ports by role (made on first use: see _Site.ports)."""
    ports = site.ports
    if ports is None:
        values = site.values
        # (no __getattr__ on _Site for this: a class with one loses the interpreter's
        # fast slot reads on every attribute)
        ports = site.ports = dict(zip(site.plan.roles, values[:-1]))
        ports["out"] = values[-1]
    return ports


_Step = tuple[CompiledEquation, tuple[str, ...], tuple[tuple[str, int], ...], tuple[str, ...],
              str, int | None, bool, tuple[str, int | None] | None, bool, bool,
              tuple[str, ...] | None]
"""An equation as _examine reads it: the equation, its strict reads of whole ports and of
tuple fields, the partial reads that make it ready (those of a purely partial reader),
target role and field, weak, the port it copies, whether it mints letters, late, and
the ports whose layouts key its memoised result (None: not memoised)."""


def _memo_roles(eq: CompiledEquation) -> tuple[str, ...] | None:
    """The ports whose layouts key a memoised result of `eq` (with the site's
    signature); None when `eq` is not memoised: it keeps run state that does not
    settle (CompiledEquation.settled), it copies a port (a read costs less than a key),
    or it reads no port."""
    inputs = eq.inputs if eq.inputs is not None else eq.settled
    if inputs is None or eq.copy_of is not None or not (inputs.layouts or inputs.types):
        return None  # (an attribute seed: evaluated once per site, its key costs as much)
    return inputs.layouts


_RANKED, _TYPED, _MIXED = range(3)
_plan_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class _RulePlan:
    """What the engine needs of a rule before it runs: which equations are attribute
    seeds (they read no port), which are not, and each equation as _examine reads it."""

    seeds: tuple[int, ...]
    rest: tuple[int, ...]
    steps: tuple[_Step, ...]
    types: tuple[str, ...]
    """The ports whose types the memoised equations read (in a site's signature)."""
    attrs: bool
    """Whether a memoised equation reads attributes (they are in a site's signature)."""
    transcribe: bool
    """Whether examinations of its sites are worth recording (see _Engine._replay): it
    has a memoised equation that reads a port, or one that copies a port (a first
    decision replays for less than a scan); else every examination evaluates a
    stateful equation."""
    typing: int
    """_TYPED when `types` holds every port, _RANKED when none, else _MIXED: what a
    site's signature holds of each port, in the common case (see _Engine._signature)."""
    number: int
    """A number of its own (negative: a signature's key tells the common case)."""
    pure_seeds: bool
    """Whether its attribute seeds are pure and read neither layouts nor shapes (their
    results are a function of the attributes and the ports' ranks: see _Engine._seed)."""
    rule: weakref.ref[Rule]
    """Its rule (a weak reference: plans are kept per rule while it lives, see _plan_of)."""
    roles: tuple[str, ...]
    slot: dict[str, int]
    """Per role, its position in a site's values (`out`: -1); a role at or past the
    last position is one the call lacks."""

    @staticmethod
    def of(rule: Rule) -> _RulePlan:
        """The plan of `rule`."""
        eqs = rule.equations
        seeds = tuple(k for k, eq in enumerate(eqs)
                      if not (eq.weak or eq.strict_reads or eq.partial_reads))
        steps = tuple(
            (eq,
             tuple(r for r, i in eq.strict_reads if i is None),
             tuple((r, i) for r, i in eq.strict_reads if i is not None),
             eq.partial_reads if not eq.strict_reads else (),
             *eq.target, eq.weak, eq.copy_of, eq.mints, eq.late, _memo_roles(eq))
            for eq in eqs)
        memoised = [eq.inputs or eq.settled for eq in eqs if _memo_roles(eq) is not None]
        types = tuple(sorted({r for i in memoised if i is not None for r in i.types}))
        typing = (_RANKED if not types else _TYPED if set(types) >= {*rule.roles, "out"}
                  else _MIXED)
        return _RulePlan(seeds, tuple(k for k in range(len(eqs)) if k not in seeds), steps,
                         types, any(i is not None and i.attrs for i in memoised),
                         any(i is not None and i.layouts for i in memoised)
                         or any(eq.copy_of is not None for eq in eqs), typing,
                         -next(_plan_numbers),
                         all(eqs[k].inputs is not None and _memo_roles(eqs[k]) is None
                             for k in seeds),
                         weakref.ref(rule), rule.roles,
                         {**{r: j for j, r in enumerate(rule.roles)}, "out": -1})


_PLANS: dict[int, _RulePlan] = {}  # by id(rule), while the rule lives


def _plan_of(rule: Rule) -> _RulePlan:
    """The plan of `rule`, made once per rule (not per engine: a BERT's twenty rules
    cost as much to plan as its examinations)."""
    got = _PLANS.get(id(rule))
    if got is None:
        got = _PLANS[id(rule)] = _RulePlan.of(rule)
        weakref.finalize(rule, _PLANS.pop, id(rule), None)  # (its id may be reused)
    return got


class _Engine:
    # slots: past 30 attributes an instance dict stops sharing keys and every
    # attribute read of the hot loop gets slower
    __slots__ = (
        "_akeys", "_attr_values", "_impure", "_pendings", "_results", "_rules_by_op",
        "_shape_of", "_shapes", "_sigs", "_state", "_state_reads", "_sym_axes",
        "_sym_by_shape", "_tids", "_transcripts", "_unshared", "_valid", "_weak_kept",
        "_woke_at", "decided_by", "equations", "guessed", "kinds", "late", "late_back",
        "late_ok", "late_queued", "layouts", "leaf_more", "leaf_site1", "leaf_site2",
        "letter_sym", "memo", "ports", "queue", "queued", "raw_conflicts", "rules",
        "seeded", "sequence", "site", "sites", "sym_letter", "track_symbols", "unruled",
        "view", "weak",
    )

    def __init__(self, view: DependencyView, rules: RuleSet) -> None:
        self.view = view
        self.rules = rules
        n = len(view.leaf_ndim)
        self.layouts: list[str | None] = [None] * n
        # provenance, see Provenance: no object per decision
        self.kinds: list[str | None] = [None] * n
        self.decided_by: list[int] = [-1] * n
        self.equations: list[CompiledEquation | None] = [None] * n
        self.sequence: list[int] = []
        # conflicts as recorded: Conflict's fields, with the number of decisions made
        # so far in place of the existing Decision (made at the end, see infer_view)
        self.raw_conflicts: list[tuple[int, str, str, int, int, CompiledEquation, str]] = []
        self.unruled: dict[str, int] = {}
        # the sites where a leaf is a port, in order: the first two in columns (a
        # chain's tensor has its producer and one consumer: no list per leaf), the
        # rest by leaf; -1 for none
        self.leaf_site1: list[int] = []
        self.leaf_site2: list[int] = []
        self.leaf_more: dict[int, list[int]] = {}
        self.sites: list[_Site | None] = []
        self.queue: deque[int] = deque()
        self.queued: list[bool] = []
        # sites with a late equation ready (CompiledEquation.late), examined with
        # `late_ok` once the queue is empty
        self.late: deque[int] = deque()
        # sites whose minting equation for an operand waits (CompiledEquation.mints):
        # after the late ones that name an output, a tensor's producer goes first
        self.late_back: deque[int] = deque()
        self._woke_at = 0
        # per site: queued in late or late_back (a bytearray, not a set of indices: a
        # set's table outgrows the cache on a large module)
        self.late_queued = bytearray()
        self.late_ok = False
        self.weak: list[tuple[int, int, int]] = []
        self._weak_kept = 0  # entries the last prune of `weak` kept (see _next_weak)
        self.site: _Site | None = None  # the site being evaluated (Env protocol)
        self.ports: dict[str, Struct] = {}  # its ports (what the Env methods read)
        self._state: dict[str, Any] = {}
        self._valid: dict[str, bool] = {}  # is_layout, memoised: layouts repeat a lot
        self._rules_by_op: dict[str, Rule] = {}
        self._shape_of = view.read_shape  # cached here, in _shapes
        # the shapes and type numbers (see _tid) of the leaves a native read found static,
        # in bulk; the others read when first asked for
        self._shapes, self._tids = _static_types(view, n)
        self.seeded: list[tuple[_Site, tuple[int, ...]]] = []  # sites with attribute seeds
        self.memo = ReshapeMemo()
        self._state["reshape_memo"] = self.memo
        self.guessed: set[str] = set()  # letters initial letters gave so far
        self._state["guessed"] = self.guessed  # (reshape_ids mints apart from them)
        self.sym_letter: dict[L.Dim, str] = {}
        self.letter_sym: dict[str, L.Dim] = {}
        # memoised equation results by (equation, site signature, layouts read): see
        # _memoised; None when MEMOISE is off
        self._results: dict[tuple[Any, ...], Any] | None = {} if MEMOISE else None
        # recorded examinations by (site signature, pending equations, late_ok, the
        # site's layouts): see _replay; None when MEMOISE is off
        self._transcripts: dict[tuple[Any, ...], Any] | None = {} if MEMOISE else None
        # pending-equation tuples, one object per content (keyed by id in _transcripts)
        self._pendings: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._sigs: dict[tuple[Any, ...], int] = {}  # signature -> its number
        self._attr_values: dict[Any, dict[str, Any]] = {}  # attrs key -> values read
        self._akeys: dict[int, tuple[int, int]] = {}  # by hash, see _shared_key
        self._unshared: set[int] = set()  # attrs type indices printed with str(): see attr
        self._impure = 0  # evaluations that read run state or unshared attributes
        self._state_reads = 0  # reads of run state (see _settle)
        self._sym_axes: list[list[tuple[int, L.Dim]] | None] = [None] * n  # per leaf
        self._sym_by_shape: dict[int, list[tuple[int, L.Dim]]] = {}  # by id(shape list)
        self.track_symbols = any(
            isinstance(d, str)
            # (params are all among the others: no Value made per call binding)
            for v in map(view.values.__getitem__, view.others)
            if v.kind == "param"
            for leaf in _leaves(v.struct, [])
            for d in (view.shape(leaf) or ())
        )
        self._make_sites()

    # ---- setup
    def _make_sites(self) -> None:
        site1 = [-1] * len(self.layouts)
        site2 = list(site1)
        more = self.leaf_more
        lookup = self._rule_for
        table = self.view.sites
        # every site starts queued (an unruled one stays marked queued: see run)
        # (made at full length: appends would grow it by reallocs that copy it over)
        sites = self.sites = [None] * len(table.op)
        seeded = self.seeded
        self.queued = [True] * len(table.op)
        self.late_queued = bytearray(len(table.op))
        # per op with a cached rule: the rule, its plan and roles, the count of roles
        by_op: dict[str, tuple[Rule, _RulePlan, tuple[str, ...], int]] = {}
        raw_args, outs, raw_attrs = table._args, table.out, table._attrs
        flat, at = table._flat, table._at
        new_site = _Site.__new__
        for i, op in enumerate(table.op):
            got = by_op.get(op)
            if got is None:
                rule = lookup(op)
                if rule is None:
                    continue
                plan = _plan_of(rule)
                roles = rule.roles
                nroles = len(roles)
                if rule is self._rules_by_op.get(op):  # cached: the same for every call
                    by_op[op] = (rule, plan, roles, nroles)
            else:
                rule, plan, roles, nroles = got
            args: list[Struct] = raw_args[i]
            out = outs[i]
            if args is NATIVE:  # a native read's: in the flat array (see SiteTable)
                k = at[2 * i]
                n = flat[k]
                # (the common arities spelled out, reading the array in place)
                if nroles == 1 and n:
                    x = flat[k + 1]
                    values: tuple[Struct, ...] = (x if x >= 0 else None, out)
                elif nroles == 2 and n >= 2:
                    x, y = flat[k + 1], flat[k + 2]
                    values = (x if x >= 0 else None, y if y >= 0 else None, out)
                else:
                    values = (*[x if x >= 0 else None
                                for x in flat[k + 1:k + 1 + min(n, nroles)]], out)
            elif nroles == 1 and args:
                values = (args[0], out)
            elif nroles == 2 and len(args) >= 2:
                values = (args[0], args[1], out)
            else:
                values = (*args[:nroles], out)
            # (the attributes as the table holds them: fetched when read, see _call_attrs)
            # (no __init__: calling a class with one costs a frame from C per site)
            site = new_site(_Site)
            site.index = i
            site.plan = plan
            site.values = values
            site.ports = None
            site.pending = plan.rest
            site.attrs = None
            site.call_attrs = raw_attrs[i]
            site.akey = _ABSENT
            site.sig = None
            site.leaves = ()
            if plan.seeds:
                seeded.append((site, plan.seeds))
            sites[i] = site
            for st in values:
                # a port of one leaf spelled out: a loop over (st,) costs 3% of infer
                if type(st) is int:
                    if site1[st] < 0:
                        site1[st] = i
                    elif site2[st] < 0:
                        site2[st] = i
                    else:
                        more.setdefault(st, []).append(i)
                elif st is not None:
                    for leaf in _leaves(st, []):
                        if site1[leaf] < 0:
                            site1[leaf] = i
                        elif site2[leaf] < 0:
                            site2[leaf] = i
                        else:
                            more.setdefault(leaf, []).append(i)
        # every site, in order (the run loop skips the unruled ones: `sites[i]` is None)
        self.queue.extend(range(len(sites)))
        self.leaf_site1, self.leaf_site2 = site1, site2

    def _rule_for(self, op: str) -> Rule | None:
        rule = self._rules_by_op.get(op)
        if rule is not None:
            return rule
        rule = self._find_rule(op)
        if rule is not None and not op.startswith("plugin:"):
            self._rules_by_op[op] = rule
        return rule

    def _find_rule(self, op: str) -> Rule | None:
        if op == "<link>":
            return _LINK
        if op.startswith("plugin:"):
            rule = self.rules.plugin(op[len("plugin:") :])
        elif op:
            rule = self.rules.lookup(op)
        else:
            rule = None
        if rule is None:
            key = op or "<opaque call>"
            if not op or not self.rules.ignored(op):
                self.unruled[key] = self.unruled.get(key, 0) + 1
        return rule

    # ---- Env protocol (what compiled equations read)
    def layout(self, role: str) -> Any:
        st = self.ports.get(role)
        return self.layouts[st] if type(st) is int else self._value(st)

    def _value(self, st: Struct) -> Any:
        if isinstance(st, int):
            return self.layouts[st]
        if isinstance(st, tuple):
            return tuple(self._value(s) for s in st)
        return None

    def field(self, role: str, index: int) -> Any:
        st = self.ports.get(role)
        if isinstance(st, tuple) and index < len(st):
            return self._value(st[index])
        return None

    def ndim(self, role: str) -> int:
        st = self.ports.get(role)
        return self.view.leaf_ndim[st] if isinstance(st, int) else -1

    def shape(self, role: str) -> list[L.Dim] | None:
        st = self.ports.get(role)
        if type(st) is not int:
            return None
        got = self._shapes[st]  # _leaf_shape inline: this runs ~2 times per binding
        if got is _ABSENT:
            got = self._shapes[st] = self._shape_of(st)
        return got

    def field_shape(self, role: str, index: int) -> list[L.Dim] | None:
        """The shape of field `index` of a tuple port (None when unknown)."""
        st = self.ports.get(role)
        leaf = st[index] if isinstance(st, tuple) and index < len(st) else None
        return self._leaf_shape(leaf) if isinstance(leaf, int) else None

    def _leaf_shape(self, leaf: int) -> list[L.Dim] | None:
        got = self._shapes[leaf]  # read ~3 times per leaf: a list beats the view's dict
        if got is _ABSENT:
            got = self._shapes[leaf] = self._shape_of(leaf)
        return got

    def nfields(self, role: str) -> int:
        st = self.ports.get(role)
        return len(st) if isinstance(st, tuple) else 0

    def attr(self, name: str) -> Any:
        site = self.site
        assert site is not None
        attrs = site.attrs
        if attrs is None:
            # structurally equal attributes share the values read (memo on)
            attrs = site.attrs = (
                {} if self._results is None
                else self._attr_values.setdefault(self._attrs_key(site), {}))
        got = attrs.get(name, _ABSENT)
        if got is _ABSENT:
            call_attrs = self._call_attrs(site)
            if call_attrs is None:
                got = attrs[name] = None
                return got
            raw = getattr(call_attrs, name, None)
            got = _py(raw)
            if self._results is not None and type(site.akey) is tuple and not _exact(raw):
                self._unshare(site)
                attrs = site.attrs
                assert attrs is not None
            attrs[name] = got
        return got

    def _attrs_key(self, site: _Site) -> Any:
        """The key of a site's attributes in its signature: None (no attributes), their
        (type index, structural hash) (equal for structurally equal attributes), or a
        key of the site's own."""
        akey = site.akey
        if akey is _ABSENT:
            ca = site.call_attrs
            if ca is NATIVE:  # (the native read hashed them: no fetch)
                akey = self.view.sites.native_attrs_key(site.index)
                if akey is not None:
                    akey = self._shared_key(akey)
                if akey is None or akey[0] in self._unshared:
                    akey = site.index
            elif ca is None:
                akey = None
            else:
                tindex = _type_index(type(ca))
                if tindex in self._unshared:
                    akey = site.index
                else:
                    try:
                        akey = self._shared_key((tindex, _structural_hash(ca, False, False)))
                    except Exception:  # attributes that do not hash: the site's own key
                        akey = site.index
            site.akey = akey
        return akey

    def _shared_key(self, key: tuple[int, int]) -> tuple[int, int]:
        """The attributes key (type index, hash), one object per distinct key (sites
        keep theirs: one tuple per site would be ~100 B each)."""
        got = self._akeys.setdefault(key[1], key)
        return got if got[0] == key[0] else key  # (two types, one hash: its own)

    def _call_attrs(self, site: _Site) -> Any:
        """A site's call attributes (None for none), fetched on first use (the view's
        SiteTable holds those of a native read as a node number)."""
        ca = site.call_attrs
        if ca is NATIVE:
            ca = site.call_attrs = self.view.sites.attrs_of(site.index)
        return ca

    def _unshare(self, site: _Site) -> None:
        """A value of this site's attributes was printed with str() (see _exact): two
        structurally equal attributes may print differently, so attributes of this
        type stop sharing, and every result memoised so far is forgotten (some may
        have keyed this type's attributes by their hash)."""
        tindex = _type_index(type(site.call_attrs))
        self._unshared.add(tindex)
        site.akey = site.index
        site.attrs = dict(site.attrs or {})
        self._impure += 1  # the evaluation under way is not memoised
        assert self._results is not None and self._transcripts is not None
        self._results.clear()
        self._transcripts.clear()
        for other in self.sites:
            if other is not None:
                other.sig = None
                if type(other.akey) is tuple and other.akey[0] == tindex:
                    other.akey = other.index
                    other.attrs = dict(other.attrs) if other.attrs is not None else None

    def run_state(self, key: str, factory: Callable[[], Any]) -> Any:
        """Per-run state a builtin keeps between calls (e.g. reshape's split memory)."""
        self._impure += 1  # a result that depends on it is not memoised
        self._state_reads += 1  # (unless it settles: see _settle)
        got = self._state.get(key)
        if got is None:
            got = self._state[key] = factory()
        return got

    # ---- readiness
    def _known(self, st: Struct) -> bool:
        if isinstance(st, int):
            return self.layouts[st] is not None or self.view.leaf_ndim[st] < 0
        if isinstance(st, tuple):
            return all(self._known(s) for s in st)
        return True

    def _any_known(self, st: Struct) -> bool:
        if isinstance(st, int):
            return self.layouts[st] is not None
        if isinstance(st, tuple):
            return any(self._any_known(s) for s in st)
        return False

    def _port(self, site: _Site, role: str, idx: int | None) -> Struct:
        st = _ports(site).get(role)
        if idx is None:
            return st
        if isinstance(st, tuple) and idx < len(st):
            return st[idx]
        return None

    # ---- decisions
    def _symbol_axes(self, leaf: int) -> list[tuple[int, L.Dim]]:
        got = self._sym_axes[leaf]
        if got is None:
            dims = self._leaf_shape(leaf)
            # per shape list: they are shared per distinct shape (see read_shape), and
            # each is kept alive in _shapes
            got = self._sym_by_shape.get(id(dims))
            if got is None:
                # a symbol, or a product with one (batch*seq flattened for a linear layer)
                got = self._sym_by_shape[id(dims)] = [
                    (i, d) for i, d in enumerate(dims or ())
                    if isinstance(d, str) or (isinstance(d, tuple)
                                              and any(isinstance(f, str) for f in d))]
            self._sym_axes[leaf] = got
        return got

    def _symbolize(self, leaf: int, value: str, inherited: set[str]) -> str:
        """Fix minted letters: a symbolic axis takes its symbol's letter where free, and
        a minted letter that another symbol owns is replaced by an unowned one."""
        at = dict(self._symbol_axes(leaf))
        owner = self.letter_sym
        chars = list(value)
        for i, c in enumerate(chars):
            if c in inherited:
                continue
            want = self.sym_letter.get(at[i]) if i in at else None
            if want and c != want and want not in chars:
                chars[i] = want
            elif c in owner and owner[c] != at.get(i):
                chars[i] = next(x for x in L.initial(26) if x not in chars and x not in owner)
        return "".join(chars)

    def _initial(self, leaf: int) -> str:
        """Initial letters A, B, C, ... for a leaf, reusing the letters of its symbols
        and leaving letters that other symbols own to them."""
        ndim = self.view.leaf_ndim[leaf]
        letters: list[str | None] = [None] * ndim
        if self.track_symbols:
            for i, sym in self._symbol_axes(leaf):
                letter = self.sym_letter.get(sym)
                if letter and letter not in letters:
                    letters[i] = letter
        # letters of the tensors it meets are theirs (a table guessed after its indices
        # must not name its axes with the indices' letters), and so are the letters of
        # earlier guesses: two guesses are chosen apart and claim no shared axis
        need = letters.count(None)
        owned = self.letter_sym.keys()
        met = self._met_letters(leaf) | owned
        for avoid in (met | self.guessed, met, owned):
            free = [c for c in L.initial(26) if c not in letters and c not in avoid]
            if len(free) >= need:  # else fewer letters are left than axes: relax
                break
        pool = iter(free)
        chosen = "".join(x if x is not None else next(pool) for x in letters)
        self.guessed.update(chosen)
        return chosen

    def _met_letters(self, leaf: int) -> set[str]:
        """The letters of the known tensors at the call sites where `leaf` is a port."""
        met: set[str] = set()
        layouts = self.layouts
        for si in self._sites_at(leaf):
            site = self.sites[si]
            if site is None:
                continue
            for st in site.values:
                for x in ([st] if type(st) is int else _leaves(st, [])):
                    lay = layouts[x]
                    if lay:
                        met.update(lay)
        return met

    def _sites_at(self, leaf: int) -> list[int]:
        """The sites where `leaf` is a port, in order."""
        got = [s for s in (self.leaf_site1[leaf], self.leaf_site2[leaf]) if s >= 0]
        return got + self.leaf_more.get(leaf, [])

    def _decide(
        self, leaf: int, value: str, kind: str, site: int, eq: CompiledEquation | None
    ) -> None:
        if self.track_symbols:
            axes = self._sym_axes[leaf]
            sym_letter = self.sym_letter
            for i, sym in axes if axes is not None else self._symbol_axes(leaf):
                if (
                    sym not in sym_letter
                    and i < len(value)
                    and value[i] not in self.letter_sym
                ):
                    self.sym_letter[sym] = value[i]
                    if type(sym) is str:  # a product reuses its letter, owns none
                        self.letter_sym[value[i]] = sym
        self.layouts[leaf] = value
        self.kinds[leaf] = kind
        self.decided_by[leaf] = site
        self.equations[leaf] = eq
        self.sequence.append(leaf)
        # (the sites of _sites_at, read in place)
        s = self.leaf_site1[leaf]
        if s >= 0:
            queued = self.queued
            if not queued[s]:
                queued[s] = True
                self.queue.append(s)
            s = self.leaf_site2[leaf]
            if s >= 0:
                if not queued[s]:
                    queued[s] = True
                    self.queue.append(s)
                more = self.leaf_more.get(leaf)
                if more is not None:
                    for s in more:
                        if not queued[s]:
                            queued[s] = True
                            self.queue.append(s)

    def _apply(self, st: Struct, value: Any, site: _Site, eq: CompiledEquation, weak: bool) -> None:
        if type(st) is int and type(value) is str:
            # the common case: an equation re-derives a layout already decided
            old = self.layouts[st]
            if old is not None and (
                weak or (old == value and not (eq.mints and self.track_symbols))
            ):
                return
        if value is None or st is None:
            return
        if isinstance(st, tuple):
            if isinstance(value, tuple) and len(value) == len(st):
                for s, v in zip(st, value):
                    self._apply(s, v, site, eq, weak)
            elif not weak:
                leaves = _leaves(st, [])
                self._conflict(
                    leaves[0] if leaves else -1,
                    "invalid",
                    str(value),
                    site,
                    eq,
                    f"expected a tuple of {len(st)} layouts, got {value!r}",
                )
            return
        ndim = self.view.leaf_ndim[st]
        if ndim < 0:
            return  # rank unknown: no layout can be checked, so none is given
        valid = self._valid.get(value) if isinstance(value, str) else False
        if valid is None:
            valid = self._valid[value] = L.is_layout(value)
        if not valid:
            if not weak:
                self._conflict(st, "invalid", str(value), site, eq, f"{value!r} is not a layout")
            return
        if eq.mints and len(value) == ndim and (self.track_symbols or self.guessed):
            inherited = self._inherited(site, eq)
        else:
            inherited = None
        # (letters all read, none minted: nothing to symbolize or mint apart)
        if inherited is not None and not inherited.issuperset(value):
            if self.track_symbols:
                value = self._symbolize(st, value, inherited)
            if self.guessed:
                value = self._apart(value, inherited)
        if len(value) != ndim:
            if not weak:
                self._conflict(
                    st,
                    "rank",
                    value,
                    site,
                    eq,
                    f"layout '{value}' has {len(value)} letters for a rank-{ndim} tensor",
                )
            return
        old = self.layouts[st]
        if old is None:
            self._decide(st, value, "weak" if weak else "rule", site.index, eq)
        elif old != value and not weak and not self._compatible(st, old, value, site, eq):
            self._conflict(
                st, "disagree", value, site, eq, f"'{value}' disagrees with '{old}' decided earlier"
            )

    def _compatible(
        self, leaf: int, old: str, value: str, site: _Site, eq: CompiledEquation
    ) -> bool:
        """True when `value` differs from `old` only where no identity is claimed: in
        letters the equation minted, or on size-1 axes (which have no extent to name)."""
        dims = self._leaf_shape(leaf)
        inherited = self._inherited(site, eq) if eq.mints else None
        for i, (o, v) in enumerate(zip(old, value)):
            if o == v or (dims is not None and i < len(dims) and dims[i] == 1):
                continue
            if inherited is not None and v not in inherited:
                continue
            return False
        return True

    def _apart(self, value: str, inherited: set[str]) -> str:
        """Re-mint the letters an equation minted that an earlier guess gave (initial
        letters): both were chosen apart and claim no shared axis. Letters it read, and
        those a reshape of this run merged into them or split from them (what a reshape
        gives back), stay."""
        memo = self.memo
        keep = set(memo.related("".join(sorted(inherited)))) if memo.parts else inherited
        avoid = keep | self.letter_sym.keys()
        chars = list(value)
        remint_apart(chars, [i for i, c in enumerate(chars) if c not in avoid], self.guessed,
                     avoid)
        return "".join(chars)

    def _mints_new(self, site: _Site, eq: CompiledEquation, value: str, calls: int,
                   minted: int) -> bool:
        """True when an evaluation named axes anew: `value` holds a letter that none of
        the layouts the equation read holds and (for a reshape, whose memory counts its
        calls and mints: `calls`, `minted` before the evaluation) that no earlier
        reshape's split or merge gives back."""
        memo = self.memo
        if memo.calls != calls:
            return memo.minted != minted
        inherited = self._inherited(site, eq)
        return any(c not in inherited for c in value)

    def _inherited(self, site: _Site, eq: CompiledEquation) -> set[str]:
        """The letters of the layouts an equation read (the ones it did not mint)."""
        inherited: set[str] = set()
        layouts = self.layouts
        values, slot = site.values, site.plan.slot
        last = len(values) - 1
        for role, idx in eq.read_ports:
            if idx is None:  # (site.at inline)
                j = slot.get(role, last)
                st = values[j] if j < last else None
            else:
                st = self._port(site, role, idx)
            if type(st) is int:
                inherited.update(layouts[st] or "")
            else:
                for leaf in _leaves(st, []):
                    inherited.update(layouts[leaf] or "")
        return inherited

    def _conflict(
        self, leaf: int, kind: str, proposed: str, site: _Site, eq: CompiledEquation, message: str
    ) -> None:
        self.raw_conflicts.append(
            (leaf, kind, proposed, len(self.sequence), site.index, eq, message))

    def _evaluate(self, site: _Site, eq: CompiledEquation, roles: tuple[str, ...] | None) -> Any:
        """`eq`'s result at `site` (None when it raised: recorded as a conflict); `roles`:
        its _memo_roles (a _Step holds them)."""
        if roles is not None and self._results is not None:
            got = self._memoised(site, eq, roles)
            if type(got) is _Failure:
                self._failed(site, eq, got.err)
                return None
            return got
        self.site = site  # the Env methods read this site's ports (left set: cheaper)
        ports = site.ports
        self.ports = ports if ports is not None else _ports(site)
        try:
            return eq.fn(self)
        except _EVAL_ERRORS as err:
            self._failed(site, eq, err)
            return None

    def _memoised(self, site: _Site, eq: CompiledEquation, roles: tuple[str, ...]) -> Any:
        """`eq`'s result at `site` (a _Failure when it raised), from the memo when a site
        of the same signature (see _signature) has evaluated `eq` on the same layouts
        of `roles` (the ports it reads): a pure equation's result is a function of
        those alone."""
        results = self._results
        assert results is not None
        sig = site.sig
        if sig is None:
            sig = self._signature(site)
        ports, layouts = site.ports, self.layouts
        if ports is None:
            ports = _ports(site)
        if len(roles) == 1:
            st = ports.get(roles[0])
            key: tuple[Any, ...] = (
                id(eq), sig, layouts[st] if type(st) is int else self._value(st))
        else:
            key = (id(eq), sig, *[layouts[st] if type(st) is int else self._value(st)
                              for st in map(ports.get, roles)])
        got = results.get(key, _ABSENT)
        if got is _ABSENT:
            impure = self._impure
            self.site = site
            self.ports = ports
            if eq.settled is not None:
                return self._settle(eq, key)
            try:
                got = eq.fn(self)
            except _EVAL_ERRORS as err:
                got = _Failure(err)
            if self._impure == impure:
                results[key] = got
        elif type(got) is _Settled:
            self.memo.calls += got.calls
            return got.value
        return got

    def _settle(self, eq: CompiledEquation, key: tuple[Any, ...]) -> Any:
        """Evaluate an equation that settles (at self.site) and memoise its result under
        `key` when it is kept for the run: not when it raised, nor while the reshape
        memory keeps a journal (the engine may take the evaluation back, see _scan); a
        failure makes the examination under way unrecorded (see _examine)."""
        memo = self.memo
        impure, reads, calls = self._impure, self._state_reads, memo.calls
        try:
            got = eq.fn(self)
        except _EVAL_ERRORS as err:
            self._impure += 1
            return _Failure(err)
        if self._impure - impure == self._state_reads - reads:
            # pure but for its own reads of run state (nothing unshared): they do not
            # keep the examination under way from being recorded either
            self._impure = impure
            if memo.journal is None:
                assert self._results is not None
                self._results[key] = _Settled(got, memo.calls - calls)
        return got

    def _signature(self, site: _Site) -> int:
        """The number of a site's signature: its rule, the ranks and tuple structure of
        its ports, the types of the ports its memoised equations read and (when they
        read any) its attributes. Sites of the same signature give a pure equation the
        same result on the same layouts, and an examination the same course."""
        plan = site.plan
        values: tuple[Any, ...] = site.values
        typing = plan.typing
        got: list[Any] | None = None
        if typing != _MIXED:
            # the common case, every port a tensor: the rank or the type of each port
            # in one flat key (the count of ports tells the roles a call lacks: the
            # last ones)
            try:
                # (map, not a list comprehension: no frame per call in Python 3.11)
                if typing == _TYPED:
                    got = list(map(self._tids.__getitem__, values))
                    if _ABSENT in got:
                        got = list(map(self._tid, values))
                else:
                    got = list(map(self.view.leaf_ndim.__getitem__, values))
            except TypeError:  # a tuple port, or a missing one
                got = None
        if got is not None:
            leaves = values
            parts: tuple[Any, ...] = (plan.number, *got)
        else:
            leaves = tuple(_leaves(values, []))
            ranks = tuple([self._rank_of(st) for st in values])
            parts = (id(plan), len(values), ranks,
                     *[self._type_of(site.at(r)) for r in plan.types])
        if plan.attrs:
            parts += (self._attrs_key(site),)
        sig = self._sigs.get(parts)
        if sig is None:
            sig = self._sigs[parts] = len(self._sigs)
        site.sig = sig
        site.leaves = leaves
        return sig

    def _rank_of(self, st: Struct) -> Any:
        """A port's ranks in its tuple structure."""
        if type(st) is int:
            return self.view.leaf_ndim[st]
        if isinstance(st, tuple):
            return tuple([self._rank_of(s) for s in st])
        return None

    def _type_of(self, st: Struct) -> Any:
        """What an equation can read of a port but its layout: per leaf, its rank and
        shape (a number per distinct shape, see _tid), in the port's tuple structure."""
        if type(st) is int:
            tid = self._tids[st]
            return self._tid(st) if tid is _ABSENT else tid
        if isinstance(st, tuple):
            return tuple([self._type_of(s) for s in st])
        return None

    def _tid(self, leaf: int) -> Any:
        """A leaf's type as one number (cached in _tids): its rank and its shape list.
        Shape lists are shared per distinct shape (see read_shape) and kept alive in
        _shapes; they are numbered per list, not per content: reshape_ids keeps its
        results by the lists' identity (see CompiledEquation.settled)."""
        dims = self._shapes[leaf]
        if dims is _ABSENT:
            dims = self._shapes[leaf] = self._shape_of(leaf)
        ndim = self.view.leaf_ndim[leaf]
        if dims is None:
            tid: Any = -2 - ndim  # (ndim >= -1: a negative number)
        else:
            # (the list's id: unique while it lives; a rank past 62 cannot share the
            # numbers: a tuple of its own)
            tid = id(dims) * 64 + ndim + 1 if ndim < 63 else ("type", ndim, id(dims))
        self._tids[leaf] = tid
        return tid

    def _failed(self, site: _Site, eq: CompiledEquation, err: Exception) -> None:
        """Record an equation that raised as an "error" conflict."""
        leaves = _leaves(self._port(site, *eq.target), [])
        self._conflict(leaves[0] if leaves else -1, "error", "", site, eq, str(err))

    def _examine(self, site: _Site) -> None:
        """Fire the pending equations of `site` that are ready, in order (see _scan); a
        site that a site of the same signature was examined in the same state before
        (its leaves' layouts, pending equations, late_ok) replays that examination
        (see _replay) instead of scanning."""
        transcripts = self._transcripts
        if transcripts is None or not site.plan.transcribe:
            self._scan(site, site.pending, 0, [], None)
            return
        sig = site.sig
        if sig is None:
            sig = self._signature(site)
        layouts = self.layouts
        key = (sig, id(site.pending), self.late_ok, *map(layouts.__getitem__, site.leaves))
        got = transcripts.get(key)
        if got is None:
            self._record(site, key)
        elif got is _UNRECORDED:
            self._scan(site, site.pending, 0, [], None)
        else:
            self._replay(site, got)

    def _record(self, site: _Site, key: tuple[Any, ...]) -> None:
        """Scan `site` and keep the examination's transcript under `key` (see _examine)."""
        transcripts = self._transcripts
        assert transcripts is not None
        rec: list[_Event] = []
        impure = self._impure
        if self._scan(site, site.pending, 0, [], rec) and self._impure == impure:
            events = tuple(rec)
            # (effects that cannot come out differently: see _replay)
            steps = site.plan.steps
            slot = site.plan.slot
            simple = (tuple((_FIRST, slot[e[4]], e[3], e[2]) if e[1] == _FIRST
                            else (e[1], steps[e[2]], e[2], None) for e in events)
                      if all(e[1] in _SIMPLE for e in events) else None)
            transcripts[key] = (events, site.pending, simple)
        else:
            transcripts[key] = _UNRECORDED  # it evaluated a stateful equation

    def _replay(self, site: _Site, transcript: _Transcript) -> None:
        """Repeat a recorded examination: its effects in order, no readiness check and
        no evaluation. A decision can come out differently (symbolic letters, minted
        letters moved apart from guesses): after each, its target's layouts are compared
        with the recorded ones, and on a difference the scan goes on from there."""
        events, final, simple = transcript
        values = site.values
        if simple is not None:
            index = site.index
            for kind, a, b, c in simple:
                if kind == _FIRST:  # (`a`: the target's position in the site's values)
                    self._decide(values[a], b, "rule", index, c)  # type: ignore[arg-type]
                elif kind == _WEAK:
                    self._push_weak(site, a, b)
                else:
                    self._wait(site, True)
            site.pending = final
            return
        steps, slot = site.plan.steps, site.plan.slot
        layouts, ndims, valid = self.layouts, self.view.leaf_ndim, self._valid
        fresh = not (self.track_symbols or self.guessed)
        last = len(values) - 1
        for i, kind, k, value, post, nstill in events:
            if kind == _FIRST:
                self._decide(values[slot[post]], value, "rule", site.index, k)  # type: ignore[arg-type]
            elif kind == _GIVE:
                step = steps[k]
                j = slot[step[4]] if step[5] is None else last
                target = values[j] if j < last else None
                if type(target) is int and type(value) is str and (fresh or not step[8]):
                    # _give's common cases inline (as in _scan): a re-derivation of the
                    # decided layout, a first decision of a valid layout of its rank
                    old = layouts[target]
                    if old == value:
                        got: Any = old
                    elif old is None and len(value) == ndims[target] and valid.get(value):
                        self._decide(target, value, "rule", site.index, step[0])
                        got = value
                    else:
                        self._apply(target, value, site, step[0], weak=False)
                        got = layouts[target]
                else:
                    got = self._give(site, step, value)
                # (a decision changes only its target's layouts)
                if got != post:
                    self._scan(site, site.pending, i + 1, list(final[:nstill]), None)
                    return
            elif kind == _WEAK:
                self._push_weak(site, steps[k], k)
            elif kind == _FAIL:
                self._failed(site, steps[k][0], value)
            else:
                self._wait(site, kind == _LATE)
        site.pending = final

    def _scan(self, site: _Site, pending: tuple[int, ...] | list[int], start: int,
              still: list[int], rec: list[_Event] | None) -> bool:
        """Examine `pending[start:]` in order (`still`: the pending equations kept from
        before `start`), then set the site's pending equations. With `rec`, record the
        effects there (see _replay); False when an evaluation was not memoisable, so
        the record does not repeat it."""
        self.site = site  # for the Env methods the equations call
        steps = site.plan.steps
        ports = site.ports
        if ports is None:
            ports = _ports(site)
        self.ports = ports
        layouts, ndims = self.layouts, self.view.leaf_ndim
        memoise = self._results is not None
        recordable = True
        i = start - 1
        for k in pending[start:] if start else pending:
            i += 1
            step = steps[k]
            (eq, reads, field_reads, ready_if_any, role, idx, weak, copy, mints, late,
             memo_roles) = step
            if weak and idx is None:
                st = ports.get(role)
                if type(st) is int and (layouts[st] is not None or ndims[st] < 0):
                    continue  # its target is decided (for good): it can never fire
            # ready when every strict read is known (a port of unknown rank counts as
            # known) and, for a purely partial reader, when any partial read is
            ready = True
            for r in reads:
                st = ports.get(r, _ABSENT)
                if type(st) is int:
                    if layouts[st] is None and ndims[st] >= 0:
                        ready = False
                        break
                elif st is _ABSENT or not self._known(st):
                    ready = False
                    break
            if ready and field_reads:
                for r, j in field_reads:
                    if r not in ports or not self._known(self._port(site, r, j)):
                        ready = False
                        break
            if ready and ready_if_any:
                ready = False
                for r in ready_if_any:
                    st = ports.get(r)
                    if (layouts[st] is not None) if type(st) is int else self._any_known(st):
                        ready = True
                        break
            if not ready:
                still.append(k)
                continue
            target = ports.get(role) if idx is None else self._port(site, role, idx)
            if late and not self.late_ok and (
                (layouts[target] is None and ndims[target] >= 0) if type(target) is int
                else not self._known(target)
            ):
                # it would decide an unknown tensor: first the tensor's own chain
                still.append(k)
                self._wait(site, True)
                if rec is not None:
                    rec.append((i, _LATE, k, None, None, len(still)))
                continue
            if weak:
                self._push_weak(site, step, k)
                if rec is not None:
                    rec.append((i, _WEAK, k, None, None, len(still)))
                continue
            if copy is not None:
                value = self._value(ports.get(copy[0]) if copy[1] is None
                                    else self._port(site, copy[0], copy[1]))
            else:
                # a minting equation that names an operand may wait (see below)
                wait = (mints and role != "out" and not self.late_ok and type(target) is int
                        and layouts[target] is None)
                if wait:
                    memo = self.memo
                    calls, minted = memo.calls, memo.minted
                    memo.journal = []
                if memo_roles is not None and memoise:
                    value = self._memoised(site, eq, memo_roles)
                    if type(value) is _Failure:
                        self._failed(site, eq, value.err)
                        if rec is not None:
                            rec.append((i, _FAIL, k, value.err, None, len(still)))
                        value = None
                else:
                    recordable = False  # a stateful equation: its result may change
                    # _evaluate inline (self.site is this site: set above)
                    try:
                        value = eq.fn(self)
                    except _EVAL_ERRORS as err:
                        self._failed(site, eq, err)
                        value = None
                if wait:
                    journal, memo.journal = memo.journal, None
                    if type(value) is str and self._mints_new(site, eq, value, calls, minted):
                        # letters no read holds, for an operand: its producer's chain
                        # names it first, when it can (two chains minting apart would
                        # meet and disagree), and the evaluation leaves no trace
                        memo.undo(journal)
                        if eq.settled is not None:
                            # (taken back: evaluated again later, maybe otherwise)
                            recordable = False
                        still.append(k)
                        self._wait(site, False)
                        if rec is not None:
                            rec.append((i, _BACK, k, None, None, len(still)))
                        continue
            if value is None:
                if any(not self._known(ports.get(r)) for r in eq.partial_reads):
                    still.append(k)  # a partial reader may decide once more are known
                continue
            if type(target) is not int:
                self._apply(target, value, site, eq, weak=False)
                if rec is not None:
                    rec.append((i, _GIVE, k, value, self._value(target), len(still)))
                continue
            old = layouts[target]
            # (for the record: a minting equation's result that holds only letters it
            # read names nothing anew, and comes out the same in any state: see _apply)
            anew = mints and (rec is None or type(value) is not str
                              or not self._inherited(site, eq).issuperset(value))
            if type(value) is str and not (mints and (self.track_symbols or self.guessed)) and (
                old == value or (
                    old is None and len(value) == ndims[target] and self._valid.get(value))):
                # the common cases of _apply, inline: a re-derivation of the decided
                # layout, and a first decision of a valid layout of the right rank
                if old is None:
                    self._decide(target, value, "rule", site.index, eq)
            else:
                self._apply(target, value, site, eq, weak=False)
            if rec is not None:
                if anew or idx is not None or type(value) is not str or (
                        old is not None and old != value):
                    rec.append((i, _GIVE, k, value, layouts[target], len(still)))
                elif old is None:
                    # a first decision that names nothing anew: the same at every
                    # replay (or a conflict, the same too)
                    rec.append((i, _FIRST, eq, value, role, len(still)) if layouts[target]
                               == value else (i, _GIVE, k, value, None, len(still)))
                # (else a re-derivation of the decided layout: no effect to replay)
        if memoise and site.plan.transcribe:
            # one object per content: _examine keys its transcripts by its id
            kept = tuple(still)
            site.pending = self._pendings.setdefault(kept, kept)
        else:
            site.pending = still
        return recordable

    def _give(self, site: _Site, step: _Step, value: Any) -> Any:
        """Apply a strong equation's (non-None) result to its target; its layouts after."""
        role, idx = step[4], step[5]
        target = site.at(role) if idx is None else self._port(site, role, idx)
        self._apply(target, value, site, step[0], weak=False)
        return self.layouts[target] if type(target) is int else self._value(target)

    def _push_weak(self, site: _Site, step: _Step, k: int) -> None:
        """Queue a ready weak default by the earliest unknown leaf of its target."""
        role, idx = step[4], step[5]
        if idx is None:  # (site.at inline)
            values = site.values
            last = len(values) - 1
            j = site.plan.slot.get(role, last)
            target = values[j] if j < last else None
        else:
            target = self._port(site, role, idx)
        layouts, ndims = self.layouts, self.view.leaf_ndim
        if type(target) is int:
            if layouts[target] is None and ndims[target] >= 0:
                heapq.heappush(self.weak, (target, site.index, k))
            return
        unknown = [x for x in _leaves(target, []) if layouts[x] is None and ndims[x] >= 0]
        if unknown:
            heapq.heappush(self.weak, (unknown[0], site.index, k))

    def _wait(self, site: _Site, late: bool) -> None:
        """Queue a site for a late equation (`late`) or a waiting minting one."""
        if not self.late_queued[site.index]:
            self.late_queued[site.index] = 1
            (self.late if late else self.late_back).append(site.index)

    # ---- the loop
    def _seed(self) -> None:
        """Fire every equation that reads no port (attribute seeds) before propagating."""
        layouts, ndims, valid = self.layouts, self.view.leaf_ndim, self._valid
        # the seeds' results per (rule, attributes, ranks of the ports): a pure seed
        # reads nothing else (memo on; a site with a tuple or missing port: never)
        memo: dict[tuple[Any, ...], list[Any]] | None = {} if self._results is not None else None
        for site, seeds in self.seeded:
            plan = site.plan
            steps = plan.steps
            key: tuple[Any, ...] | None = None
            got = None
            if memo is not None and plan.pure_seeds:
                try:
                    key = (plan.number, self._attrs_key(site),
                           *map(ndims.__getitem__, site.values))  # type: ignore[arg-type]
                except TypeError:  # a tuple port, or a missing one
                    key = None
                else:
                    got = memo.get(key)
            impure, fresh = self._impure, got is None
            values = got if got is not None else []
            for n, k in enumerate(seeds):
                step = steps[k]
                eq = step[0]
                if fresh:
                    before = len(self.raw_conflicts)
                    value = self._evaluate(site, eq, step[10])
                    if len(self.raw_conflicts) != before:
                        key = None  # it raised: evaluated (and reported) at every site
                    values.append(value)
                else:
                    value = values[n]
                if value is not None:
                    role, idx = eq.target
                    target = site.at(role) if idx is None else self._port(site, role, idx)
                    if (type(target) is int and type(value) is str and not eq.mints
                            and layouts[target] is None and len(value) == ndims[target]
                            and valid.get(value)):
                        # _apply's common case inline (as in _scan): a first decision
                        # of a valid layout of the right rank
                        self._decide(target, value, "rule", site.index, eq)
                    else:
                        self._apply(target, value, site, eq, weak=False)
            if fresh and key is not None and memo is not None and self._impure == impure:
                memo[key] = values
        self.seeded = []

    def run(self) -> None:
        ndims = self.view.leaf_ndim
        if 0 in ndims:
            for leaf, ndim in enumerate(ndims):
                if ndim == 0:  # a scalar has exactly one layout, the empty one
                    self._decide(leaf, "", "scalar", -1, None)
        self._seed()
        layouts = self.layouts
        nleaves = len(layouts)
        last = 0  # earliest unknown leaf
        transcripts = self._transcripts
        queue, queued, sites = self.queue, self.queued, self.sites
        while True:
            while queue:
                i = queue.popleft()
                site = sites[i]
                # (a site with nothing pending never will have: it stays marked queued,
                # so no decision queues it again)
                if site is not None and site.pending:
                    if transcripts is not None and site.plan.transcribe:
                        # (what _examine does, without a call: late_ok is False here)
                        sig = site.sig
                        if sig is None:
                            sig = self._signature(site)
                        key = (sig, id(site.pending), False,
                               *map(layouts.__getitem__, site.leaves))
                        got = transcripts.get(key)
                        if got is None:
                            queued[i] = False
                            self._record(site, key)
                        elif got is _UNRECORDED:
                            queued[i] = False
                            self._scan(site, site.pending, 0, [], None)
                        else:
                            # a replay that cannot come out differently and leaves
                            # nothing pending: the site stays marked queued (its own
                            # decisions would queue it for a pop that does nothing)
                            if got[1] or got[2] is None:
                                queued[i] = False
                            self._replay(site, got)
                    else:
                        queued[i] = False
                        self._scan(site, site.pending, 0, [], None)
            if self.late or self.late_back:
                known = len(self.memo.split)
                if self.late_back and known != self._woke_at:
                    # a reshape has named axes since: a waiting one may now give letters
                    # back instead of minting, so it is examined again
                    self._woke_at = known
                    for j in self.late_back:
                        self.late_queued[j] = 0
                        if not self.queued[j]:
                            self.queued[j] = True
                            self.queue.append(j)
                    self.late_back.clear()
                    continue
                i = (self.late or self.late_back).popleft()
                self.late_queued[i] = 0
                site = self.sites[i]
                assert site is not None
                self.late_ok = True
                self._examine(site)
                self.late_ok = False
                continue
            # a weak default anywhere goes before initial letters anywhere: it may reach
            # an unknown tensor through the strong equations in between (a matmul's `IO`
            # reaches a weight constant through the permute_dims before it)
            if self._next_weak() is not None and self._fire_weak():
                continue
            while last < nleaves and (layouts[last] is not None or ndims[last] < 0):
                last += 1
            if last >= nleaves:
                break
            self._decide(last, self._initial(last), "fallback", -1, None)

    def _target_open(self, si: int, k: int) -> bool:
        site = self.sites[si]
        assert site is not None
        role, idx = site.plan.steps[k][0].target
        target = site.at(role) if idx is None else self._port(site, role, idx)
        if type(target) is int:
            return self.layouts[target] is None and self.view.leaf_ndim[target] >= 0
        return any(
            self.layouts[x] is None and self.view.leaf_ndim[x] >= 0 for x in _leaves(target, [])
        )

    def _weak_live(self, entry: tuple[int, int, int]) -> bool:
        """Whether a queued weak default (its leaf, site, equation) can still decide
        something: once False it stays False (a decision is never taken back)."""
        leaf, si, k = entry
        return self.layouts[leaf] is None and self._target_open(si, k)

    def _next_weak(self) -> int | None:
        """The target leaf of the earliest weak default that can still decide something."""
        weak = self.weak
        if len(weak) > 2 * self._weak_kept + WEAK_PRUNE_AT:
            # most entries are stale once the strong equations have run (a conv's weak
            # default queued before its input was decided): dropped in one pass rather
            # than popped one by one at O(log n) each; the same test as the pops below,
            # and a stale entry stays stale, so the heap's order among the rest is
            # unchanged (amortised: a prune at most once per doubling)
            weak[:] = filter(self._weak_live, weak)
            heapq.heapify(weak)
            self._weak_kept = len(weak)
        while weak:
            if self._weak_live(weak[0]):
                return weak[0][0]
            heapq.heappop(weak)
        return None

    def _fire_weak(self) -> bool:
        """Fire the earliest open weak default (the top of the heap: the caller has just
        checked it with _next_weak); True when it decided something."""
        while True:
            _, si, k = heapq.heappop(self.weak)
            site = self.sites[si]
            assert site is not None
            eq, roles = site.plan.steps[k][0], site.plan.steps[k][10]
            before = len(self.sequence)
            self._apply(self._port(site, *eq.target), self._evaluate(site, eq, roles), site, eq,
                        weak=True)
            if len(self.sequence) != before:
                return True
            if self._next_weak() is None:
                return False


def infer_view(
    view: DependencyView, rules: RuleSet, seeds: dict[int, str] | None = None
) -> InferenceResult:
    """Run propagation on a built dependency view; `seeds` fix leaves up front."""
    eng = _Engine(view, rules)
    for leaf, lay in sorted((seeds or {}).items()):
        eng._decide(leaf, lay, "seed", -1, None)
    eng.run()
    provenance = Provenance(eng.kinds, eng.decided_by, eng.equations, eng.sequence)
    result = InferenceResult(view, rules, eng.layouts, provenance, [], eng.unruled)
    if eng.raw_conflicts:
        # the existing decision of a conflict: the leaf's (decisions are never
        # replaced) if it was made before the conflict
        decisions = result.decisions
        for leaf, kind, proposed, made, site, eq, message in eng.raw_conflicts:
            d = decisions[leaf] if leaf >= 0 else None
            existing = d if d is not None and d.order <= made else None
            result.conflicts.append(
                Conflict(leaf, kind, proposed, existing, site, eq, message))
    return result


def infer_layouts(
    mod: tvm.IRModule, rules: RuleSet | None = None, entry_name: str = "main"
) -> InferenceResult:
    """Infer a layout for every tensor of `entry_name` and the functions it calls (no IR change)."""
    from .library import default_rules

    rs = rules if rules is not None else default_rules()
    with paused_gc():
        return infer_view(build_view(mod, entry_name), rs)

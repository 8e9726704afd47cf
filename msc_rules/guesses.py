"""Guessed layouts: which tensors have a layout no rule gave evidence for, and which
weights are among them.

A leaf's layout is **guessed** when
- the engine gave it initial letters (provenance kind `fallback`: no seed, rule or
  weak default reached it), or
- a strong equation decided it from other tensors' layouts and every tensor of rank
  >= 1 it read was guessed itself: the letters a permute_dims, reshape or elementwise
  op moves from a guess are still a guess.

Evidence: a seed, a strong equation that reads no layout (attribute seeds such as a
conv's `kernel_layout`), and every weak default. A weak default is the rule's claim of
a role (`O`, `IO`, a bias on the last axis) even where it copies letters from a
guessed neighbour (a matmul's weight `IO` after the data's batch letters). One
evidenced read is enough for a derived layout not to count as guessed (a broadcast of
a guessed bias against an `NCHW` activation takes its letters from the activation).
A scalar's empty layout is never a guess.

A **weight** is a constant, or a parameter that is not a model input, reaching an
argument of a weight consumer (`is_weight_consumer`: a convolution, `relax.matmul` or a
normalisation `relax.nn.*_norm`) directly or through view ops (`naming.VIEW_OPS`:
permute_dims, reshape, astype, ...), across calls of other functions, MatchCast and
If. A parameter is a model input when its function has a `num_input` attribute and
the parameter comes before that index; without the attribute, a parameter is taken
for a weight when it reaches an argument other than the consumer's first (its data).
A guessed weight is what `annotate --strict` and the coverage gate refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm

from .dsl.compile import CompiledEquation
from .dsl.ruleset import Rule, RuleSet
from .engine import InferenceResult
from .graph import CallSite, Struct
from .naming import VIEW_OPS


def is_weight_consumer(op: str) -> bool:
    """Whether a weight reaching `op` must have a layout from rules (conv, matmul, norms)."""
    return (op.startswith("relax.nn.conv") or op == "relax.matmul"
            or (op.startswith("relax.nn.") and op.endswith("_norm")))


def leaves_of(struct: Struct) -> list[int]:
    """The leaf ids of a struct, in order."""
    if isinstance(struct, int):
        return [struct]
    if isinstance(struct, tuple):
        return [x for s in struct for x in leaves_of(s)]
    return []


def site_rule(rules: RuleSet, op: str) -> Rule | None:
    """The rule the engine runs for a call site's op (plugins by extern name)."""
    if op.startswith("plugin:"):
        return rules.plugin(op[len("plugin:"):])
    return rules.lookup(op) if op and op != "<link>" else None


def site_ports(result: InferenceResult, cs: CallSite) -> dict[str, Struct]:
    """The ports (role -> struct) of a call site, as the engine binds them."""
    roles: tuple[str, ...] = ()
    if cs.op == "<link>":
        roles = ("data",)
    else:
        rule = site_rule(result.rules, cs.op)
        if rule is not None:
            roles = rule.roles
    ports: dict[str, Struct] = {"out": cs.out}
    for role, st in zip(roles, cs.args, strict=False):
        ports[role] = st
    return ports


def equation_reads(eq: CompiledEquation, ports: dict[str, Struct]) -> list[tuple[str, int]]:
    """(port text, leaf) for every leaf whose layout an equation reads."""
    out: list[tuple[str, int]] = []
    for role, idx in eq.strict_reads:
        st = ports.get(role)
        if idx is not None:
            st = st[idx] if isinstance(st, tuple) and idx < len(st) else None
        text = role if idx is None else f"{role}[{idx}]"
        out.extend((text, leaf) for leaf in leaves_of(st))
    for role in eq.partial_reads:
        out.extend((role, leaf) for leaf in leaves_of(ports.get(role)))
    return out


@dataclass(frozen=True)
class WeightUse:
    """One weight leaf and a consumer it reaches."""

    leaf: int
    site: int  # index into view.sites of the consumer
    role: str  # the consumer's role for the argument ("weight", "gamma", ...; "" if none)


@dataclass
class Guesses:
    """Per leaf: whether its layout is guessed, and which leaves are weights."""

    guessed: list[bool]
    direct: list[bool]
    """Guessed by the engine's own fallback (initial letters), not derived."""
    weights: dict[int, list[WeightUse]] = field(default_factory=dict)
    """Weight leaf -> the consumers it reaches, in program order."""

    @property
    def guessed_weights(self) -> list[int]:
        """The weight leaves whose layout is guessed, in leaf order."""
        return [x for x in sorted(self.weights) if self.guessed[x]]

    def count(self) -> int:
        """How many leaves are guessed."""
        return sum(self.guessed)


def guessed_leaves(result: InferenceResult) -> tuple[list[bool], list[bool]]:
    """(guessed, direct) per leaf: see the module docstring for the definition."""
    n = len(result.layouts)
    guessed = [False] * n
    direct = [False] * n
    kinds = result.provenance.kinds
    if "fallback" not in kinds:
        return guessed, direct  # nothing guessed, nothing to derive from a guess
    view = result.view
    ndims = view.leaf_ndim
    decisions = result.decisions
    ports_of: dict[int, dict[str, Struct]] = {}
    for leaf in result.provenance.sequence:
        d = decisions[leaf]
        if d is None:
            continue
        if d.kind == "fallback":
            guessed[leaf] = direct[leaf] = True
            continue
        if d.equation is None or d.kind != "rule":
            continue  # seeds, scalars and weak defaults are evidence
        ports = ports_of.get(d.site)
        if ports is None:
            ports = ports_of[d.site] = site_ports(result, view.sites[d.site])
        read = [x for _, x in equation_reads(d.equation, ports)
                if ndims[x] > 0 and (dx := decisions[x]) is not None and dx.order < d.order]
        guessed[leaf] = bool(read) and all(guessed[x] for x in read)
    return guessed, direct


def _num_inputs(mod: tvm.IRModule | None, func: str) -> int | None:
    """The `num_input` attribute of a global function, None when absent."""
    if mod is None:
        return None
    gv = next((g for g in mod.get_global_vars() if g.name_hint == func), None)
    if gv is None:  # a local function: its parameters are inputs of the local call
        return None
    fn = mod[gv]
    attrs = getattr(fn, "attrs", None)
    if attrs is None or "num_input" not in attrs:
        return None
    return int(attrs["num_input"])


def weight_uses(result: InferenceResult,
                mod: tvm.IRModule | None = None) -> dict[int, list[WeightUse]]:
    """Weight leaf -> the consumers it reaches (see the module docstring)."""
    view = result.view
    producer: dict[int, int] = {}
    sources: dict[int, list[int]] = {}  # a link's target leaf -> the leaves it copies
    for i, cs in enumerate(view.sites):
        if cs.op == "<link>":
            for src, dst in zip(leaves_of(cs.args[0]), leaves_of(cs.out)):
                sources.setdefault(dst, []).append(src)
        else:
            producer[cs.value_id] = i
    param_index: dict[int, int] = {}
    counts: dict[str, int] = {}
    for v in view.values:
        if v.kind == "param":
            param_index[v.id] = counts.get(v.func, 0)
            counts[v.func] = param_index[v.id] + 1
    num_input = {f: _num_inputs(mod, f) for f in counts}

    def roots(leaf: int, first: bool, seen: set[int]) -> list[int]:
        if leaf in seen:
            return []
        seen.add(leaf)
        if leaf in sources:
            return [r for s in sources[leaf] for r in roots(s, first, seen)]
        v = view.values[view.leaf_value[leaf]]
        if v.kind == "const":
            return [leaf]
        if v.kind == "param":
            limit = num_input.get(v.func)
            weight = (param_index[v.id] >= limit) if limit is not None else not first
            return [leaf] if weight else []
        si = producer.get(v.id)
        if si is not None:
            cs = view.sites[si]
            if cs.op in VIEW_OPS and cs.args and isinstance(cs.args[0], int):
                return roots(cs.args[0], first, seen)
        return []

    uses: dict[int, list[WeightUse]] = {}
    for i, cs in enumerate(view.sites):
        if not is_weight_consumer(cs.op):
            continue
        rule = site_rule(result.rules, cs.op)
        roles = rule.roles if rule is not None else ()
        for k, arg in enumerate(cs.args):
            role = roles[k] if k < len(roles) else ""
            for leaf in leaves_of(arg):
                for w in roots(leaf, k == 0, set()):
                    uses.setdefault(w, []).append(WeightUse(w, i, role))
    return dict(sorted(uses.items()))


def find_guesses(result: InferenceResult, mod: tvm.IRModule | None = None) -> Guesses:
    """Guessed leaves and weight leaves of an inference result (`mod`: for `num_input`)."""
    guessed, direct = guessed_leaves(result)
    return Guesses(guessed, direct, weight_uses(result, mod))


def describe(result: InferenceResult, leaf: int, guesses: Guesses) -> str:
    """Why a guessed leaf counts as guessed, in a few words."""
    if guesses.direct[leaf]:
        return "initial letters: no rule or default reached it"
    d = result.decisions[leaf]
    if d is None or d.site < 0:
        return "guessed"
    op = result.view.sites[d.site].op
    return f"derived only from guessed layouts (by {op or 'an opaque call'})"


__all__ = ["Guesses", "WeightUse", "describe", "equation_reads", "find_guesses",
           "guessed_leaves", "is_weight_consumer", "leaves_of", "site_ports", "site_rule",
           "weight_uses"]

"""Op-semantics properties of inferred layouts (issue 11), checked over every binding.

``property_violations(result)`` checks what follows from an op's semantics alone:

- *unique*: no letter twice in one layout (and *rank*: one letter per axis);
- *broadcast*: for a broadcasting op, an operand axis (right-aligned) whose extent equals
  the output axis's extent and is not 1 is the same axis, so it carries the output's
  letter;
- *permute_dims*: ``out[i] == in[axes[i]]``;
- *matmul*: the output's batch axes and its M axis carry the left operand's letters
  (where the left operand's extent is the output's: a stretched size-1 batch axis is the
  right operand's);
- *concat*: every axis but the concat axis is tied across the inputs and the output;
- *unary*: an elementwise unary op's output has its input's layout;
- *expand_dims* / *squeeze*: the axes kept keep their letters.

``role_violations(result, num_input)`` checks the weight roles:

- every conv weight carries its ``kernel_layout``;
- every rank-2 weight that reaches a matmul's right operand directly or through
  permute_dims/astype/reshape is ``IO`` at the matmul, and ``OI`` before a permute_dims
  that transposes it (each tensor of the chain, by the parity of transposes after it);
- every norm parameter (batch/layer/group/instance/rms norm) is ``O`` or the letter of
  its activation's normalised channel;
- every bias or scale (a weight, or its reshape/expand_dims/astype, whose shape has one
  extent that is not 1) added to or multiplied into an activation carries, on that
  axis, the output's letter on the axis it is broadcast against.

A *weight* is a constant, or a parameter of the entry function past its ``num_input``
leading inputs. Each violation is a readable string naming the binding
(``function:var``), the op, and the layouts involved.

Exemption, explicit: a binding whose site has a recorded conflict saying an axis is
broadcast against itself (``pos[:, None] <= pos[None, :]``: identity letters cannot
express it, see issue 11) is exempt from the properties (the engine may record it at
the comparison or at one of the expand_dims feeding it); ``SELF_BROADCAST`` is the
pattern the conflict message must match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from msc_rules.engine import InferenceResult
from msc_rules.graph import Struct

__all__ = [
    "BROADCAST_OPS",
    "CONV_OPS",
    "NORM_OPS",
    "SELF_BROADCAST",
    "UNARY_OPS",
    "WeightUse",
    "dump",
    "other_conflicts",
    "property_violations",
    "role_violations",
    "self_broadcast_sites",
    "weight_uses",
]

SELF_BROADCAST = re.compile(r"\b(against|with) itself\b", re.IGNORECASE)
"""What a recorded conflict's message says for an axis broadcast against itself."""

BROADCAST_OPS = frozenset(f"relax.{n}" for n in (
    "add", "subtract", "multiply", "divide", "floor_divide", "power", "maximum", "minimum",
    "mod", "floor_mod", "atan2", "log_add_exp", "equal", "not_equal", "less", "less_equal",
    "greater", "greater_equal", "logical_and", "logical_or", "logical_xor", "bitwise_and",
    "bitwise_or", "bitwise_xor", "left_shift", "right_shift", "where", "ewise_fma"))

UNARY_OPS = frozenset(f"relax.{n}" for n in (
    "abs", "acos", "acosh", "asin", "asinh", "atan", "atanh", "ceil", "cos", "cosh", "erf",
    "exp", "floor", "log", "negative", "round", "rsqrt", "sigmoid", "sign", "sin", "sinh",
    "sqrt", "square", "tan", "tanh", "trunc", "logical_not", "bitwise_not", "isfinite",
    "isinf", "isnan", "nn.relu", "nn.gelu", "nn.gelu_tanh", "nn.silu", "nn.selu",
    "nn.leakyrelu", "nn.softplus", "astype", "wrap_param", "clip", "nn.softmax",
    "nn.log_softmax", "zeros_like", "ones_like", "full_like"))

CONV_OPS = frozenset(f"relax.nn.conv{d}d{t}" for d in (1, 2, 3) for t in ("", "_transpose"))

NORM_OPS = frozenset(f"relax.nn.{n}" for n in (
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"))

# ops a weight goes through on its way to a matmul / into an add or multiply
_TO_MATMUL = frozenset({"relax.permute_dims", "relax.astype", "relax.reshape"})
_TO_BIAS = frozenset({"relax.reshape", "relax.expand_dims", "relax.astype"})
_SCALE_OPS = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide"})


# --------------------------------------------------------------------------- helpers


def _ints(v: Any) -> list[int] | None:
    if v is None:
        return None
    return [int(x) for x in v]


def _attr(cs: Any, name: str) -> Any:
    attrs = cs.attrs
    if attrs is None:
        return None
    try:
        return getattr(attrs, name)
    except AttributeError:
        return None


class _Ctx:
    """What the checks share: the result, leaf producers, weights."""

    def __init__(self, result: InferenceResult, num_input: int | None = None) -> None:
        self.r = result
        view = result.view
        self.site_of: dict[int, int] = {}  # value id -> the call site that binds it
        for i, cs in enumerate(view.sites):
            if cs.call is not None:
                self.site_of.setdefault(cs.value_id, i)
        self.weights: set[int] = set()  # leaves that are weights
        count: dict[str, int] = {}
        for v in view.values:
            if v.kind == "const" and isinstance(v.struct, int):
                self.weights.add(v.struct)
            elif v.kind == "param" and v.func == view.entry:
                k = count[v.func] = count.get(v.func, 0) + 1
                if num_input is not None and k > num_input and isinstance(v.struct, int):
                    self.weights.add(v.struct)

    def layout(self, leaf: int) -> str | None:
        return self.r.layouts[leaf]

    def shape(self, leaf: int) -> list[Any] | None:
        return self.r.view.shape(leaf)

    def place(self, site: int) -> str:
        return f"{self.r.site_name(site)} ({self.r.view.sites[site].op})"

    def leaf_place(self, leaf: int) -> str:
        return self.r.leaf_place(leaf)

    def producer(self, leaf: int) -> int | None:
        """The call site whose output is `leaf` (None for params, constants, tuples)."""
        vid = self.r.view.leaf_value[leaf]
        i = self.site_of.get(vid)
        if i is None:
            return None
        return i if self.r.view.sites[i].out == leaf else None

    def origin(self, leaf: int, through: frozenset[str]) -> list[int] | None:
        """The chain weight -> ... -> `leaf` through `through` ops, or None when `leaf`
        does not come from a weight that way."""
        chain = [leaf]
        while chain[-1] not in self.weights:
            i = self.producer(chain[-1])
            if i is None:
                return None
            cs = self.r.view.sites[i]
            if cs.op not in through or not cs.args or not isinstance(cs.args[0], int):
                return None
            chain.append(cs.args[0])
        chain.reverse()
        return chain


def self_broadcast_sites(result: InferenceResult) -> set[int]:
    """Sites with a recorded conflict that says an axis is broadcast against itself."""
    return {c.site for c in result.conflicts if SELF_BROADCAST.search(c.message)}


def other_conflicts(result: InferenceResult) -> list[str]:
    """The recorded conflicts that are not self-broadcast ones, as readable strings."""
    return [f"conflict: {result.site_name(c.site)} ({result.view.sites[c.site].op}) on "
            f"{result.leaf_place(c.leaf)}: {c.message}"
            for c in result.conflicts if not SELF_BROADCAST.search(c.message)]


def _leaves(st: Struct) -> Iterator[int]:
    if isinstance(st, int):
        yield st
    elif isinstance(st, tuple):
        for s in st:
            yield from _leaves(s)


# --------------------------------------------------------------------------- properties


def property_violations(result: InferenceResult) -> list[str]:
    """Violations of the op-semantics properties (see the module docstring)."""
    ctx = _Ctx(result)
    out: list[str] = []
    for leaf, lay in enumerate(result.layouts):
        if lay is not None and len(set(lay)) != len(lay):
            out.append(f"unique: {ctx.leaf_place(leaf)} has a letter twice: {lay}")
        ndim = result.view.leaf_ndim[leaf]
        if lay is not None and ndim >= 0 and len(lay) != ndim:
            out.append(f"rank: {ctx.leaf_place(leaf)} of rank {ndim} has layout {lay!r}")
    exempt = self_broadcast_sites(result)
    for i, cs in enumerate(result.view.sites):
        if cs.call is None or not isinstance(cs.out, int):
            continue
        if i in exempt:
            continue
        if cs.op in BROADCAST_OPS:
            out.extend(_broadcast(ctx, i, cs))
        elif cs.op == "relax.permute_dims":
            out.extend(_permute(ctx, i, cs))
        elif cs.op == "relax.matmul":
            out.extend(_matmul(ctx, i, cs))
        elif cs.op == "relax.concat":
            out.extend(_concat(ctx, i, cs))
        elif cs.op in UNARY_OPS:
            out.extend(_unary(ctx, i, cs))
        elif cs.op in ("relax.expand_dims", "relax.squeeze"):
            out.extend(_unit_axes(ctx, i, cs))
    return out


def _broadcast(ctx: _Ctx, i: int, cs: Any) -> Iterator[str]:
    o = cs.out
    lo, so = ctx.layout(o), ctx.shape(o)
    if lo is None or so is None or len(lo) != len(so):
        return
    for k, arg in enumerate(cs.args):
        if not isinstance(arg, int):
            continue
        la, sa = ctx.layout(arg), ctx.shape(arg)
        if la is None or sa is None or len(sa) > len(so) or len(la) != len(sa):
            continue
        for j in range(1, len(sa) + 1):
            if sa[-j] == so[-j] and sa[-j] != 1 and la[-j] != lo[-j]:
                yield (f"broadcast: {ctx.place(i)} operand {k} axis {len(sa) - j} "
                       f"(extent {sa[-j]}) is {la[-j]!r} in {la} but the output's is "
                       f"{lo[-j]!r} in {lo}")


def _permute(ctx: _Ctx, i: int, cs: Any) -> Iterator[str]:
    src = cs.args[0] if cs.args else None
    if not isinstance(src, int):
        return
    li, lo = ctx.layout(src), ctx.layout(cs.out)
    if li is None or lo is None or len(li) != len(lo):
        return
    axes = _ints(_attr(cs, "axes"))
    if axes is None:
        axes = list(range(len(li)))[::-1]
    want = "".join(li[a] for a in axes)
    if want != lo:
        yield (f"permute_dims: {ctx.place(i)} axes {axes} of {li} give {want}, "
               f"the output is {lo}")


def _matmul(ctx: _Ctx, i: int, cs: Any) -> Iterator[str]:
    a = cs.args[0] if cs.args else None
    if not isinstance(a, int):
        return
    la, lo = ctx.layout(a), ctx.layout(cs.out)
    sa, so = ctx.shape(a), ctx.shape(cs.out)
    if None in (la, lo, sa, so) or len(la) < 2 or len(lo) < 2:  # type: ignore[arg-type]
        return
    assert la is not None and lo is not None and sa is not None and so is not None
    if len(la) != len(sa) or len(lo) != len(so):
        return  # reported by the rank property
    # the M axis, then batch axes right-aligned
    if la[-2] != lo[-2]:
        yield (f"matmul: {ctx.place(i)} M axis is {la[-2]!r} in the left operand {la} "
               f"but {lo[-2]!r} in the output {lo}")
    for j in range(3, min(len(la), len(lo)) + 1):
        if sa[-j] == so[-j] and la[-j] != lo[-j]:
            yield (f"matmul: {ctx.place(i)} batch axis {len(lo) - j} is {la[-j]!r} in "
                   f"the left operand {la} but {lo[-j]!r} in the output {lo}")


def _concat(ctx: _Ctx, i: int, cs: Any) -> Iterator[str]:
    lo = ctx.layout(cs.out)
    if lo is None:
        return
    axis = _attr(cs, "axis")
    axis = 0 if axis is None else int(axis)
    axis %= len(lo) if lo else 1
    for k, leaf in enumerate(_leaves(cs.args[0] if cs.args else None)):
        li = ctx.layout(leaf)
        if li is None or len(li) != len(lo):
            continue
        for j, (x, y) in enumerate(zip(li, lo)):
            if j != axis and x != y:
                yield (f"concat: {ctx.place(i)} input {k} axis {j} is {x!r} in {li} but "
                       f"{y!r} in the output {lo}")


def _unit_axes(ctx: _Ctx, i: int, cs: Any) -> Iterator[str]:
    src = cs.args[0] if cs.args else None
    if not isinstance(src, int):
        return
    li, lo = ctx.layout(src), ctx.layout(cs.out)
    si = ctx.shape(src)
    if li is None or lo is None or si is None or len(li) != len(si):
        return
    axes = _ints(_attr(cs, "axis"))
    if cs.op == "relax.expand_dims":
        added = {a % len(lo) for a in axes or []}
        kept = "".join(c for j, c in enumerate(lo) if j not in added)
        if kept != li:
            yield f"expand_dims: {ctx.place(i)} input {li}, output {lo} (axes {axes})"
    else:
        gone = ({a % len(li) for a in axes} if axes is not None
                else {j for j, d in enumerate(si) if d == 1})
        kept = "".join(c for j, c in enumerate(li) if j not in gone)
        if kept != lo:
            yield f"squeeze: {ctx.place(i)} input {li}, output {lo} (axes {axes})"


def _unary(ctx: _Ctx, i: int, cs: Any) -> Iterator[str]:
    src = cs.args[0] if cs.args else None
    if not isinstance(src, int):
        return
    li, lo = ctx.layout(src), ctx.layout(cs.out)
    if li is not None and lo is not None and li != lo:
        yield f"unary: {ctx.place(i)} input is {li}, output {lo}"


# --------------------------------------------------------------------------- roles


@dataclass(frozen=True)
class WeightUse:
    """One use of a weight by an op: its role, the weight's shape and layout as the op
    sees it, and the source weight's layout (for a chain from a constant or param)."""

    role: str  # "conv" | "matmul" | "norm" | "bias"
    site: int
    shape: tuple[Any, ...]
    at_op: str | None
    source: str | None


def weight_uses(result: InferenceResult, num_input: int | None = None) -> list[WeightUse]:
    """The weights conv, matmul, norm and bias/scale sites use, in op order."""
    return [u for u, _ in _uses(_Ctx(result, num_input))]


def role_violations(result: InferenceResult, num_input: int | None = None) -> list[str]:
    """Violations of the weight-role checks (see the module docstring)."""
    out: list[str] = []
    for _, problem in _uses(_Ctx(result, num_input)):
        out.extend(problem)
    return out


def _uses(ctx: _Ctx) -> Iterator[tuple[WeightUse, list[str]]]:
    for i, cs in enumerate(ctx.r.view.sites):
        if cs.call is None:
            continue
        if cs.op in CONV_OPS:
            yield from _conv_role(ctx, i, cs)
        elif cs.op == "relax.matmul":
            yield from _matmul_role(ctx, i, cs)
        elif cs.op in NORM_OPS:
            yield from _norm_role(ctx, i, cs)
        elif cs.op in _SCALE_OPS and isinstance(cs.out, int):
            yield from _bias_role(ctx, i, cs)


def _shape(ctx: _Ctx, leaf: int) -> tuple[Any, ...]:
    return tuple(ctx.shape(leaf) or ())


def _conv_role(ctx: _Ctx, i: int, cs: Any) -> Iterator[tuple[WeightUse, list[str]]]:
    w = cs.args[1] if len(cs.args) > 1 else None
    if not isinstance(w, int):
        return
    want = str(_attr(cs, "kernel_layout"))
    got = ctx.layout(w)
    bad = [] if got == want else [
        f"conv weight: {ctx.place(i)} weight {ctx.leaf_place(w)} is {got}, its "
        f"kernel_layout is {want}"]
    yield WeightUse("conv", i, _shape(ctx, w), got, got), bad


def _matmul_role(ctx: _Ctx, i: int, cs: Any) -> Iterator[tuple[WeightUse, list[str]]]:
    w = cs.args[1] if len(cs.args) > 1 else None
    if not isinstance(w, int) or ctx.r.view.leaf_ndim[w] != 2:
        return
    chain = ctx.origin(w, _TO_MATMUL)
    if chain is None or ctx.r.view.leaf_ndim[chain[0]] != 2:
        return
    bad: list[str] = []
    want = "IO"
    # walk back from the matmul: a transposing permute_dims swaps the roles before it
    for k in range(len(chain) - 1, -1, -1):
        leaf = chain[k]
        got = ctx.layout(leaf)
        if ctx.r.view.leaf_ndim[leaf] != 2:
            break  # a reshape from another rank: roles before it are not rank 2
        if got != want:
            where = "at the matmul" if k == len(chain) - 1 else "on its way to the matmul"
            bad.append(f"matmul weight: {ctx.place(i)} weight {ctx.leaf_place(leaf)} "
                       f"{where} is {got}, want {want}")
        if k > 0:
            p = ctx.producer(leaf)
            pcs = ctx.r.view.sites[p] if p is not None else None
            if pcs is not None and pcs.op == "relax.permute_dims":
                axes = _ints(_attr(pcs, "axes"))
                if axes is None or axes == [1, 0]:
                    want = want[::-1]
    yield (WeightUse("matmul", i, _shape(ctx, w), ctx.layout(w), ctx.layout(chain[0])),
           bad)


def _norm_channels(cs: Any, rank: int) -> list[int]:
    op = cs.op
    if op == "relax.nn.batch_norm":
        return [int(_attr(cs, "axis")) % rank]
    if op in ("relax.nn.group_norm", "relax.nn.instance_norm"):
        return [int(_attr(cs, "channel_axis")) % rank]
    return [a % rank for a in _ints(_attr(cs, "axes")) or [rank - 1]]


def _norm_role(ctx: _Ctx, i: int, cs: Any) -> Iterator[tuple[WeightUse, list[str]]]:
    data = cs.args[0] if cs.args else None
    if not isinstance(data, int):
        return
    ld = ctx.layout(data)
    rank = ctx.r.view.leaf_ndim[data]
    chans = _norm_channels(cs, rank) if rank > 0 else []
    for k, p in enumerate(cs.args[1:], 1):
        if not isinstance(p, int) or ctx.r.view.leaf_ndim[p] != 1:
            continue
        got = ctx.layout(p)
        allowed = {"O"}
        if ld is not None and len(chans) >= 1 and len(ld) == rank:
            # the parameter runs along the last normalised axis (layer/rms norm) or the
            # channel axis
            allowed.add(ld[chans[-1]])
        bad = [] if got in allowed else [
            f"norm param: {ctx.place(i)} param {k} {ctx.leaf_place(p)} is {got}, want "
            f"one of {sorted(allowed)} (activation {ld})"]
        yield WeightUse("norm", i, _shape(ctx, p), got, got), bad


def _bias_role(ctx: _Ctx, i: int, cs: Any) -> Iterator[tuple[WeightUse, list[str]]]:
    o = cs.out
    lo, so = ctx.layout(o), ctx.shape(o)
    operands = [a for a in cs.args[:2] if isinstance(a, int)]
    if len(operands) != 2 or so is None or (lo is not None and len(lo) != len(so)):
        return
    for k, arg in enumerate(operands):
        other = operands[1 - k]
        chain = ctx.origin(arg, _TO_BIAS)
        if chain is None or ctx.origin(other, _TO_BIAS) is not None:
            continue  # not a weight, or a weight combined with a weight
        sa = ctx.shape(arg)
        if sa is None or len(sa) > len(so):
            continue
        big = [j for j, d in enumerate(sa) if d != 1]
        if len(big) != 1:
            continue  # a scalar, or not a per-channel vector
        j = big[0]
        axis = len(so) - len(sa) + j  # the output axis it is broadcast against
        la = ctx.layout(arg)
        src = chain[0]
        ls = ctx.layout(src)
        ss = ctx.shape(src) or []
        sbig = [x for x, d in enumerate(ss) if d != 1]
        src_letter = ls[sbig[0]] if ls is not None and len(sbig) == 1 and len(ls) == len(ss) \
            else None
        want = lo[axis] if lo is not None else None
        bad: list[str] = []
        if want is None or la is None or len(la) != len(sa) or la[j] != want:
            bad.append(f"bias: {ctx.place(i)} operand {k} {ctx.leaf_place(arg)} {sa} is "
                       f"{la} but the output {lo} has {want!r} on axis {axis}")
        if src != arg and (src_letter is None or src_letter != want):
            bad.append(f"bias: {ctx.place(i)} weight {ctx.leaf_place(src)} is {ls}, "
                       f"want {want!r} (the output {lo}, axis {axis})")
        yield WeightUse("bias", i, (sa[j],), want, src_letter), bad


# --------------------------------------------------------------------------- dump


def dump(result: InferenceResult) -> str:
    """Every call site, one a line: place, op, argument layouts/shapes -> output."""
    lines = []
    r = result
    for i, cs in enumerate(r.view.sites):
        def txt(st: Struct) -> str:
            if isinstance(st, int):
                return f"{r.layouts[st]}{list(r.view.shape(st) or [])}"
            if isinstance(st, tuple):
                return "(" + ", ".join(txt(s) for s in st) + ")"
            return "-"
        args = ", ".join(txt(a) for a in cs.args)
        lines.append(f"{r.site_name(i):24} {cs.op:24} {args} -> {txt(cs.out)}")
    for c in r.conflicts:
        lines.append(f"conflict at {r.site_name(c.site)}: {c.message}")
    return "\n".join(lines)

"""The builtin functions of the rule language: a decorator-registered table.

Each builtin says which of its arguments must be bare ports (type functions such
as `ndim(data)` read a port's type, not its layout) and whether it reads its port
arguments partially (fires when any of them is known; `type_ports` are port
arguments it only reads the type of). Every other argument is an
evaluated value; unless a builtin accepts `none`, a `none` argument makes the call
`none` (the equation then decides nothing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .. import layout as L
from ..errors import RuleEvaluationError


class Env(Protocol):
    """What a compiled equation sees of one call: its ports and attributes."""

    def layout(self, role: str) -> Any:
        """The port's layout: a str, a tuple (for tuple ports), or None if unknown."""

    def field(self, role: str, index: int) -> Any:
        """The layout of field `index` of a tuple port, or None."""

    def ndim(self, role: str) -> int:
        """The port's rank (-1 when unknown)."""

    def shape(self, role: str) -> list[L.Dim] | None:
        """The port's shape as layout.Dim values, or None when unknown."""

    def nfields(self, role: str) -> int:
        """The number of fields of a tuple port (0 for a tensor)."""

    def attr(self, name: str) -> Any:
        """The call attribute `name` as a Python value, or None."""

    def run_state(self, key: str, factory: Callable[[], Any]) -> Any:
        """State kept for one inference run under `key` (made by `factory` on first use)."""


@dataclass(frozen=True)
class Builtin:
    """One builtin function of the rule language."""

    name: str
    impl: Callable[..., Any]
    min_args: int
    max_args: int
    port_args: tuple[int, ...]
    type_ports: tuple[int, ...]
    partial: bool
    none_ok: bool
    mints: bool
    doc: str
    late: bool = False
    """An equation that is a call of this builtin fires only when no other strong
    equation can (see CompiledEquation.late)."""
    inline: str = ""
    """Python source the compiler writes instead of a call, `{0}`, `{1}`, ... standing
    for the arguments' sources (`env` first for port builtins); for trivial builtins
    that a frame per call would cost more than the work."""
    stateful: bool = False
    """It reads or keeps per-run state (`Env.run_state`): its result is no function of
    its arguments and the call alone, so equations calling it are never memoised."""
    type_only: bool = False
    """It reads only the types (rank, shape, fields) of its port arguments, never
    their layouts."""
    shapes: bool = True
    """It may read the shapes of its port arguments (not only their ranks and fields)."""
    settles: bool = False
    """(stateful only) Its result is fixed for the rest of a run once computed: a later
    call on the same arguments (the same layouts, the same shape lists) returns it and
    only counts the call (reshape_ids' ReshapeMemo.done). The engine memoises such
    equations per call signature too, once their evaluation is kept (see
    CompiledEquation.settled)."""


BUILTINS: dict[str, Builtin] = {}


def builtin(
    name: str,
    nargs: int | tuple[int, int],
    *,
    port_args: tuple[int, ...] = (),
    type_ports: tuple[int, ...] = (),
    partial: bool = False,
    none_ok: bool = False,
    mints: bool = False,
    late: bool = False,
    inline: str = "",
    stateful: bool = False,
    type_only: bool = False,
    shapes: bool = True,
    settles: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `impl` as the builtin `name` taking `nargs` arguments (or a range).

    `mints` marks builtins that create fresh letters: fresh letters claim no axis
    identity, so a disagreement in them alone is not a conflict. `inline` is source
    the compiler may write instead of calling `impl` (see Builtin.inline); it must
    compute what `impl` does. `late` marks builtins whose equations yield to every
    other strong equation (see CompiledEquation.late). A builtin that calls
    `env.run_state` must say `stateful` (see Builtin.stateful): the engine memoises the
    results of equations without one per call signature.
    """
    lo, hi = (nargs, nargs) if isinstance(nargs, int) else nargs

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        doc = (impl.__doc__ or "").strip().splitlines()[0] if impl.__doc__ else ""
        BUILTINS[name] = Builtin(
            name, impl, lo, hi, port_args, type_ports, partial, none_ok, mints, doc, late,
            inline, stateful, type_only, shapes, settles,
        )
        return impl

    return register


_JUST_INT = {int}


def _int_list(v: Any, what: str) -> list[int]:
    # the common case (attribute values) without a Python frame per element; builtins
    # never change their inputs, so the list itself is returned
    if type(v) is list and set(map(type, v)) <= _JUST_INT:
        return v
    if isinstance(v, bool):
        raise RuleEvaluationError(f"{what}: expected integers, got {v!r}")
    if isinstance(v, int):
        return [v]
    if isinstance(v, (list, tuple)) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v
    ):
        return list(v)
    raise RuleEvaluationError(f"{what}: expected an integer or a list of integers, got {v!r}")


def _layout(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise RuleEvaluationError(f"{what}: expected a layout, got {v!r}")
    return v


# ---- type functions (read a port's type, not its layout) ------------------------


@builtin("ndim", 1, port_args=(0,), type_only=True, shapes=False)
def _ndim(env: Env, role: str) -> int | None:
    """The rank of a port (none when unknown)."""
    n = env.ndim(role)
    return n if n >= 0 else None


@builtin("shape", 1, port_args=(0,), type_only=True, inline="{0}.shape({1})")
def _shape(env: Env, role: str) -> list[L.Dim] | None:
    """The shape of a port (symbolic dims allowed)."""
    return env.shape(role)


@builtin("nfields", 1, port_args=(0,), type_only=True, shapes=False,
         inline="{0}.nfields({1})")
def _nfields(env: Env, role: str) -> int:
    """The number of fields of a tuple port."""
    return env.nfields(role)


# ---- partial readers ----------------------------------------------------------------


@builtin("first_known", 1, port_args=(0,), partial=True)
def _first_known(env: Env, role: str) -> str | None:
    """The first known field layout of a tuple port."""
    value = env.layout(role)
    if isinstance(value, tuple):
        for item in value:
            if isinstance(item, str):
                return item
        return None
    return value if isinstance(value, str) else None


@builtin("broadcast", (2, 8), port_args=(0, 1, 2, 3, 4, 5, 6, 7), type_ports=(0,),
         partial=True, mints=True)
def _broadcast(env: Env, out: str, *roles: str) -> str | None:
    """broadcast(out, a, b, ...): the layout of a broadcast result from its operands."""
    if env.ndim(out) < 0:
        return None  # an output of unknown rank takes no layout
    out_shape = env.shape(out)
    shapes = [env.shape(r) for r in roles]
    if out_shape is not None and None not in shapes:
        # the common case first: an operand of exactly the output's shape, all before it
        # well-formed (what broadcast_layout returns, without building its lists)
        for r, shape in zip(roles, shapes):
            lay = env.layout(r)
            if lay is not None and not (type(lay) is str and shape is not None
                                        and len(lay) == len(shape) and L.is_layout(lay)):
                break  # broadcast_layout below gives the error
            if lay is not None and shape == out_shape:
                return lay
    if out_shape is None or any(s is None for s in shapes):
        # no static shapes: fall back to ranks (the first known full-rank operand)
        layouts = [env.layout(r) for r in roles]
        ndims = [env.ndim(r) for r in roles]
        known = [
            (lay, n)
            for lay, n in zip(layouts, ndims, strict=True)
            if isinstance(lay, str) and n >= 0
        ]
        if not known:
            return None
        return L.broadcast_out([k[0] for k in known], [k[1] for k in known], env.ndim(out))
    return L.broadcast_layout([env.layout(r) for r in roles], shapes, out_shape)  # type: ignore[arg-type]


@builtin("tie", 2, port_args=(0, 1), type_ports=(1,), partial=True, late=True)
def _tie(env: Env, out: str, operand: str) -> str | None:
    """tie(out, x): a broadcast operand's layout from the output's (its last letters),
    when x's static shape broadcasts to the output's: every axis of x's extent is that
    output axis. None when the shapes do not prove it. Late: the operand's own chain
    goes first, so that an axis broadcast against itself is reported as such."""
    lay, shape, out_shape = env.layout(out), env.shape(operand), env.shape(out)
    if type(lay) is not str or shape is None or out_shape is None:
        return None
    n, m = len(shape), len(out_shape)
    if n > m or len(lay) != m or shape == out_shape:
        return None  # (an operand of the output's shape is the output: rules say so first)
    for d, e in zip(shape, out_shape[m - n :]):
        if d != 1 and d != e:
            return None
    want = lay[m - n :]
    have = env.layout(operand)
    if type(have) is str and have != want and len(have) == n:
        for i, (h, w) in enumerate(zip(have, want)):
            # the letter names another output axis, one this operand is stretched along
            # (or lacks): the same axis twice, which no layout can say
            q = lay.find(h)
            if h != w and shape[i] != 1 and q >= 0 and (q < m - n or shape[q - m + n] == 1):
                raise RuleEvaluationError(
                    f"axis '{h}' is broadcast against itself: {operand} '{have}' puts it on "
                    f"output axis {m - n + i}, the output '{lay}' has it on axis "
                    f"{q}; one letter cannot name both (a causal mask "
                    f"compares positions with themselves)")
    return want


@builtin("borrow", 2, port_args=(0, 1), type_ports=(0,), partial=True, mints=True)
def _borrow(env: Env, target: str, other: str) -> str | None:
    """borrow(x, y): x's layout from y's where their right-aligned extents match (not 1),
    fresh letters elsewhere; none when no axis matches (a scalar or an unrelated
    operand lends nothing)."""
    lay, shape, own = env.layout(other), env.shape(other), env.shape(target)
    if not isinstance(lay, str) or shape is None or own is None or len(lay) != len(shape):
        return None
    n, m = len(own), len(shape)
    chars: list[str | None] = [None] * n
    for i in range(n):
        j = i - (n - m)
        if 0 <= j < m and own[i] != 1 and own[i] == shape[j] and lay[j] not in chars:
            chars[i] = lay[j]
    if all(c is None for c in chars):
        return None
    return _fill_mints(chars, lay)


# ---- the layout algebra -------------------------------------------------------------


@builtin("permute", 2, none_ok=True)
def _permute(layout: Any, axes: Any) -> str | None:
    """`out[i] = layout[axes[i]]`; axes none means reversed."""
    if layout is None:
        return None
    axes_list = None if axes is None else _int_list(axes, "permute")
    return L.permute(layout if type(layout) is str else _layout(layout, "permute"), axes_list)


@builtin("unpermute", 2, none_ok=True)
def _unpermute(layout: Any, axes: Any) -> str | None:
    """The inverse of permute: the input layout given the permuted one."""
    if layout is None:
        return None
    return L.unpermute(
        layout if type(layout) is str else _layout(layout, "unpermute"),
        None if axes is None else _int_list(axes, "unpermute"),
    )


@builtin("drop", 2, none_ok=True)
def _drop(layout: Any, axes: Any) -> str | None:
    """Remove the letters at `axes` (none: all of them)."""
    if layout is None:
        return None
    return L.drop(_layout(layout, "drop"), None if axes is None else _int_list(axes, "drop"))


@builtin("insert", 2, mints=True)
def _insert(layout: Any, axes: Any) -> str:
    """Insert fresh letters at `axes` (output positions)."""
    return L.insert(_layout(layout, "insert"), _int_list(axes, "insert"))


@builtin("align_right", 2, mints=True)
def _align_right(layout: Any, n: Any) -> str:
    """The last n letters, padded on the left with fresh letters to length n."""
    s = _layout(layout, "align_right")
    k = int(n)
    if k <= len(s):
        return s[len(s) - k :]
    return L.fresh_letters(s, k - len(s)) + s


@builtin("initial", 1)
def _initial(n: Any) -> str:
    """The initial letters A, B, C, ... for rank n."""
    return L.initial(int(n))


@builtin("default_layout", 1, mints=True)
def _default_layout(n: Any) -> str:
    """MSC's assumed layout for rank n (NC, NCD, NCHW, ...). Its letters are assumed,
    not read from a neighbour: symbolic axes take their symbol's letter instead."""
    return L.default_layout(int(n))


@builtin("last", 1)
def _last(layout: Any) -> str:
    """The last letter."""
    return L.last(_layout(layout, "last"))


@builtin("suffix", 2)
def _suffix(layout: Any, n: Any) -> str:
    """The last n letters."""
    return L.suffix(_layout(layout, "suffix"), int(n))


@builtin("prefix", 2)
def _prefix(layout: Any, n: Any) -> str:
    """The first n letters."""
    return L.prefix(_layout(layout, "prefix"), int(n))


@builtin("fresh", 2, mints=True)
def _fresh(layout: Any, n: Any) -> str:
    """`n` fresh letters not used in `layout`."""
    return L.fresh_letters(_layout(layout, "fresh"), int(n))


@builtin("unique", 1, mints=True)
def _unique(layout: Any) -> str:
    """Make letters distinct: a repeated letter becomes a fresh one (left ones win)."""
    s = _layout(layout, "unique")
    out = ""
    for ch in s:
        out += ch if ch not in out else L.fresh_letters(s + out, 1)
    return out


@builtin("splice", 3, mints=True)
def _splice(layout: Any, axis: Any, sub: Any) -> str:
    """Replace the letter at `axis` by the letters `sub`; `sub` keeps its letters."""
    s = _layout(layout, "splice")
    part = _layout(sub, "splice")
    i = _int_list(axis, "splice")[0]
    if i < 0:
        i += len(s)
    if not 0 <= i < max(len(s), 1):
        raise RuleEvaluationError(f"splice: axis {axis} out of range for '{s}'")
    rest = s[:i] + s[i + 1 :]
    renamed = ""
    for ch in rest:
        renamed += ch if ch not in part else L.fresh_letters(s + part + renamed, 1)
    return renamed[:i] + part + renamed[i:]


@builtin("unsplice", 3, mints=True)
def _unsplice(layout: Any, axis: Any, n: Any) -> str:
    """Undo splice: replace the `n` letters at `axis` by one fresh letter."""
    s = _layout(layout, "unsplice")
    i, k = _int_list(axis, "unsplice")[0], int(n)
    rest_len = len(s) - k + 1
    if i < 0:
        i += rest_len
    if not 0 <= i < rest_len:
        raise RuleEvaluationError(f"unsplice: axis {axis} out of range for '{s}'")
    return s[:i] + L.fresh_letters(s, 1) + s[i + k :]


@builtin("letters", 3)
def _letters(layout: Any, start: Any, end: Any) -> str:
    """The letters from position `start` up to (not including) `end`."""
    s = _layout(layout, "letters")
    return s[int(start) : int(end)]


@builtin("unit_axes", 1)
def _unit_axes(shape: Any) -> list[int]:
    """The positions of the size-1 dims of a shape."""
    return [i for i, d in enumerate(shape) if d == 1]


@builtin("reshape", 3, mints=True)
def _reshape(layout: Any, src: Any, dst: Any) -> str | None:
    """The layout after reshaping `src` to `dst` (none when the shapes do not line up)."""
    return L.match_reshape(_layout(layout, "reshape"), src, dst)


@builtin("each", 2)
def _each(layout: Any, n: Any) -> tuple[Any, ...]:
    """A tuple of n copies of `layout` (for every field of a tuple port)."""
    return tuple(layout for _ in range(int(n)))


@builtin("reversed", 1)
def _reversed(n: Any) -> list[int]:
    """The axes n-1, ..., 0."""
    return list(range(int(n) - 1, -1, -1))


@builtin("range", (1, 2))
def _range(a: Any, b: Any = None) -> list[int]:
    """range(n) or range(a, b) as a list."""
    return list(range(int(a))) if b is None else list(range(int(a), int(b)))


@builtin("len", 1)
def _len(x: Any) -> int:
    """The length of a layout, list or tuple."""
    if isinstance(x, (str, list, tuple)):
        return len(x)
    raise RuleEvaluationError(f"len: expected a layout or a list, got {x!r}")


@builtin("axis", 2)
def _axis(a: Any, n: Any) -> int:
    """Normalise a possibly negative axis against rank n."""
    i = _int_list(a, "axis")[0]
    return i + int(n) if i < 0 else i


@builtin("axes", 2, none_ok=True)
def _axes(a: Any, n: Any) -> list[int] | None:
    """Normalise a list of axes against rank n (none means every axis)."""
    if n is None:
        return None
    if a is None:
        return list(range(int(n)))
    return sorted(i + int(n) if i < 0 else i for i in _int_list(a, "axes"))


@builtin("is_none", 1, none_ok=True, inline="({0} is None)")
def _is_none(x: Any) -> bool:
    """True when x is none."""
    return x is None


@builtin("contains", 2)
def _contains(container: Any, x: Any) -> bool:
    """True when x is in the layout or list."""
    if isinstance(container, (str, list, tuple)):
        return x in container
    raise RuleEvaluationError(f"contains: expected a layout or a list, got {container!r}")


@builtin("min", 2)
def _min(a: Any, b: Any) -> Any:
    """The smaller of two integers."""
    return min(a, b)


@builtin("max", 2)
def _max(a: Any, b: Any) -> Any:
    """The larger of two integers."""
    return max(a, b)


def describe() -> list[tuple[str, str]]:
    """(signature-ish name, one-line doc) of every builtin, sorted."""
    return sorted((b.name, b.doc) for b in BUILTINS.values())


def arity_text(b: Builtin) -> str:
    """'2' or '2 to 8': how many arguments `b` takes."""
    return str(b.min_args) if b.min_args == b.max_args else f"{b.min_args} to {b.max_args}"



# ---- builtins of the rule library (per-axis broadcasting, reshape memory, einsum, ...) ----
#
# Appended for the op library (rules/*.rules). Helpers first, then the builtins.

_ONE_DIM: tuple[int, tuple[str, ...]] = (1, ())


def _canon(d: Any) -> tuple[int, tuple[str, ...]] | None:
    """A dim as (integer coefficient, sorted symbolic factors); None when not a size."""
    coef, syms = 1, []
    for f in d if isinstance(d, tuple) else (d,):
        if isinstance(f, bool):
            return None
        if isinstance(f, int):
            coef *= f
        elif isinstance(f, str) and f:
            syms.append(f)
        else:
            return None
    return (coef, tuple(sorted(syms)))


def _fill_mints(chars: list[str | None], avoid: str) -> str:
    """Replace the None entries of `chars` by fresh letters avoiding `avoid` and `chars`."""
    used = avoid + "".join(c for c in chars if c is not None)
    missing = sum(1 for c in chars if c is None)
    fresh = iter(L.fresh_letters("".join(dict.fromkeys(used)), missing))
    return "".join(c if c is not None else next(fresh) for c in chars)


def _dedupe(chars: list[str | None], priority: list[int]) -> list[str | None]:
    """Keep each letter once: the axis of highest priority (then leftmost) keeps it,
    the others become None (to be minted)."""
    order = sorted(range(len(chars)), key=lambda i: (-priority[i], i))
    seen: set[str] = set()
    out = list(chars)
    for i in order:
        c = out[i]
        if c is None:
            continue
        if c in seen:
            out[i] = None
        else:
            seen.add(c)
    return out


class ReshapeMemo:
    """Splits and merges seen by `reshape_ids` in one inference run.

    `split[(letter, size)] = (part letters, part sizes)` and the inverse
    `merge[(part letters, part sizes)] = (letter, size)`: a later reshape that undoes
    a split (merging the same letters back) or a merge (splitting the merged letter
    into the same sizes) gets the original letters back instead of fresh ones.
    """

    def __init__(self) -> None:
        self.split: dict[tuple[str, Any], tuple[tuple[str, ...], tuple[Any, ...]]] = {}
        self.merge: dict[tuple[tuple[str, ...], tuple[Any, ...]], tuple[str, Any]] = {}
        # The result of a call by its layout and the identity of its shape lists (the
        # engine shares one list per distinct shape): no tuple conversion and hashing
        # of dims per call. Each entry holds its two lists, so their ids cannot be
        # reused while it lives. The same inputs give the same result all run long: the
        # memory's entries are set once and never changed, and a call that misses one
        # records exactly the letters it returns, so a later identical call finds them.
        self.done: dict[tuple[str, int, int], tuple[Any, Any, str | None]] = {}

        # letter -> the letters split from it or merged into it (see `related`)
        self.parts: dict[str, set[str]] = {}
        # calls of reshape_ids, and those that minted letters the memory did not give
        # back (the engine tells a reshape that names axes anew from one that repeats)
        self.calls = 0
        self.minted = 0

        # while not None, what calls add (undo() takes it back: the engine defers an
        # evaluation that minted letters, and a deferred one must leave no trace)
        self.journal: list[tuple[dict[Any, Any], Any]] | None = None

    def record(self, whole: str, size: Any, parts: tuple[str, ...], sizes: tuple[Any, ...]) -> None:
        """Remember that `whole` (of `size`) is `parts` (of `sizes`), both ways."""
        journal = self.journal
        if journal is not None:
            for table, key in ((self.split, (whole, size)), (self.merge, (parts, sizes))):
                if key not in table:
                    journal.append((table, key))
            known = self.parts.get(whole, set())
            journal.extend((self.parts, (whole, c)) for c in parts if c not in known)
        self.split.setdefault((whole, size), (parts, sizes))
        self.merge.setdefault((parts, sizes), (whole, size))
        self.parts.setdefault(whole, set()).update(parts)

    def remember(self, key: tuple[str, int, int], entry: tuple[Any, Any, str | None]) -> None:
        """Keep the result of a call (see `done`)."""
        if self.journal is not None:
            self.journal.append((self.done, key))
        self.done[key] = entry

    def undo(self, journal: list[tuple[dict[Any, Any], Any]] | None) -> None:
        """Take back what the calls recorded in `journal` added."""
        for table, key in reversed(journal or ()):
            if table is self.parts:
                whole, c = key
                self.parts[whole].discard(c)
                if not self.parts[whole]:
                    del self.parts[whole]
            else:
                table.pop(key, None)

    def related(self, letters: str) -> str:
        """`letters` and every letter a reshape of this run merged into one of them or
        split from one, transitively: the letters a later reshape may give back."""
        seen = dict.fromkeys(letters)
        stack = list(letters)
        while stack:
            for c in self.parts.get(stack.pop(), ()):
                if c not in seen:
                    seen[c] = None
                    stack.append(c)
        return "".join(seen)


def _memo_of(env: Any) -> ReshapeMemo | None:
    """The reshape memory of one inference run (kept by the engine's per-run state)."""
    state = getattr(env, "run_state", None)
    return state("reshape_memo", ReshapeMemo) if state is not None else None


@builtin("fresh_beside", 2, port_args=(0,), partial=True, mints=True, stateful=True)
def _fresh_beside(env: Env, role: str, n: Any) -> str | None:
    """`n` fresh letters not used by a port's layout, nor by the letters a reshape of
    this run merged into it (a table looked up by flattened indices must not take the
    letters the indices had before they were flattened)."""
    layout = env.layout(role)
    if not isinstance(layout, str):
        return None
    memo = _memo_of(env)
    return L.fresh_letters(memo.related(layout) if memo is not None else layout, int(n))


@builtin("reshape_ids", 3, port_args=(0,), partial=True, none_ok=True, mints=True,
         stateful=True, settles=True)
def _reshape_ids(env: Env, role: str, src: Any, dst: Any) -> str | None:
    """`reshape` that remembers splits and merges within one inference run: merging
    letters that an earlier reshape split from one axis gives that axis's letter back,
    and splitting a merged axis into the same sizes gives the merged letters back (the
    heads of attention, batch*heads for bmm, batch*seq for linear layers)."""
    layout = env.layout(role)
    if not isinstance(layout, str) or src is None or dst is None:
        return None
    memo = _memo_of(env)
    if memo is None:
        return _reshape_info(layout, tuple(src), tuple(dst))[0]
    memo.calls += 1
    key = (layout, id(src), id(dst))
    done = memo.done.get(key)
    if done is not None:
        return done[2]
    base, plan = _reshape_info(layout, tuple(src), tuple(dst))
    if base is None or not plan:
        memo.remember(key, (src, dst, base))
        if base is not None and any(c not in layout for c in base):
            memo.minted += 1
        return base
    out = list(base)
    guessed = env.run_state("guessed", set)
    fresh = False  # did a split or merge miss the memory (and name axes anew)?
    for split, gs, gd, size, sizes in plan:
        if split:  # one axis split into several
            whole = layout[gs[0]]
            rec = memo.split.get((whole, size))
            if rec is not None and rec[1] == sizes:
                _restore(out, gd, rec[0])
            else:
                remint_apart(out, gd, guessed, layout)
                memo.record(whole, size, tuple(out[j] for j in gd), sizes)
                fresh = True
        else:  # several axes merged into one
            parts = tuple(layout[i] for i in gs)
            merged = memo.merge.get((parts, sizes))
            if merged is not None and merged[1] == size:
                _restore(out, gd, (merged[0],))
            else:
                remint_apart(out, gd, guessed, layout)
                memo.record(out[gd[0]], size, parts, sizes)
                fresh = True
    result = "".join(out)
    memo.remember(key, (src, dst, result))
    if fresh:
        memo.minted += 1
    return result


_Plan = tuple[tuple[bool, tuple[int, ...], tuple[int, ...], Any, tuple[Any, ...]], ...]


@functools.lru_cache(maxsize=16384)
def _reshape_info(
    layout: str, src: tuple[L.Dim, ...], dst: tuple[L.Dim, ...]
) -> tuple[str | None, _Plan]:
    """`match_reshape` and the reshape's plan in one memoised call."""
    base = L.match_reshape(layout, src, dst)
    return base, (_reshape_plan(src, dst) if base is not None else ())


def _reshape_plan(src: tuple[L.Dim, ...], dst: tuple[L.Dim, ...]) -> _Plan:
    """The splits and merges of a reshape, with their sizes in product form:
    (is a split, source axes, destination axes, size of the single axis, sizes of the
    several axes). Memoised through `_reshape_info`."""
    groups = L.reshape_groups(src, dst)
    plan: list[tuple[bool, tuple[int, ...], tuple[int, ...], Any, tuple[Any, ...]]] = []
    for gs, gd in groups or ():
        if len(gs) == 1 and len(gd) > 1:
            plan.append((True, gs, gd, L.dim_product(src[gs[0]]),
                         tuple(L.dim_product(dst[j]) for j in gd)))
        elif len(gs) > 1 and len(gd) == 1:
            plan.append((False, gs, gd, L.dim_product(dst[gd[0]]),
                         tuple(L.dim_product(src[i]) for i in gs)))
    return tuple(plan)


def remint_apart(chars: list[str], positions: Iterable[int], guessed: Container[str],
                 avoid: Container[str]) -> None:
    """Re-mint, in place, the letters at `positions` of `chars` that an initial-letters
    guess of this run gave: a minted letter and a guessed one were chosen apart and
    claim no shared axis. New letters avoid `chars`, the guesses and `avoid`; a letter
    stays when none is left."""
    for j in positions:
        if chars[j] in guessed:
            free = [c for c in L.initial(26)
                    if c not in chars and c not in guessed and c not in avoid]
            if free:
                chars[j] = free[0]


def _restore(out: list[str], positions: tuple[int, ...], letters: tuple[str, ...]) -> None:
    """Put `letters` at `positions` of `out` unless one of them is used elsewhere."""
    wanted = set(letters)
    if len(wanted) != len(letters):
        return
    lo, hi = positions[0], positions[-1] + 1
    if hi - lo == len(positions) and len(letters) == len(positions):
        # a run of axes (what reshape groups are): test the letters outside it at once
        if wanted.isdisjoint(out[:lo]) and wanted.isdisjoint(out[hi:]):
            out[lo:hi] = letters
        return
    for k, c in enumerate(out):
        if c in wanted and k not in positions:
            return
    for k, c in zip(positions, letters, strict=False):
        out[k] = c


def _einsum_parse(subscripts: str, ndims: list[int]) -> tuple[list[list[str]], list[str]]:
    """Subscripts -> per-operand axis labels and output labels, ellipsis expanded.

    Ellipsis axes are labelled `.k` (k counted from the right end of the ellipsis), so
    broadcast ellipsis axes of different operands share labels.
    """
    text = subscripts.replace(" ", "")
    if "->" in text:
        lhs, rhs = text.split("->", 1)
        explicit = True
    else:
        lhs, rhs, explicit = text, "", False
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise RuleEvaluationError(
            f"einsum: '{subscripts}' has {len(terms)} operand(s), the call has {len(ndims)}"
        )

    def expand(term: str, nd: int) -> list[str]:
        if "..." in term:
            head, tail = term.split("...", 1)
            e = nd - len(head) - len(tail)
            if e < 0:
                raise RuleEvaluationError(f"einsum: '{term}' does not fit rank {nd}")
            return [*head, *(f".{e - 1 - k}" for k in range(e)), *tail]
        if len(term) != nd:
            raise RuleEvaluationError(f"einsum: '{term}' does not fit rank {nd}")
        return list(term)

    ins = [expand(t, nd) for t, nd in zip(terms, ndims, strict=False)]
    ell = max((sum(1 for x in t if x.startswith(".")) for t in ins), default=0)
    if explicit:
        if "..." in rhs:
            head, tail = rhs.split("...", 1)
            out = [*head, *(f".{ell - 1 - k}" for k in range(ell)), *tail]
        else:
            out = list(rhs)
    else:
        counts: dict[str, int] = {}
        for t in ins:
            for x in t:
                if not x.startswith("."):
                    counts[x] = counts.get(x, 0) + 1
        once = sorted(x for x, c in counts.items() if c == 1)
        out = [f".{ell - 1 - k}" for k in range(ell)] + once
    return ins, out


@builtin("einsum_out", 2, port_args=(1,), partial=True, mints=True)
def _einsum_out(env: Env, subscripts: Any, role: str) -> str | None:
    """The output layout of an einsum from its operands (a tuple port): every output
    subscript takes the letter of the first operand that has it."""
    value = env.layout(role)
    if not isinstance(value, tuple) or any(not isinstance(x, str) for x in value):
        return None
    ins, out = _einsum_parse(str(subscripts), [len(x) for x in value])
    label: dict[str, str] = {}
    for labels, lay in zip(ins, value, strict=False):
        for lab, ch in zip(labels, lay, strict=False):
            label.setdefault(lab, ch)
    chars: list[str | None] = [label.get(lab) for lab in out]
    return _fill_mints(_dedupe(chars, [0] * len(chars)), "".join(value))


def _einsum_ranks(subscripts: str, value: tuple[Any, ...]) -> list[int] | None:
    """Operand ranks: from a known layout, else from a term without ellipsis."""
    lhs = subscripts.replace(" ", "").split("->", 1)[0]
    terms = lhs.split(",")
    if len(terms) != len(value):
        return None
    ranks = []
    for term, lay in zip(terms, value, strict=False):
        if isinstance(lay, str):
            ranks.append(len(lay))
        elif "..." in term:
            return None
        else:
            ranks.append(len(term))
    return ranks


@builtin("einsum_in", 3, port_args=(1, 2), partial=True, mints=True)
def _einsum_in(env: Env, subscripts: Any, role: str, out_role: str) -> Any:
    """The layouts of the still-unknown operands of an einsum (a tuple; none for known
    ones) from its output: output subscripts take the output's letters, contracted ones
    another operand's letter, else a fresh one. (An operand whose term has an ellipsis
    is left alone: its rank is not known before its layout.)"""
    out = env.layout(out_role)
    value = env.layout(role)
    if not isinstance(out, str) or not isinstance(value, tuple):
        return None
    ranks = _einsum_ranks(str(subscripts), value)
    if ranks is None:
        return None
    ins, outs = _einsum_parse(str(subscripts), ranks)
    label = dict(zip(outs, out, strict=False))
    other: dict[str, str] = {}
    for labels, lay in zip(ins, value, strict=False):
        if isinstance(lay, str):
            for lab, ch in zip(labels, lay, strict=False):
                if lab not in label:
                    other.setdefault(lab, ch)
    result: list[str | None] = []
    for labels, lay in zip(ins, value, strict=False):
        if isinstance(lay, str):
            result.append(None)  # known operands keep their letters (as matmul's do)
            continue
        chars = [label.get(lab) or other.get(lab) for lab in labels]
        prio = [1 if lab in label else 0 for lab in labels]
        result.append(_fill_mints(_dedupe(chars, prio), out))
    return tuple(result)


def _field_shapes(env: Any, role: str) -> list[Any] | None:
    """The shapes of the fields of a tuple port, when the Env can tell (an optional Env
    method, `field_shape(role, i)`; the engine has it), else None (callers then work
    from letters alone)."""
    field_shape = getattr(env, "field_shape", None)
    if callable(field_shape):
        return [field_shape(role, i) for i in range(env.nfields(role))]
    return None


@builtin("bcast_fields", 2, port_args=(0,), partial=True, mints=True)
def _bcast_fields(env: Env, role: str, n: Any) -> str | None:
    """Broadcast the layouts of a tuple port's fields to rank n (right-aligned): an axis
    takes the letter of the first field that has an extent there (not a stretched size
    1); with no shapes to tell, a letter every covering field agrees on; else a fresh one.
    Waits until every field is known."""
    value = env.layout(role)
    if not isinstance(value, tuple) or any(not isinstance(x, str) for x in value):
        return None
    k = int(n)
    shapes = _field_shapes(env, role) or [None] * len(value)
    chars: list[str | None] = []
    prio: list[int] = []
    for i in range(k):
        cover = [(lay[i - (k - len(lay))], shp[i - (k - len(lay))] if shp else None)
                 for lay, shp in zip(value, shapes, strict=False) if i - (k - len(lay)) >= 0]
        extent = [c for c, d in cover if d is not None and _canon(d) != _ONE_DIM]
        known = all(d is not None for _, d in cover)
        if extent:
            chars.append(extent[0])
            prio.append(1)
        elif known and cover:
            chars.append(cover[0][0])  # every field is 1 here: the output is 1 too
            prio.append(0)
        else:
            letters = {c for c, _ in cover}
            chars.append(letters.pop() if len(letters) == 1 else None)
            prio.append(0)
    return _fill_mints(_dedupe(chars, prio), "".join(value))


@builtin("remove", 2)
def _remove(layout: Any, letters: Any) -> str:
    """The layout without the given letters."""
    s = _layout(layout, "remove")
    gone = set(_layout(letters, "remove"))
    return "".join(c for c in s if c not in gone)


@builtin("concat_fields", 1, port_args=(0,), partial=True)
def _concat_fields(env: Env, role: str) -> str | None:
    """The layouts of all fields of a tuple port joined (none until all are known)."""
    value = env.layout(role)
    if not isinstance(value, tuple) or any(not isinstance(x, str) for x in value):
        return None
    return "".join(value)


@builtin("split_letters", 1)
def _split_letters(layout: Any) -> tuple[str, ...]:
    """A tuple with one single-letter layout per letter (for tuples of 1-D tensors)."""
    return tuple(_layout(layout, "split_letters"))


def _index_map(text: Any) -> tuple[list[str], list[str]]:
    """(input variable names, output expressions) of an IndexMap's text form
    `T.index_map(lambda a, b: (b, a // 4, ...))`."""
    s = str(text)
    start = s.find("lambda")
    colon = s.find(":", start)
    if start < 0 or colon < 0:
        raise RuleEvaluationError(f"cannot read the index map {s!r}")
    params = [p.strip() for p in s[start + len("lambda") : colon].split(",") if p.strip()]
    body = s[colon + 1 :].strip()
    depth, items, cur = 0, [], ""
    for ch in body:
        if ch in "([":
            depth += 1
            if depth == 1:
                continue
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                items.append(cur.strip())
                break
        elif ch == "," and depth == 1:
            items.append(cur.strip())
            cur = ""
            continue
        if depth >= 1:
            cur += ch
    return params, [x for x in items if x]


@builtin("index_map_out", 2, mints=True)
def _index_map_out(layout: Any, index_map: Any) -> str:
    """layout_transform forward: an output axis that is an input axis unchanged keeps its
    letter; an output computed from input axes (c // 4, c % 4) gets a fresh letter."""
    s = _layout(layout, "index_map_out")
    params, outs = _index_map(index_map)
    if len(params) != len(s):
        raise RuleEvaluationError(f"index map over {len(params)} axes for layout '{s}'")
    pos = {p: i for i, p in enumerate(params)}
    chars: list[str | None] = [s[pos[o]] if o in pos else None for o in outs]
    return _fill_mints(_dedupe(chars, [0] * len(chars)), s)


@builtin("index_map_in", 2, mints=True)
def _index_map_in(layout: Any, index_map: Any) -> str:
    """layout_transform backward: an input axis that appears unchanged in the output
    takes that output letter; other input axes get fresh letters."""
    s = _layout(layout, "index_map_in")
    params, outs = _index_map(index_map)
    if len(outs) != len(s):
        raise RuleEvaluationError(f"index map with {len(outs)} outputs for layout '{s}'")
    where = {o: j for j, o in enumerate(outs)}
    chars: list[str | None] = [s[where[p]] if p in where else None for p in params]
    return _fill_mints(_dedupe(chars, [0] * len(chars)), s)

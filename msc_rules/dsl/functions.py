"""The builtin functions of the rule language: a decorator-registered table.

Each builtin says which of its arguments must be bare ports (type functions such
as `ndim(data)` read a port's type, not its layout) and whether it reads its port
arguments partially (fires when any of them is known; `type_ports` are port
arguments it only reads the type of). Every other argument is an
evaluated value; unless a builtin accepts `none`, a `none` argument makes the call
`none` (the equation then decides nothing).
"""

from __future__ import annotations

from collections.abc import Callable
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
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `impl` as the builtin `name` taking `nargs` arguments (or a range).

    `mints` marks builtins that create fresh letters: fresh letters claim no axis
    identity, so a disagreement in them alone is not a conflict.
    """
    lo, hi = (nargs, nargs) if isinstance(nargs, int) else nargs

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        doc = (impl.__doc__ or "").strip().splitlines()[0] if impl.__doc__ else ""
        BUILTINS[name] = Builtin(
            name, impl, lo, hi, port_args, type_ports, partial, none_ok, mints, doc
        )
        return impl

    return register


def _int_list(v: Any, what: str) -> list[int]:
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


@builtin("ndim", 1, port_args=(0,))
def _ndim(env: Env, role: str) -> int | None:
    """The rank of a port (none when unknown)."""
    n = env.ndim(role)
    return n if n >= 0 else None


@builtin("shape", 1, port_args=(0,))
def _shape(env: Env, role: str) -> list[L.Dim] | None:
    """The shape of a port (symbolic dims allowed)."""
    return env.shape(role)


@builtin("nfields", 1, port_args=(0,))
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
    out_shape = env.shape(out)
    shapes = [env.shape(r) for r in roles]
    if out_shape is None or any(s is None for s in shapes):
        # no static shapes: fall back to ranks (the first known full-rank operand)
        layouts = [env.layout(r) for r in roles]
        ndims = [env.ndim(r) for r in roles]
        known = [(lay, n) for lay, n in zip(layouts, ndims) if isinstance(lay, str) and n >= 0]
        if not known:
            return None
        return L.broadcast_out([k[0] for k in known], [k[1] for k in known], env.ndim(out))
    return L.broadcast_layout([env.layout(r) for r in roles], shapes, out_shape)  # type: ignore[arg-type]


# ---- the layout algebra -------------------------------------------------------------


@builtin("permute", 2, none_ok=True)
def _permute(layout: Any, axes: Any) -> str | None:
    """`out[i] = layout[axes[i]]`; axes none means reversed."""
    if layout is None:
        return None
    return L.permute(_layout(layout, "permute"), None if axes is None else _int_list(axes, "permute"))


@builtin("unpermute", 2, none_ok=True)
def _unpermute(layout: Any, axes: Any) -> str | None:
    """The inverse of permute: the input layout given the permuted one."""
    if layout is None:
        return None
    return L.unpermute(
        _layout(layout, "unpermute"), None if axes is None else _int_list(axes, "unpermute")
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


@builtin("default_layout", 1)
def _default_layout(n: Any) -> str:
    """MSC's assumed layout for rank n (NC, NCD, NCHW, ...)."""
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


@builtin("is_none", 1, none_ok=True)
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


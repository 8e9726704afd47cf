"""Layout values and their algebra (pure Python, no TVM).

A layout is a ``str`` of distinct upper-case ASCII letters, one per tensor axis; ``""`` is
the layout of a 0-d tensor. The same letter on two tensors means the same logical axis.
Every function here is pure; invalid input raises :class:`LayoutError`. Negative axes are
accepted wherever axes are taken. See ``reference/msc-conventions.md`` sections 3.1, 3.2, 6.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from itertools import pairwise

__all__ = [
    "Axes", "Dim", "Layout", "LayoutError", "broadcast_layout", "broadcast_out",
    "default_layout", "drop",
    "fresh_letters", "initial", "insert", "is_layout", "last", "match_reshape", "permute",
    "prefix", "reshape_back", "reshape_groups", "dim_product", "suffix", "unpermute",
]  # fmt: skip

Layout = str
"""A string of distinct upper-case letters, one per axis."""

Axes = int | Sequence[int] | None
"""One axis, several axes, or ``None`` (meaning all axes, or reversed for permutes)."""

Dim = int | str | tuple[int | str, ...]
"""A known size, an atomic symbolic size (``"n"``), or a product of factors (``("n", 4)``)."""

_LETTERS = string.ascii_uppercase
_MSC_ORDER = "NCHWD"
_DEFAULTS = {0: "", 1: "C", 2: "NC", 3: "NCD", 4: "NCHW", 5: "NCDHW"}


class LayoutError(ValueError):
    """Invalid layout, axis, rank or shape given to a layout function."""


_LETTER_SET = frozenset(_LETTERS)


def is_layout(s: str) -> bool:
    """Return whether ``s`` is made of distinct letters ``A``-``Z``."""
    if not isinstance(s, str):
        return False
    letters = set(s)
    return len(letters) == len(s) and letters <= _LETTER_SET


def _check(layout: str) -> None:
    """Raise LayoutError unless ``layout`` is a valid layout."""
    if is_layout(layout):
        return
    if not isinstance(layout, str):
        raise LayoutError(f"a layout must be a str, not {type(layout).__name__}")
    bad = [c for c in layout if c not in _LETTERS]
    if bad:
        raise LayoutError(f"invalid layout {layout!r}: {bad[0]!r} is not a letter A-Z")
    dups = sorted({c for c in layout if layout.count(c) > 1})
    if dups:
        raise LayoutError(f"invalid layout {layout!r}: duplicate letter {dups[0]!r}")


def _check_rank(ndim: int) -> None:
    if ndim < 0 or ndim > len(_LETTERS):
        raise LayoutError(f"rank {ndim} is not representable (must be 0..26)")


def _axes(axes: int | Sequence[int], rank: int, where: str) -> list[int]:
    """Normalise axes against ``rank``; reject out-of-range and repeated axes."""
    out = []
    for a in [axes] if isinstance(axes, int) else list(axes):
        if not -rank <= a < rank:
            raise LayoutError(f"axis {a} out of range for {where}")
        norm = a + rank if a < 0 else a
        if norm in out:
            raise LayoutError(f"axis {a} repeated for {where}")
        out.append(norm)
    return out


def initial(ndim: int) -> Layout:
    """Return the initial letters ``"ABC..."`` for a tensor of rank ``ndim``."""
    _check_rank(ndim)
    return _LETTERS[:ndim]


def default_layout(ndim: int) -> Layout:
    """Return MSC's assumed layout for rank ``ndim`` (``NCHW`` for 4-D, ...)."""
    _check_rank(ndim)
    return _DEFAULTS.get(ndim, _LETTERS[:ndim])


def _perm(layout: Layout, axes: int | Sequence[int]) -> list[int]:
    """Check that ``axes`` is a permutation of the axes of ``layout``; return it normalised."""
    _check(layout)
    where = f"layout {layout!r} (rank {len(layout)})"
    norm = _axes(axes, len(layout), where)
    if len(norm) != len(layout):
        raise LayoutError(f"axes {axes!r} are not a permutation of the axes of {where}")
    return norm


def permute(layout: Layout, axes: Axes = None) -> Layout:
    """Return ``out`` with ``out[i] = layout[axes[i]]``; ``None`` reverses."""
    if axes is None:
        _check(layout)
        return layout[::-1]
    return _permute(layout, axes if isinstance(axes, int) else tuple(axes), False)


def unpermute(layout: Layout, axes: Axes = None) -> Layout:
    """Invert :func:`permute`: from the permuted layout and the same axes, give the original."""
    if axes is None:
        _check(layout)
        return layout[::-1]
    return _permute(layout, axes if isinstance(axes, int) else tuple(axes), True)


@functools.lru_cache(maxsize=16384)
def _permute(layout: Layout, axes: int | tuple[int, ...], inverse: bool) -> Layout:
    """permute / unpermute, memoised: models permute the same layouts the same way."""
    norm = _perm(layout, axes if isinstance(axes, int) else list(axes))
    if not inverse:
        return "".join(layout[a] for a in norm)
    out = [""] * len(layout)
    for i, a in enumerate(norm):
        out[a] = layout[i]
    return "".join(out)


def drop(layout: Layout, axes: Axes = None) -> Layout:
    """Remove the letters at ``axes`` (``None`` removes all, giving ``""``)."""
    _check(layout)
    if axes is None:
        return ""
    gone = set(_axes(axes, len(layout), f"layout {layout!r} (rank {len(layout)})"))
    return "".join(c for i, c in enumerate(layout) if i not in gone)


def fresh_letters(in_use: str, count: int) -> str:
    """Return ``count`` new letters by MSC's rule, each new letter becoming in use.

    If the letters in use are exactly the first k of ``NCHWD`` (1 <= k < 5) the next is
    the (k+1)-th of that list (``NC`` grows into ``NCHW``); otherwise it is the smallest
    letter from ``A`` not in use. Nothing in use is no evidence of a batch or an image,
    so letters from nothing start at ``A``.
    """
    if any(c not in _LETTERS for c in in_use):
        raise LayoutError(f"letters in use {in_use!r} must be letters A-Z")
    if count < 0:
        raise LayoutError(f"cannot allocate {count} letters")
    used, out = set(in_use), list[str]()
    for _ in range(count):
        k = len(used)
        if 1 <= k < len(_MSC_ORDER) and used == set(_MSC_ORDER[:k]):
            letter = _MSC_ORDER[k]
        else:
            free = [c for c in _LETTERS if c not in used]
            if not free:
                raise LayoutError(
                    f"no fresh letter left: all 26 are in use ({in_use!r} + {''.join(out)!r})"
                )
            letter = free[0]
        used.add(letter)
        out.append(letter)
    return "".join(out)


def insert(layout: Layout, axes: Axes, ndim_out: int | None = None) -> Layout:
    """Insert fresh letters at ``axes``, given in OUTPUT coordinates.

    The output rank is ``len(layout) + len(axes)`` (checked against ``ndim_out`` if given);
    negative axes are normalised with the output rank, so ``-1`` appends. ``axes=None`` means
    every output axis (needs ``ndim_out``; ``layout`` must then be ``""``). Fresh letters are
    allocated in ascending position order.
    """
    _check(layout)
    if axes is None:
        if ndim_out is None:
            raise LayoutError("insert with axes=None needs ndim_out")
        axes = range(ndim_out)
    count = 1 if isinstance(axes, int) else len(axes)
    rank = len(layout) + count
    if ndim_out is not None and ndim_out != rank:
        raise LayoutError(
            f"inserting {count} axis(es) into layout {layout!r} (rank {len(layout)}) "
            f"gives rank {rank}, not {ndim_out}"
        )
    _check_rank(rank)
    where = f"inserting {count} axis(es) into layout {layout!r} (output rank {rank})"
    positions = set(_axes(axes, rank, where))
    new, old = iter(fresh_letters(layout, count)), iter(layout)
    return "".join(next(new) if i in positions else next(old) for i in range(rank))


def prefix(layout: Layout, n: int) -> Layout:
    """Return the first ``n`` letters of ``layout``."""
    _check(layout)
    if not 0 <= n <= len(layout):
        raise LayoutError(f"cannot take {n} letters of layout {layout!r} (rank {len(layout)})")
    return layout[:n]


def suffix(layout: Layout, n: int) -> Layout:
    """Return the last ``n`` letters of ``layout``."""
    _check(layout)
    if not 0 <= n <= len(layout):
        raise LayoutError(f"cannot take {n} letters of layout {layout!r} (rank {len(layout)})")
    return layout[len(layout) - n :]


def last(layout: Layout) -> Layout:
    """Return the last letter of ``layout`` (``""`` for ``""``)."""
    return suffix(layout, min(1, len(layout)))


def broadcast_out(
    layouts: Sequence[Layout | None], ndims: Sequence[int], out_ndim: int
) -> Layout | None:
    """Return the output layout of a numpy-style broadcast from the known operand layouts.

    The first known operand of full rank gives the output layout. Operands are right-aligned,
    so only a full-rank operand covers output axis 0: combining the letters of lower-rank
    operands can never name every output axis, and without a known full-rank operand the
    result is ``None``. Known layouts are checked against their operand ranks.
    """
    if len(layouts) != len(ndims):
        raise LayoutError(f"{len(layouts)} layouts given for {len(ndims)} operands")
    _check_rank(out_ndim)
    found: Layout | None = None
    for lay, nd in zip(layouts, ndims, strict=True):
        if nd > out_ndim:
            raise LayoutError(f"operand of rank {nd} cannot broadcast to rank {out_ndim}")
        if lay is not None:
            _check(lay)
            if len(lay) != nd:
                raise LayoutError(
                    f"layout {lay!r} has rank {len(lay)} but its operand has rank {nd}"
                )
            if found is None and nd == out_ndim:
                found = lay
    return found


def broadcast_layout(
    layouts: Sequence[Layout | None],
    shapes: Sequence[Sequence[Dim]],
    out_shape: Sequence[Dim],
) -> Layout | None:
    """The output layout of a numpy-style broadcast, from operand layouts and shapes.

    An operand whose shape equals the output's gives its layout. Otherwise, once every
    operand is known, each output axis takes the letter of the first operand whose
    right-aligned dim equals the output dim (a stretched size-1 axis is a different
    logical axis, so it lends no letter); axes no operand covers get fresh letters.
    Returns None while that cannot be decided yet.
    """
    if len(layouts) != len(shapes):
        raise LayoutError(f"{len(layouts)} layouts given for {len(shapes)} operands")
    out_shape = list(out_shape)
    for lay, shape in zip(layouts, shapes, strict=True):
        if lay is not None:
            _check(lay)
            if len(lay) != len(shape):
                raise LayoutError(
                    f"layout {lay!r} has rank {len(lay)} but its operand has rank {len(shape)}"
                )
            if list(shape) == out_shape:
                return lay
    if any(lay is None for lay in layouts):
        return None
    n = len(out_shape)
    letters: list[str | None] = [None] * n
    used: set[str] = set()
    # Axis by axis: when two operands offer one letter for different output axes (two
    # position vectors of one sequence, broadcast into a [.., s, s] mask), the leftmost
    # axis keeps it, whatever the operand order, so lhs-rhs and rhs-lhs agree.
    for i in range(n):
        for lay, shape in zip(layouts, shapes, strict=True):
            assert lay is not None
            j = i - (n - len(shape))
            if j >= 0 and shape[j] == out_shape[i] and lay[j] not in used:
                letters[i] = lay[j]
                used.add(lay[j])
                break
    # fresh means fresh: not a letter any operand uses (a stretched size-1 axis's letter
    # is not the output axis either)
    taken = "".join(dict.fromkeys("".join(used) + "".join(lay or "" for lay in layouts)))
    for i in range(n):
        if letters[i] is None:
            letters[i] = fresh_letters(taken, 1)
            taken += letters[i] or ""
    return "".join(x or "" for x in letters)


_Prod = tuple[int, tuple[str, ...]]
_ONE: _Prod = (1, ())


def _prod(d: Dim) -> _Prod:
    """Canonical product form of a dim: (integer coefficient, sorted symbolic factors)."""
    coef, syms = 1, []
    for f in d if isinstance(d, tuple) else (d,):
        if isinstance(f, str) and f:
            syms.append(f)
        elif isinstance(f, int) and not isinstance(f, bool) and f >= 0:
            coef *= f
        else:
            raise LayoutError(
                f"invalid dimension {d!r}: factor {f!r} is not a size >= 0 or a symbol"
            )
    return (coef, tuple(sorted(syms))) if coef else (0, ())


def _mul(a: _Prod, b: _Prod) -> _Prod:
    return (a[0] * b[0], tuple(sorted(a[1] + b[1])))


def _cuts(
    sp: list[_Prod], dp: list[_Prod]
) -> tuple[list[int], list[int], list[tuple[int, int]]] | None:
    """The non-1 axes of both shapes and the cuts (k source axes, n destination axes)
    where their running products are equal; None when the products never line up or a
    size is 0."""
    if any(p[0] == 0 for p in sp) or any(p[0] == 0 for p in dp):
        return None
    si = [i for i, p in enumerate(sp) if p != _ONE]
    di = [j for j, p in enumerate(dp) if p != _ONE]
    # Running products strictly grow over non-1 axes, so each value occurs at most once.
    src_prefix, run = {_ONE: 0}, _ONE
    for k, i in enumerate(si, 1):
        run = _mul(run, sp[i])
        src_prefix[run] = k
    cuts, run = [(0, 0)], _ONE
    for n, j in enumerate(di, 1):
        run = _mul(run, dp[j])
        if run in src_prefix:
            cuts.append((src_prefix[run], n))
    if cuts[-1] != (len(si), len(di)):
        return None
    return si, di, cuts


def dim_product(d: Dim) -> tuple[int, tuple[str, ...]]:
    """A dim in canonical product form: (integer coefficient, sorted symbolic factors)."""
    return _prod(d)


@functools.lru_cache(maxsize=16384)
def reshape_groups(
    src: tuple[Dim, ...], dst: tuple[Dim, ...]
) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None:
    """The groups of a reshape: (source axes, destination axes) of non-1 axes whose
    running products line up, as `match_reshape` cuts them; None when they never line
    up or a size is 0 (memoised: models repeat the same reshapes layer after layer)."""
    cut = _cuts([_prod(d) for d in src], [_prod(d) for d in dst])
    if cut is None:
        return None
    si, di, cuts = cut
    return tuple(
        (tuple(si[k0:k1]), tuple(di[n0:n1])) for (k0, n0), (k1, n1) in pairwise(cuts)
    )


def match_reshape(layout: Layout, src: Sequence[Dim], dst: Sequence[Dim]) -> Layout | None:
    """Return the layout of a reshape from shape ``src`` (with ``layout``) to shape ``dst``.

    See `_match_reshape`; results are memoised, since models repeat the same reshapes
    layer after layer.
    """
    return _match_reshape(layout, src if type(src) is tuple else tuple(src),
                          dst if type(dst) is tuple else tuple(dst))


@functools.lru_cache(maxsize=16384)
def _match_reshape(layout: Layout, src: tuple[Dim, ...], dst: tuple[Dim, ...]) -> Layout | None:
    """Return the layout of a reshape from shape ``src`` (with ``layout``) to shape ``dst``.

    Ignoring size-1 axes, the shapes are cut into groups wherever their running products are
    equal. A group of one input and one output axis keeps its letter; split or merged axes
    get fresh letters, which avoid every letter of ``layout`` (a merged axis is not any of
    its parts). A size-1 output axis takes, in order, the letters of the size-1 input axes in
    the same gap between groups, else a fresh letter. Returns ``None`` when the products
    never line up (opaque symbolic sizes) or a size is 0.
    """
    _check(layout)
    if len(layout) != len(src):
        raise LayoutError(
            f"layout {layout!r} has rank {len(layout)} but the source shape has rank {len(src)}"
        )
    _check_rank(len(dst))
    sp, dp = [_prod(d) for d in src], [_prod(d) for d in dst]
    if sp == dp:
        return layout
    cut = _cuts(sp, dp)
    if cut is None:
        return None
    si, di, cuts = cut
    out: list[str | None] = [None] * len(dst)
    for (k0, n0), (k1, n1) in pairwise(cuts):
        if k1 - k0 == 1 and n1 - n0 == 1:
            out[di[n0]] = layout[si[k0]]
    # Size-1 axes in a gap between groups: gap g sits right after cut g.
    gap_src = {k: g for g, (k, _) in enumerate(cuts)}
    gap_dst = {n: g for g, (_, n) in enumerate(cuts)}
    ones: dict[int, list[str]] = {}
    seen = 0
    for i, p in enumerate(sp):
        if p != _ONE:
            seen += 1
        elif seen in gap_src:
            ones.setdefault(gap_src[seen], []).append(layout[i])
    seen = 0
    for j, p in enumerate(dp):
        if p != _ONE:
            seen += 1
        elif ones.get(gap_dst.get(seen, -1)):
            out[j] = ones[gap_dst[seen]].pop(0)
    missing = [j for j, c in enumerate(out) if c is None]
    kept = "".join(c for c in out if c is not None)
    avoid = layout if len(layout) + len(missing) <= len(_LETTERS) else kept
    for j, c in zip(missing, fresh_letters(avoid, len(missing)), strict=True):
        out[j] = c
    return "".join(c for c in out if c is not None)


def reshape_back(out_layout: Layout, src: Sequence[Dim], dst: Sequence[Dim]) -> Layout | None:
    """Return the input layout of a reshape ``src -> dst`` given its output layout."""
    return match_reshape(out_layout, dst, src)

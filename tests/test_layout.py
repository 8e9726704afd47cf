"""Tests of msc_rules.layout: examples from msc-conventions.md and hypothesis properties."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msc_rules.layout import (
    Dim,
    LayoutError,
    broadcast_out,
    default_layout,
    drop,
    fresh_letters,
    initial,
    insert,
    is_layout,
    last,
    match_reshape,
    permute,
    prefix,
    reshape_back,
    suffix,
    unpermute,
)

# ---------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("s", "ok"),
    [("", True), ("NCHW", True), ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", True), ("NCHN", False),
     ("nchw", False), ("NC1", False), ("N C", False)],
)  # fmt: skip
def test_is_layout(s: str, ok: bool) -> None:
    assert is_layout(s) is ok


@pytest.mark.parametrize(
    ("ndim", "init", "default"),
    [(0, "", ""), (1, "A", "C"), (2, "AB", "NC"), (3, "ABC", "NCD"), (4, "ABCD", "NCHW"),
     (5, "ABCDE", "NCDHW"), (6, "ABCDEF", "ABCDEF")],
)  # fmt: skip
def test_initial_and_default(ndim: int, init: str, default: str) -> None:
    assert initial(ndim) == init
    assert default_layout(ndim) == default


def test_initial_limits() -> None:
    assert initial(26) == string.ascii_uppercase
    for bad in (27, -1):
        with pytest.raises(LayoutError, match="rank"):
            initial(bad)
        with pytest.raises(LayoutError, match="rank"):
            default_layout(bad)


@pytest.mark.parametrize(
    ("layout", "axes", "out"),
    [("NCHW", [0, 2, 3, 1], "NHWC"), ("NHWC", [0, 3, 1, 2], "NCHW"), ("ABCD", [0, 2, 1, 3], "ACBD"),
     ("ABCD", None, "DCBA"), ("NCHW", [0, -2, -1, 1], "NHWC"), ("", [], ""), ("", None, "")],
)  # fmt: skip
def test_permute(layout: str, axes: list[int] | None, out: str) -> None:
    assert permute(layout, axes) == out
    assert unpermute(out, axes) == layout


@pytest.mark.parametrize(
    ("layout", "axes", "out"),
    [("NCHW", [2, 3], "NC"), ("NCHW", [-1, -2], "NC"), ("NCHW", 1, "NHW"), ("NCHW", None, ""),
     ("NCHW", [], "NCHW"), ("AB", [0, 1], "")],
)  # fmt: skip
def test_drop(layout: str, axes: int | list[int] | None, out: str) -> None:
    assert drop(layout, axes) == out


# The fresh-letter examples of msc-conventions.md section 3.2, verbatim.
INSERT_EXAMPLES = [
    ("NCH", [3], "NCHW"), ("NC", [2, 3], "NCHW"), ("AB", [1], "ACB"), ("AB", [1, 2], "ACDB"),
    ("ABC", [1], "ADBC"), ("AB", [1, 3], "ACBD"), ("A", [1], "AB"), ("B", [1], "BA"),
    ("BA", [0], "CBA"),
]  # fmt: skip


@pytest.mark.parametrize(("layout", "axes", "out"), INSERT_EXAMPLES)
def test_insert_reference_examples(layout: str, axes: list[int], out: str) -> None:
    assert insert(layout, axes) == out
    assert insert(layout, axes, len(out)) == out


@pytest.mark.parametrize(
    ("layout", "axes", "ndim_out", "out"),
    [("ABCD", -1, None, "ABCDE"), ("ABCD", [-1], 5, "ABCDE"), ("NCHW", [-1], None, "NCHWD"),
     ("NC", [-1, -2], None, "NCHW"), ("NCHW", 0, None, "DNCHW"), ("", [0], None, "A"),
     ("", None, 3, "ABC"), ("", [0, 1, 2, 3, 4, 5], None, "ABCDEF"), ("NC", [2, 3], 4, "NCHW")],
)  # fmt: skip
def test_insert_more(
    layout: str, axes: int | list[int] | None, ndim_out: int | None, out: str
) -> None:
    assert insert(layout, axes, ndim_out) == out


def test_insert_negative_axis_uses_output_rank() -> None:
    # msc-conventions section 6.3: unsqueeze(-1) of a 4-D tensor appends the new letter.
    out = insert("ABCD", [-1])
    assert out[:4] == "ABCD" and len(out) == 5


@pytest.mark.parametrize(
    ("in_use", "count", "out"),
    [("", 5, "ABCDE"), ("", 6, "ABCDEF"), ("N", 1, "C"), ("CN", 2, "HW"), ("C", 1, "A"),
     ("NCHWD", 1, "A"), ("AB", 2, "CD"), ("NCHW", 0, ""), ("NNC", 1, "H")],
)  # fmt: skip
def test_fresh_letters(in_use: str, count: int, out: str) -> None:
    assert fresh_letters(in_use, count) == out


def test_fresh_letters_exhausted() -> None:
    with pytest.raises(LayoutError, match="no fresh letter"):
        fresh_letters(string.ascii_uppercase, 1)
    with pytest.raises(LayoutError):
        fresh_letters("ab", 1)
    with pytest.raises(LayoutError):
        fresh_letters("A", -1)


def test_last_suffix_prefix() -> None:
    assert last("NCHW") == "W"
    assert last("") == ""
    assert suffix("NCHW", 2) == "HW"
    assert suffix("NCHW", 0) == ""
    assert suffix("NCHW", 4) == "NCHW"
    assert prefix("NCHW", 2) == "NC"
    assert prefix("NCHW", 0) == ""
    for fn in (suffix, prefix):
        with pytest.raises(LayoutError, match="cannot take 5 letters of layout 'NCHW'"):
            fn("NCHW", 5)
        with pytest.raises(LayoutError):
            fn("NCHW", -1)


@pytest.mark.parametrize(
    ("layouts", "ndims", "out_ndim", "out"),
    [(["NCHW", None], [4, 1], 4, "NCHW"), ([None, "NCHW"], [1, 4], 4, "NCHW"),
     (["W", None], [1, 4], 4, None), (["ABCD", "EFGH"], [4, 4], 4, "ABCD"),
     (["AB", "BC"], [2, 2], 2, "AB"), (["CD", "ACD"], [2, 3], 3, "ACD"),
     (["XW", "CHW"], [2, 3], 3, "CHW"), (["", "NC"], [0, 2], 2, "NC"),
     ([None, None], [2, 2], 2, None), (["", None], [0, 0], 0, ""), ([None], [0], 0, None),
     ([], [], 0, None), (["HW", "CHW", "NCHW"], [2, 3, 4], 4, "NCHW")],
)  # fmt: skip
def test_broadcast_out_examples(
    layouts: list[str | None], ndims: list[int], out_ndim: int, out: str | None
) -> None:
    assert broadcast_out(layouts, ndims, out_ndim) == out


@pytest.mark.parametrize(
    ("layouts", "ndims"),
    [(["HW", "CHW"], [2, 3]), (["W", "HW", "CHW"], [1, 2, 3]), (["AB", "XYB"], [2, 3])],
)
def test_broadcast_out_needs_a_full_rank_operand(layouts: list[str], ndims: list[int]) -> None:
    # Right-aligned lower-rank operands never cover output axis 0, however many are known.
    assert broadcast_out([*layouts, None], [*ndims, 4], 4) is None


# Reshape: msc-conventions sections 3.2 and 6.7/6.8, and the brief's key cases.


def test_reshape_flatten_trailing_ones() -> None:
    # Section 6.8: MSC gave "NW"; "NC" is right.
    assert match_reshape("NCHW", [1, 2048, 1, 1], [1, 2048]) == "NC"


def test_reshape_flatten_symbolic_batch() -> None:
    out = match_reshape("NCHW", ["n", 3, 32, 32], ["n", 3072])
    assert out is not None and len(out) == 2
    assert out[0] == "N" and out[1] not in "NCHW"
    assert out == "ND"


def test_reshape_split_heads() -> None:
    out = match_reshape("ABC", ["n", "s", 768], ["n", "s", 12, 64])
    assert out is not None and out[:2] == "AB" and is_layout(out) and len(out) == 4
    assert not set(out[2:]) & set("ABC")
    assert out == "ABDE"


def test_reshape_merge_heads() -> None:
    out = match_reshape("ABDE", ["n", "s", 12, 64], ["n", "s", 768])
    assert out is not None and out[:2] == "AB" and out[2] not in "ABDE"
    assert out == "ABC"


@pytest.mark.parametrize(
    ("layout", "src", "dst", "out"),
    [("AB", ["n", 4], [("n", 4)], "C"), ("AB", ["n", 4], [(4, "n")], "C"),
     ("C", [("n", 4)], ["n", 4], "AB"), ("AB", [("n", 2, 2), 3], [("n", 4), 3], "AB"),
     ("AB", [("n", 2), 2], [("n", 4)], "C"), ("ABC", ["n", 2, 2], [("n", 4)], "D"),
     ("ABC", ["n", "s", 4], [("s", "n"), 4], "DC"), ("A", ["n"], ["n"], "A"),
     ("AB", ["n", "s"], ["s", "n"], "CD"), ("ABC", [1, "n", 4], ["n", 1, 4], "BDC"),
     ("AB", [(), 5], [5], "B"), ("AB", ["n", 4], ["m"], None), ("AB", ["n", 4], ["n", 8], None),
     ("AB", [2, 4], [2, 8], None)],
)  # fmt: skip
def test_reshape_symbolic_and_invalid(
    layout: str, src: list[Dim], dst: list[Dim], out: str | None
) -> None:
    assert match_reshape(layout, src, dst) == out


@pytest.mark.parametrize(
    ("layout", "src", "dst", "out"),
    [("NCHW", [1, 2048, 1, 1], [1, 2048, 1, 1], "NCHW"),
     ("NCHW", [2, 3, 4, 5], [2, 3, 4, 5], "NCHW"),
     ("AB", ["n", 8], ["n", 8], "AB"), ("AB", [("n", 2), 8], [(2, "n"), 8], "AB"),
     ("AB", [1, 1], [1, 1], "AB"), ("", [], [], ""), ("A", [0], [0], "A"),
     ("AB", [0, 3], [3, 0], None), ("AB", [2, 3], [3, 2], "CD"), ("AB", [2, 3], [6], "C"),
     ("A", [6], [2, 3], "BC"), ("NC", [1, 5], [5], "C"), ("C", [5], [1, 5], "AC"),
     ("", [], [1, 1], "AB"), ("AB", [1, 1], [], ""), ("AB", [1, 1], [1], "A"),
     ("NCHW", [1, 2, 1, 3], [1, 6, 1], "NDA"), ("ABC", [2, 1, 3], [6], "D"),
     ("A", [6], [2, 1, 3], "BCD"), ("NC", [1, 5], [5, 1], "CH"), ("AB", [1, 1], [1, 1, 1], "ABC"),
     ("ABC", [2, 1, 3], [2, 3, 1], "ACD"), ("ABC", [2, 1, 3], [1, 2, 3], "DAC")],
)  # fmt: skip
def test_reshape_examples(layout: str, src: list[Dim], dst: list[Dim], out: str | None) -> None:
    assert match_reshape(layout, src, dst) == out


def test_reshape_back() -> None:
    assert reshape_back("NC", [1, 2048, 1, 1], [1, 2048]) == "NCHW"
    assert reshape_back("ABDE", ["n", "s", 768], ["n", "s", 12, 64]) == "ABC"
    assert reshape_back("AB", [2, 3], [2, 4]) is None


def test_reshape_many_letters_falls_back_to_dropped_letters() -> None:
    src = [2] * 26
    out = match_reshape(string.ascii_uppercase, src, [4] + [2] * 24)
    assert out is not None and is_layout(out) and out[1:] == string.ascii_uppercase[2:]
    assert out[0] in "AB"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [(lambda: drop("NCHW", 4), "axis 4 out of range for layout 'NCHW' (rank 4)"),
     (lambda: drop("NCHW", [-5]), "axis -5 out of range for layout 'NCHW' (rank 4)"),
     (lambda: drop("NCHW", [1, -3]), "axis -3 repeated"),
     (lambda: permute("NCHW", [0, 1, 2]), "not a permutation"),
     (lambda: permute("NCHW", [0, 1, 2, 2]), "repeated"),
     (lambda: permute("NCHW", [0, 1, 2, 4]), "axis 4 out of range"),
     (lambda: unpermute("NCH", [0, 1, 2, 3]), "axis 3 out of range"),
     (lambda: insert("NCHW", [6]),
      "axis 6 out of range for inserting 1 axis(es) into layout 'NCHW' (output rank 5)"),
     (lambda: insert("NCHW", [-7]), "output rank 5"),
     (lambda: insert("NCHW", [1], 6), "gives rank 5, not 6"),
     (lambda: insert("AB", None), "needs ndim_out"),
     (lambda: insert("AB", None, 3), "gives rank 5, not 3"),
     (lambda: insert("AB", [1, -3]), "axis -3 repeated"),
     (lambda: insert(string.ascii_uppercase, [0]), "rank 27"),
     (lambda: permute("NCHN", None), "duplicate letter 'N'"),
     (lambda: drop("nchw", 0), "is not a letter"),
     (lambda: match_reshape("NCH", [1, 2, 3, 4], [24]), "rank 3 but the source shape has rank 4"),
     (lambda: match_reshape("AB", [2, -1], [2, 1]), "invalid dimension"),
     (lambda: match_reshape("AB", [2, ("n", "")], [2, 1]), "invalid dimension"),
     (lambda: broadcast_out(["NCHW"], [4, 1], 4), "1 layouts given for 2 operands"),
     (lambda: broadcast_out(["NCH"], [4], 4), "has rank 3 but its operand has rank 4"),
     (lambda: broadcast_out([None, "A"], [5, 1], 4), "rank 5 cannot broadcast to rank 4"),
     (lambda: broadcast_out(["AA"], [2], 2), "duplicate")],
)  # fmt: skip
def test_errors(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(LayoutError, match=re.escape(message)):
        call()


def test_layout_error_is_value_error() -> None:
    assert issubclass(LayoutError, ValueError)


# ---------------------------------------------------------------- properties

layouts = st.permutations(string.ascii_uppercase).flatmap(
    lambda letters: st.integers(0, 12).map(lambda n: "".join(letters[:n]))
)


@given(layouts, st.data())
def test_permute_round_trip(layout: str, data: st.DataObject) -> None:
    axes = data.draw(st.permutations(range(len(layout))))
    signed = [a - len(layout) if data.draw(st.booleans()) else a for a in axes]
    out = permute(layout, signed)
    assert sorted(out) == sorted(layout)
    assert unpermute(out, signed) == layout
    assert permute(unpermute(layout, signed), signed) == layout
    assert unpermute(permute(layout), None) == layout


@given(layouts, st.data())
def test_drop_then_insert(layout: str, data: st.DataObject) -> None:
    n = len(layout)
    axes = data.draw(st.lists(st.integers(0, max(n - 1, 0)), unique=True, max_size=n)) if n else []
    dropped = drop(layout, axes)
    assert len(dropped) == n - len(axes)
    back = insert(dropped, axes, n)
    assert len(back) == n and is_layout(back)
    survivors = [i for i in range(n) if i not in axes]
    assert "".join(back[i] for i in survivors) == dropped == "".join(layout[i] for i in survivors)


@given(layouts, st.data())
def test_insert_gives_distinct_letters(layout: str, data: st.DataObject) -> None:
    count = data.draw(st.integers(0, 26 - len(layout)))
    rank = len(layout) + count
    positions = data.draw(st.lists(st.integers(0, rank - 1), unique=True, min_size=count,
                                   max_size=count)) if count else []  # fmt: skip
    signed = [p - rank if data.draw(st.booleans()) else p for p in positions]
    out = insert(layout, signed)
    assert len(out) == rank and is_layout(out)
    new = [out[p] for p in sorted(positions)]
    assert "".join(c for i, c in enumerate(out) if i not in positions) == layout
    assert "".join(new) == fresh_letters(layout, count)


@given(st.text(string.ascii_uppercase, max_size=26), st.integers(0, 8))
def test_fresh_letters_are_fresh(in_use: str, count: int) -> None:
    count = min(count, 26 - len(set(in_use)))
    out = fresh_letters(in_use, count)
    assert len(out) == count and is_layout(out) and not set(out) & set(in_use)


# Reshape properties. Shapes are built by grouping a random list of factors (>= 2) into
# consecutive merged dims, independently for src and dst, and sprinkling size-1 axes.


def _reference(layout: str, src: Sequence[int], dst: Sequence[int]) -> str:
    """Brute force for int shapes via row-major strides, independent of running products.

    An output axis is the same as an input axis iff size and stride (elements after it)
    agree; a size-1 axis with E elements after it is in the gap at E and takes, in order,
    the letters of the input size-1 axes with the same E.
    """

    def after(shape: Sequence[int], i: int) -> int:
        return math.prod(shape[i + 1 :])

    out: list[str | None] = [None] * len(dst)
    ones: dict[int, list[str]] = {}
    for i, d in enumerate(src):
        if d == 1:
            ones.setdefault(after(src, i), []).append(layout[i])
    for j, d in enumerate(dst):
        if d == 1:
            pool = ones.get(after(dst, j), [])
            out[j] = pool.pop(0) if pool else None
            continue
        same = [i for i, s in enumerate(src) if s == d and after(src, i) == after(dst, j)]
        out[j] = layout[same[0]] if same else None
    missing = [j for j, c in enumerate(out) if c is None]
    for j, c in zip(missing, fresh_letters(layout, len(missing)), strict=True):
        out[j] = c
    return "".join(c or "" for c in out)


@st.composite
def grouped_shape(draw: st.DrawFn, factors: list[int]) -> list[int]:
    """Merge consecutive factors into dims at random cut points; sprinkle size-1 axes."""
    shape: list[int] = []
    for f in factors:
        if draw(st.booleans()) and shape:
            shape[-1] *= f
        else:
            shape.append(f)
    for _ in range(draw(st.integers(0, 3))):
        shape.insert(draw(st.integers(0, len(shape))), 1)
    return shape


factor_lists = st.lists(st.sampled_from([2, 3, 4, 5, 7]), max_size=7)


@st.composite
def reshape_case(draw: st.DrawFn) -> tuple[str, list[int], list[int]]:
    factors = draw(factor_lists)
    src, dst = draw(grouped_shape(factors)), draw(grouped_shape(factors))
    letters = draw(st.permutations(string.ascii_uppercase))
    return "".join(letters[: len(src)]), src, dst


@given(reshape_case())
def test_reshape_matches_reference(case: tuple[str, list[int], list[int]]) -> None:
    layout, src, dst = case
    out = match_reshape(layout, src, dst)
    assert out is not None
    assert len(out) == len(dst) and is_layout(out)
    assert out == _reference(layout, src, dst)


@given(reshape_case())
def test_reshape_keeps_unchanged_axes(case: tuple[str, list[int], list[int]]) -> None:
    layout, src, dst = case
    out = match_reshape(layout, src, dst)
    assert out is not None
    for j, d in enumerate(dst):
        for i, s in enumerate(src):
            if s == d != 1 and math.prod(src[:i]) == math.prod(dst[:j]):
                assert out[j] == layout[i]


@given(reshape_case())
def test_reshape_identity(case: tuple[str, list[int], list[int]]) -> None:
    layout, src, _ = case
    assert match_reshape(layout, src, src) == layout
    symbolic: list[Dim] = [(d, "n") if i == 0 else d for i, d in enumerate(src)]
    assert match_reshape(layout, symbolic, list(symbolic)) == layout


@given(st.lists(st.integers(2, 9), max_size=6), st.data())
def test_reshape_round_trip_when_one_to_one(base: list[int], data: st.DataObject) -> None:
    # Every group is 1:1 and b only adds size-1 axes to a, so no letter is lost either way.
    def add_ones(shape: list[int]) -> list[int]:
        shape = list(shape)
        for _ in range(data.draw(st.integers(0, 3))):
            shape.insert(data.draw(st.integers(0, len(shape))), 1)
        return shape

    a = add_ones(base)
    b = add_ones(a)
    letters = data.draw(st.permutations(string.ascii_uppercase))
    layout = "".join(letters[: len(a)])
    there = match_reshape(layout, a, b)
    assert there is not None
    assert match_reshape(there, b, a) == layout
    assert reshape_back(there, a, b) == layout


@given(reshape_case(), st.sampled_from(["n", "s"]))
def test_reshape_symbolic_factor_behaves_like_int(
    case: tuple[str, list[int], list[int]], sym: str
) -> None:
    # 7 is coprime to the other factors, so replacing each factor 7 by a symbol preserves
    # which running products are equal: the letters must not change.
    layout, src, dst = case

    def swap(shape: list[int]) -> list[Dim]:
        out: list[Dim] = []
        for d in shape:
            syms: list[int | str] = []
            while d % 7 == 0:
                d //= 7
                syms.append(sym)
            out.append((d, *syms) if syms else d)
        return out

    assert match_reshape(layout, swap(src), swap(dst)) == match_reshape(layout, src, dst)

"""Checks shared by the real-model tests: complete layouts and symbolic-axis identity."""

from __future__ import annotations

from collections.abc import Iterator

import msc_rules


def leaves_of(result: msc_rules.InferenceResult) -> Iterator[tuple[str, int]]:
    """(place, leaf) for every tensor leaf of every param, constant and binding."""
    for v in result.view.values:
        stack = [v.struct]
        while stack:
            st = stack.pop()
            if isinstance(st, int):
                yield result.leaf_place(st), st
            elif isinstance(st, tuple):
                stack.extend(st)


def missing_or_wrong_rank(result: msc_rules.InferenceResult) -> list[str]:
    """Places whose tensor (of known rank) has no layout or one of the wrong length."""
    bad = []
    for place, leaf in leaves_of(result):
        ndim = result.view.leaf_ndim[leaf]
        lay = result.layouts[leaf]
        if ndim >= 0 and (lay is None or len(lay) != ndim):
            bad.append(f"{place}: ndim {ndim}, layout {lay!r}")
    return bad


def symbol_letter(result: msc_rules.InferenceResult, sym: str) -> str:
    """The letter of the first function input's axis whose size is `sym`."""
    for v in result.view.values:
        if v.kind == "param" and isinstance(v.struct, int):
            dims = result.view.shape(v.struct) or []
            lay = result.layouts[v.struct]
            for i, d in enumerate(dims):
                if d == sym and lay:
                    return lay[i]
    raise AssertionError(f"no input has an axis of size {sym}")


def symbol_violations(result: msc_rules.InferenceResult, sym: str) -> list[str]:
    """Tensors whose axes of size exactly `sym` do not carry the input's letter for it.

    A tensor with the symbol on several axes (attention scores [b, h, s, s]) can carry a
    letter only once, so exactly one of those axes must carry it; its other axes of that
    size are other logical axes (the keys against the queries) with letters of their
    own. A tensor with the symbol on one axis must carry the input's letter there, or
    one of those other axes' letters: an attention mask is broadcast along the keys, so
    by broadcasting its axis is the scores' key axis, not the queries'.
    """
    letter = symbol_letter(result, sym)
    others: set[str] = set()
    single: list[tuple[str, list[int], str, int]] = []
    bad = []
    for place, leaf in leaves_of(result):
        dims = result.view.shape(leaf)
        lay = result.layouts[leaf]
        if not dims or not lay:
            continue
        axes = [i for i, d in enumerate(dims) if d == sym]
        if len(axes) > 1:
            if sum(lay[i] == letter for i in axes) != 1:
                bad.append(f"{place}: dims {dims}, layout {lay}, '{sym}' should be '{letter}'")
            others.update(lay[i] for i in axes if lay[i] != letter)
        elif axes:
            single.append((place, dims, lay, axes[0]))
    for place, dims, lay, i in single:
        if lay[i] != letter and lay[i] not in others:
            bad.append(f"{place}: dims {dims}, layout {lay}, '{sym}' should be '{letter}'")
    return bad

"""The prune's cut as arrays (msc_rules/prune_cut.py) is the dict path's: the same
removed indices and new extents per leaf and axis, the same records for the native
rebuild, the same pruned module; what it does not take (a reshape merging pruned
channels with another axis, members already made) goes the dict path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tvm
import tvm_ffi

# (_native: the autouse fixture that runs these tests with the native walk, or skips)
from test_channel_ties import _attention, _cnn, _native  # noqa: F401

import msc_rules
from msc_rules.prune import _new_extents, check_selection, plan_prune
from msc_rules.prune_consts import Consts
from msc_rules.prune_cut import const_slices, plan_cut
from msc_rules.prune_rebuild import Retyper, _native_cuts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic import conv_chain

_prune = sys.modules["msc_rules.prune"]




def _records(words: bytes) -> dict[int, tuple[int, list[tuple[int, int]]]]:
    """handle -> its static shape id and (axis, extent) pairs, sorted, from the native
    rebuild's cut records."""
    flat = np.frombuffer(words, dtype=np.int64).tolist()
    out: dict[int, tuple[int, list[tuple[int, int]]]] = {}
    k = 0
    while k < len(flat):
        n = flat[k + 2]
        pairs = flat[k + 3:k + 3 + 2 * n]
        out[flat[k]] = (flat[k + 1], sorted(zip(pairs[0::2], pairs[1::2], strict=True)))
        k += 3 + 2 * n
    return out


def _slices(words: bytes) -> dict[int, list[tuple[int, list[int]]]]:
    """handle -> its (axis, removed indices) pairs, sorted, from the native rebuild's
    slice records."""
    flat = np.frombuffer(words, dtype=np.int64).tolist()
    out: dict[int, list[tuple[int, list[int]]]] = {}
    k = 0
    while k < len(flat):
        handle, n = flat[k], flat[k + 1]
        k += 2
        axes = []
        for _ in range(n):
            axis, count = flat[k], flat[k + 1]
            axes.append((axis, flat[k + 2:k + 2 + count]))
            k += 2 + count
        out[handle] = sorted(axes)
    return out


def _select(groups: Any, step: int) -> dict[int, list[int]]:
    return {g.id: list(range(0, g.size, step)) for g in groups if g.exact and not g.touches_io}


@pytest.mark.parametrize("make", [lambda: conv_chain(60), _cnn], ids=["conv_chain", "cnn"])
@pytest.mark.parametrize("step", [2, 3])
def test_the_arrays_are_the_dict_path(make: Any, step: int,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mod = make()
    groups = msc_rules.channel_groups(mod)
    g = groups.graph
    assert g is not None
    removed = check_selection(groups, _select(groups, step))
    planned = plan_cut(g, groups, removed)
    assert planned is not None
    cut, extents = planned
    by_dict = plan_prune(groups, removed)
    assert {k: cut[k] for k in cut} == by_dict
    new = _new_extents(g, by_dict)
    assert {k: extents[k] for k in extents} == new
    view = g.view
    consts = Consts(view)
    for leaf in by_dict:
        v = view.values[view.leaf_value[leaf]]
        if v.kind == "const":
            consts.add_cut(v.expr, leaf, by_dict[leaf])
    assert consts.cut
    # the constants' slices made at once are those made one by one
    assert cut.counts is not None
    leaves, packed = const_slices(g, cut, cut.counts)
    assert sorted(leaves.tolist()) == sorted(leaf for _, leaf, _ in consts.cut)
    by_one = consts.native()
    assert by_one is not None
    assert _slices(packed) == _slices(by_one[0])
    fast_records = _native_cuts(view, consts, Retyper(extents))
    slow_records = _native_cuts(view, consts, Retyper(new))
    assert fast_records is not None and slow_records is not None
    assert _records(fast_records[0]) == _records(slow_records[0])
    fast = msc_rules.prune(mod, _select(groups, step), groups=groups)
    monkeypatch.setattr(_prune, "plan_cut", lambda *a: None)
    slow = msc_rules.prune(mod, _select(groups, step), groups=groups)
    assert tvm_ffi.structural_equal(fast, slow)
    assert fast["main"].body.blocks[0].bindings[0].var.ty.shape[1] < \
        mod["main"].body.blocks[0].bindings[0].var.ty.shape[1]


def test_what_the_arrays_do_not_take_goes_the_dict_path() -> None:
    mod = _attention()  # (heads: a reshape merges pruned channels with the batch)
    groups = msc_rules.channel_groups(mod)
    removed = check_selection(groups, _select(groups, 2))
    assert plan_cut(groups.graph, groups, removed) is None  # type: ignore[arg-type]
    chain = conv_chain(30)
    groups = msc_rules.channel_groups(chain)
    for gr in groups:
        _ = gr.members  # (made: the walks are gone)
    removed = check_selection(groups, _select(groups, 2))
    assert plan_cut(groups.graph, groups, removed) is None  # type: ignore[arg-type]
    assert isinstance(msc_rules.prune(chain, _select(groups, 2), groups=groups), tvm.IRModule)


def test_a_refused_native_rebuild_slices_the_packed_constants_in_python(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The constants of a planned cut go to prune.cc as records made at once; when it
    hands the function back, the Python rebuild lists and slices them itself."""
    from msc_rules import native

    mod = conv_chain(60)
    groups = msc_rules.channel_groups(mod)
    sel = _select(groups, 2)
    fast = msc_rules.prune(mod, sel, groups=groups)
    lib = native.load()

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(lib, name)

        def prune_rebuild(self, *args: Any) -> Any:
            raise RuntimeError("refused for the test")

    rebuild_module = sys.modules["msc_rules.prune_rebuild"]
    del rebuild_module.fallbacks[:]
    monkeypatch.setattr(native, "get", lambda: Refusing())
    slow = msc_rules.prune(mod, sel, groups=groups)
    assert [why for _, why in rebuild_module.fallbacks] == ["refused for the test"]
    assert tvm_ffi.structural_equal(fast, slow)
    assert fast["main"].body.blocks[0].bindings[0].var.ty.shape[1] < \
        mod["main"].body.blocks[0].bindings[0].var.ty.shape[1]

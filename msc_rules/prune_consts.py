"""The constants a prune changes: sliced by the native rebuild (native/prune.cc) as it
rebuilds the function, or here with numpy when the Python rebuild runs.

A prune gives each constant that loses channels its removed indices per axis
(`add_cut`); the oracle's masked module gives zeroed copies (`add_data`). `native`
packs them as prune.cc takes them (the removed indices of each cut axis, and the given
data); `made` slices them here, once, when a Python rebuild asks for the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tvm

from .graph import DependencyView

ConstSlices = list[tuple[Any, int, Any]]
"""The sliced constants: (the old constant, its leaf, its new data as a TVM tensor)."""
Cuts = list[tuple[Any, int, Mapping[int, Sequence[int]]]]
"""Constants to slice: (the old constant, its leaf, its removed indices per axis)."""


def host_array(t: Any) -> np.ndarray:
    """A constant's data as a numpy array (a view, not a copy, on the CPU)."""
    try:
        return np.from_dlpack(t)
    except (BufferError, RuntimeError, TypeError, ValueError):
        return t.numpy()


def tensors(arrays: Sequence[np.ndarray]) -> list[Any]:
    """TVM tensors holding `arrays`: copies into one buffer, each at an offset aligned
    as TVM requires (64 bytes; numpy aligns to 16), handed over without a second copy
    (one allocation and one address read for all of a prune's constants)."""
    sizes = [(a.nbytes + 63) // 64 * 64 for a in arrays]
    raw = np.empty(sum(sizes) + 64, dtype=np.uint8)
    off = -raw.__array_interface__["data"][0] % 64
    out = []
    for arr, size in zip(arrays, sizes, strict=True):
        buf = raw[off:off + arr.nbytes].view(arr.dtype).reshape(arr.shape)
        buf[...] = arr
        off += size
        try:
            out.append(tvm.runtime.from_dlpack(buf))
        except (BufferError, RuntimeError, TypeError, ValueError):
            out.append(tvm.runtime.tensor(np.ascontiguousarray(arr)))
    return out


def kept(extent: int, idx: Sequence[int], memo: dict[tuple[int, ...], np.ndarray]
         ) -> np.ndarray:
    """The indices of an axis of `extent` not in `idx` (one array per extent and
    removed indices: groups of a model tend to lose the same ones)."""
    key = (extent, *idx)
    got = memo.get(key)
    if got is None:
        keep = np.ones(extent, dtype=bool)
        keep[list(idx)] = False
        got = memo[key] = np.flatnonzero(keep)
    return got


class Consts:
    """The constants a prune changes (see the module docstring), in the order added."""

    def __init__(self, view: DependencyView) -> None:
        self.view = view
        self.given: list[tuple[Any, int, np.ndarray]] = []
        self.cut: Cuts = []
        self._made: ConstSlices | None = None
        # constants added at once as prune.cc's records, listed when first needed
        self.packed: list[tuple[np.ndarray, Callable[[], Cuts]]] = []

    def add_data(self, expr: Any, leaf: int, data: np.ndarray) -> None:
        """A constant's new data, as is (a mask's zeroed copy)."""
        self.given.append((expr, leaf, data))

    def add_cut(self, expr: Any, leaf: int, removed: Mapping[int, Sequence[int]]) -> None:
        """A constant to slice: its removed indices per axis."""
        self.cut.append((expr, leaf, removed))

    def add_packed(self, records: np.ndarray, listed: Callable[[], Cuts]) -> None:
        """Constants to slice given at once: their records as `native` makes them, and
        what lists them as `add_cut` takes them (for a Python rebuild: not called
        when the native rebuild takes the records)."""
        self.packed.append((records, listed))

    def _unpack(self) -> None:
        for _, listed in self.packed:
            self.cut.extend(listed())
        self.packed = []

    def keys(self) -> list[tuple[Any, int]]:
        """(the old constant, its leaf) of each."""
        self._unpack()
        return [(e, leaf) for e, leaf, _ in self.given] + [(e, leaf) for e, leaf, _ in self.cut]

    def made(self) -> ConstSlices:
        """(the old constant, its leaf, its new data) of each, sliced here (once)."""
        if self._made is None:
            self._unpack()
            memo: dict[tuple[int, ...], np.ndarray] = {}
            arrays = [a for _, _, a in self.given]
            # (the constants of a shape that lose the same indices: one stack, one take)
            alike: dict[tuple[Any, ...], list[int]] = {}
            for expr, _, removed in self.cut:
                arr = host_array(expr.value)
                cuts = tuple((axis, tuple(removed[axis])) for axis in sorted(removed))
                alike.setdefault((arr.shape, arr.dtype.str, cuts), []).append(len(arrays))
                arrays.append(arr)
            for (_, _, cuts), at in alike.items():
                stack = np.stack([arrays[k] for k in at])
                for axis, idx in cuts:
                    stack = stack.take(kept(stack.shape[axis + 1], idx, memo), axis + 1)
                for k, arr in zip(at, stack, strict=True):
                    arrays[k] = arr
            keys = self.keys()
            self._made = [(e, leaf, data) for (e, leaf), data in
                          zip(keys, tensors(arrays), strict=True)]
        return self._made

    def native(self) -> tuple[np.ndarray, list[tuple[Any, Any]]] | None:
        """The constants to slice as prune.cc's records (handle, cut axes, then per
        axis: axis, count, removed indices), and (constant, data) of the given ones;
        None when an extent is not static (`made` then slices them)."""
        view = self.view
        words: list[int] = []
        add = words.extend
        for expr, leaf, removed in self.cut:
            shape = view.shape(leaf)
            if shape is None:
                return None
            add((expr.__chandle__(), len(removed)))
            for axis, idx in removed.items():
                if not 0 <= axis < len(shape) or type(shape[axis]) is not int:
                    return None
                add((axis, len(idx)))
                add(idx)
        given = [(e, data) for (e, _, _), (_, _, data) in
                 zip(self.given, self.made_given(), strict=True)]
        return np.concatenate([np.array(words, dtype=np.int64),
                               *(records for records, _ in self.packed)]), given

    def made_given(self) -> ConstSlices:
        """The given ones as TVM tensors (made with the rest when `made` runs)."""
        if self._made is not None:
            return self._made[:len(self.given)]
        return [(e, leaf, data) for (e, leaf, _), data in
                zip(self.given, tensors([a for _, _, a in self.given]), strict=True)]

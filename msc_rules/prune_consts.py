"""The constants a prune changes: sliced by the native rebuild (native/prune.cc) as it
rebuilds the function, or here with numpy when the Python rebuild runs.

A prune gives each constant that loses channels its removed indices per axis
(`add_cut`); the oracle's masked module gives zeroed copies (`add_data`). `native`
packs them as prune.cc takes them (the kept indices of each cut axis, and the given
data); `made` slices them here, once, when a Python rebuild asks for the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm

from .graph import DependencyView

ConstSlices = list[tuple[Any, int, Any]]
"""The sliced constants: (the old constant, its leaf, its new data as a TVM tensor)."""


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
        self.cut: list[tuple[Any, int, Mapping[int, Sequence[int]]]] = []
        self._made: ConstSlices | None = None

    def add_data(self, expr: Any, leaf: int, data: np.ndarray) -> None:
        """A constant's new data, as is (a mask's zeroed copy)."""
        self.given.append((expr, leaf, data))

    def add_cut(self, expr: Any, leaf: int, removed: Mapping[int, Sequence[int]]) -> None:
        """A constant to slice: its removed indices per axis."""
        self.cut.append((expr, leaf, removed))

    def keys(self) -> list[tuple[Any, int]]:
        """(the old constant, its leaf) of each."""
        return [(e, leaf) for e, leaf, _ in self.given] + [(e, leaf) for e, leaf, _ in self.cut]

    def made(self) -> ConstSlices:
        """(the old constant, its leaf, its new data) of each, sliced here (once)."""
        if self._made is None:
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

    def native(self) -> tuple[bytes, list[tuple[Any, Any]]] | None:
        """The constants to slice as prune.cc's records (handle, cut axes, then per
        axis: axis, count, kept indices), and (constant, data) of the given ones; None
        when an extent is not static (`made` then slices them)."""
        view = self.view
        memo: dict[tuple[int, ...], list[int]] = {}
        words: list[int] = []
        for expr, leaf, removed in self.cut:
            shape = view.shape(leaf)
            if shape is None:
                return None
            words.extend((expr.__chandle__(), len(removed)))
            for axis, idx in removed.items():
                ext = shape[axis] if 0 <= axis < len(shape) else None
                if type(ext) is not int:
                    return None
                key = (axis, ext, *idx)
                part = memo.get(key)
                if part is None:
                    keep = kept(ext, idx, {}).tolist()
                    part = memo[key] = [axis, len(keep), *keep]
                words.extend(part)
        given = [(e, data) for (e, _, _), (_, _, data) in
                 zip(self.given, self.made_given(), strict=True)]
        return np.array(words, dtype=np.int64).tobytes(), given

    def made_given(self) -> ConstSlices:
        """The given ones as TVM tensors (made with the rest when `made` runs)."""
        if self._made is not None:
            return self._made[:len(self.given)]
        return [(e, leaf, data) for (e, leaf, _), data in
                zip(self.given, tensors([a for _, _, a in self.given]), strict=True)]

"""What a prune changes besides constants, reshape shapes and conv group counts: the
boundaries of a split whose parts lost channels, and weight parameters (a module
imported with its weights as function parameters): their types, and the values the
frontend keeps in the function's "params" attribute (`detach_params` reads them).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .errors import PruneError


class ParamEdit:
    """The entry function's weight parameters that lose channels: vars of the sliced
    types (a prune), and the removed indices, to slice or (for the oracle's masked
    module) zero the function's "params" attribute alike."""

    def __init__(self, entry: str) -> None:
        self.entry = entry
        self.vars: dict[int, Any] = {}  # param handle -> the var of the sliced type
        self.cuts: dict[int, Mapping[int, Sequence[int]]] = {}  # param handle -> axis -> removed

    def add(self, var: Any, axes: Mapping[int, Sequence[int]], zero: bool) -> None:
        """Record a parameter's removed indices (and its sliced var for a prune)."""
        h = var.__chandle__()
        self.cuts[h] = axes
        if not zero:
            vals = list(var.ty.shape.values)
            for axis, idx in axes.items():
                vals[axis] = int(vals[axis]) - len(idx)
            self.vars[h] = relax.Var(var.name, relax.TensorType(relax.ShapeExpr(vals),
                                                                var.ty.dtype), var.span)

    def retype(self, mutator: Any, func: Any) -> Any:
        """`func` with the sliced parameters (`mutator` remaps their uses) and its
        "params" attribute sliced or zeroed alike."""
        new_params = []
        for p in func.params:
            nv = self.vars.get(p.__chandle__())
            if nv is not None:
                mutator.set_var_remap(p, nv)
            new_params.append(nv if nv is not None else p)
        attrs = func.attrs
        out = relax.Function(new_params, func.body, None, func.is_pure, attrs, func.span)
        kept = attrs["params"] if attrs is not None and "params" in attrs else None
        if kept is not None:
            weights = list(func.params)[len(func.params) - len(kept):]
            vals = []
            for p, t in zip(weights, kept, strict=True):
                axes = self.cuts.get(p.__chandle__())
                vals.append(t if axes is None else tvm.runtime.tensor(
                    cut_array(t.numpy(), axes, zero=not self.vars)))
            out = out.with_attr("params", vals)
        return out


def cut_array(arr: np.ndarray, axes: Mapping[int, Any], zero: bool) -> np.ndarray:
    """`arr` without the indices `axes[axis]` of each axis, or with them set to zero."""
    for axis, idx in sorted(axes.items()):
        keep = np.ones(arr.shape[axis], dtype=bool)
        keep[sorted(idx)] = False
        if zero:
            shape = [1] * arr.ndim
            shape[axis] = -1
            arr = np.where(keep.reshape(shape), arr, np.zeros((), arr.dtype))
        else:
            arr = arr.compress(keep, axis=axis)
    return np.ascontiguousarray(arr)


def split_attrs(view: Any, site: Any, cut: Mapping[int, Mapping[int, Sequence[int]]]) -> Any:
    """The attributes of a split whose input lost channels along the split axis: the
    parts' new boundaries (sections become explicit indices); None when the cut is on
    another axis."""
    data = site.args[0]
    axis = int(site.attrs.axis) % view.leaf_ndim[data]
    idx = cut[data].get(axis)
    if not idx:
        return None
    bounds = [0]
    for leaf in site.out:
        shape = view.shape(leaf)
        ext = shape[axis] if shape is not None else None
        if not isinstance(ext, int):
            raise PruneError("a split of pruned channels into parts of unknown size")
        bounds.append(bounds[-1] + ext)
    new = [b - sum(1 for i in idx if i < b) for b in bounds]
    if any(a == b for a, b in itertools.pairwise(new)):
        raise PruneError(f"the prune removes every channel of a part of split "
                         f"'{view.values[site.value_id].name}'")
    return relax.op.split(site.call.args[0], new[1:-1], int(site.attrs.axis)).attrs

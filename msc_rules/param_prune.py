"""The weights a caller holds, for a prune of a module whose weights are parameters.

A module imported with `keep_params_as_input=True` (or after `detach_params`) takes
its weights as function parameters: `prune` gives their parameters the sliced types
(and slices the values a frontend kept in the function's "params" attribute), but
the arrays the caller passes at run time must be sliced alike. `param_slices` says
how (per parameter name: the kept indices of each pruned axis), `prune_params`
does it on the caller's arrays, in either of the forms TVM users hold them: by
parameter name, or `detach_params`'s {function name: [weights in parameter order]}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tvm

from .channel_graph import channel_graph
from .channels import _Namer, build_groups
from .dsl.ruleset import RuleSet
from .errors import PruneError
from .prune import Selection, check_selection, plan_prune
from .util import paused_gc

ParamSlices = dict[str, dict[int, list[int]]]


def param_slices(mod: tvm.IRModule, selection: Selection, allow_io: bool = False,
                 entry_name: str = "main", rules: RuleSet | None = None) -> ParamSlices:
    """For each weight parameter of `entry_name` that a prune of `selection` slices:
    {axis: the kept indices, sorted}; the same checks as `prune`."""
    with paused_gc():
        g = channel_graph(mod, entry_name, rules)
        names = _Namer(mod, g.result, entry_name, planned=False)
        groups = build_groups(g, names)
        cut = plan_prune(groups, check_selection(groups, selection, allow_io))
    view = g.view
    out: ParamSlices = {}
    for leaf, axes in sorted(cut.items()):
        v = view.values[view.leaf_value[leaf]]
        if v.kind != "param":
            continue
        if leaf in g.io_leaves:
            raise PruneError(f"the channels reach the model input '{v.name}': "
                             "a prune cannot change what callers pass")
        shape = view.shape(leaf)
        for axis, idx in sorted(axes.items()):
            ext = shape[axis] if shape is not None else None
            if not isinstance(ext, int):
                raise PruneError(f"parameter '{v.name}' has a symbolic extent on axis {axis}")
            gone = set(idx)
            out.setdefault(v.name, {})[axis] = [i for i in range(ext) if i not in gone]
    return out


def prune_params(mod: tvm.IRModule, selection: Selection, params: Mapping[str, Any],
                 allow_io: bool = False, entry_name: str = "main",
                 rules: RuleSet | None = None) -> dict[str, Any]:
    """The caller's weights for `prune(mod, selection)`: `params` by parameter name, or
    as `detach_params` gives them ({entry_name: [weights in parameter order]}); the
    same form back, pruned weights sliced (tvm tensors stay tvm tensors), others as
    they were. `mod` is the module before the prune."""
    spec = param_slices(mod, selection, allow_io, entry_name, rules)  # checks the entry
    func = mod[entry_name]
    declared = {p.name: p for p in func.params}
    detached = params.get(entry_name)
    if entry_name not in declared and isinstance(detached, list | tuple):
        if len(detached) > len(func.params):
            raise PruneError(f"{len(detached)} weights for the {len(func.params)} "
                             f"parameters of '{entry_name}'")
        weights = list(func.params)[len(func.params) - len(detached):]
        sliced = [_take(p, v, spec.get(p.name)) for p, v in zip(weights, detached,
                                                                 strict=True)]
        return {**params, entry_name: sliced}
    unknown = sorted(k for k in params if k not in declared)
    if unknown:
        raise PruneError(f"not parameters of '{entry_name}': {unknown}")
    missing = sorted(k for k in spec if k not in params)
    if missing:
        raise PruneError(f"the prune slices parameters that were not given: {missing}")
    return {k: _take(declared[k], v, spec.get(k)) for k, v in params.items()}


def _take(param: Any, value: Any, kept: dict[int, list[int]] | None) -> Any:
    if kept is None:
        return value
    arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    want = [int(d) if isinstance(d, tvm.prim.IntImm | int) else None
            for d in param.ty.shape.values]
    if len(arr.shape) != len(want) or any(w is not None and w != a
                                          for w, a in zip(want, arr.shape, strict=False)):
        raise PruneError(f"parameter '{param.name}': the value has shape "
                         f"{list(arr.shape)}, the function declares {want}")
    for axis, idx in sorted(kept.items()):
        arr = np.take(arr, np.asarray(idx, dtype=np.int64), axis=axis)
    arr = np.ascontiguousarray(arr)
    return tvm.runtime.tensor(arr) if isinstance(value, tvm.runtime.Tensor) else arr

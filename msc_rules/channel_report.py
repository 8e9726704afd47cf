"""What `msc-rules channels` and `msc-rules prune` print: the groups as a table, JSON
or markdown; the magnitude criterion (L1 norm of the producers' weights per channel,
Torch-Pruning's default); parameter and MAC counts before and after a prune."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import tvm

from .channels import ChannelGroup
from .errors import PruneError
from .report import _grid

_CONVS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d")


def _group_row(g: ChannelGroup) -> list[Any]:
    prods = ", ".join(sorted({m.tensor for m in g.producers}))
    cons = ", ".join(sorted({m.tensor for m in g.consumers}))
    unit = sorted({m.block for m in g.producers})
    state = "exact" if g.exact else "no: " + "; ".join(g.reasons)
    return [g.id, g.size, "/".join(map(str, unit)), prods, cons or "-",
            len(g.members), "yes" if g.touches_io else "no", state]


def render_groups(groups: Sequence[ChannelGroup], model: str, fmt: str = "table") -> str:
    """The groups as `table`, `json` or `markdown`."""
    if fmt == "json":
        return json.dumps({"kind": "channel_groups", "model": model, "groups": [
            {**{k: v for k, v in asdict(g).items() if k != "members"},
             "members": [{k: v for k, v in asdict(m).items() if k != "leaf"}
                         for m in g.members]} for g in groups]}, indent=2)
    if fmt not in ("table", "markdown"):
        raise PruneError(f"unknown format '{fmt}' (use table, json or markdown)")
    md = fmt == "markdown"
    head = [f"{'# ' if md else ''}Channel groups of {model}: {len(groups)} groups, "
            f"{sum(g.exact for g in groups)} exact", ""]
    return "\n".join(head) + _grid(md, ["id", "size", "unit", "producers", "consumers",
                                        "members", "io", "exact"],
                                   (_group_row(g) for g in groups))


def _const_array(view: Any, leaf: int) -> np.ndarray | None:
    v = view.values[view.leaf_value[leaf]]
    if v.kind != "const":
        return None
    arr: np.ndarray = v.expr.value.numpy()
    return arr


def channel_scores(view: Any, group: ChannelGroup) -> np.ndarray:
    """Per channel, the L1 norm of the producers' weights (all entries of its block)."""
    score = np.zeros(group.size)
    for m in group.producers:
        arr = _const_array(view, m.leaf)
        if arr is None:
            continue
        a = np.moveaxis(np.abs(arr.astype(np.float64)), m.axis, 0)
        flat = a.reshape(a.shape[0], -1).sum(axis=1)
        for c in range(group.size):
            score[c] += flat[m.indices([c])].sum()
    return score


def magnitude_selection(view: Any, groups: Sequence[ChannelGroup], ratio: float,
                        allow_io: bool = False) -> dict[int, list[int]]:
    """Per exact group (inside the model unless allow_io), keep the `1 - ratio` share of
    channels with the largest L1 norm (at least one), in index order."""
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"--ratio must be in [0, 1): got {ratio}")
    sel: dict[int, list[int]] = {}
    for g in groups:
        if not g.exact or (g.touches_io and not allow_io):
            continue
        keep = max(1, round(g.size * (1.0 - ratio)))
        if keep == g.size:
            continue
        order = np.argsort(-channel_scores(view, g), kind="stable")
        sel[g.id] = sorted(int(i) for i in order[:keep])
    return sel


def _dims(ty: Any) -> list[int] | None:
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    # a symbolic extent (the batch) counts as 1: the figures are per sample
    return [int(d) if isinstance(d, tvm.prim.IntImm) else 1 for d in shape.values]


def count_params(mod: tvm.IRModule, entry_name: str = "main") -> int:
    """Elements of the constants (weights) the entry function uses."""
    from .engine import infer_layouts

    view = infer_layouts(mod, None, entry_name).view
    return sum(int(np.prod(v.expr.value.shape)) for v in view.values if v.kind == "const")


def count_macs(mod: tvm.IRModule, entry_name: str = "main") -> int:
    """Multiply-accumulates of the convs and matmuls (symbolic extents taken as 1)."""
    from .engine import infer_layouts

    view = infer_layouts(mod, None, entry_name).view
    total = 0
    for site in view.sites:
        if site.op not in _CONVS and site.op != "relax.matmul":
            continue
        out = view.values[site.value_id].ty
        o = _dims(out)
        args = list(site.call.args)
        if o is None:
            continue
        if site.op == "relax.matmul":
            lhs = _dims(args[0].ty)
            if lhs:
                total += int(np.prod(o)) * lhs[-1]
            continue
        w = _dims(args[1].ty)
        if w:
            # each output element sums over the kernel's I * spatial entries
            total += int(np.prod(o)) * int(np.prod(w)) // max(w[0], 1)
    return total


@dataclass(frozen=True)
class PruneSummary:
    """What `msc-rules prune` did."""

    model: str
    ratio: float
    groups: int
    pruned: dict[int, tuple[int, int]]  # group id -> (size before, after)
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    output: str = ""
    skipped: list[str] = field(default_factory=list)

    def render(self, fmt: str = "table") -> str:
        """`table`, `json` or `markdown`."""
        if fmt == "json":
            return json.dumps({"kind": "prune", **asdict(self)}, indent=2)
        md = fmt == "markdown"
        lines = [f"{'# ' if md else ''}Pruned {self.model} at ratio {self.ratio:g}: "
                 f"{len(self.pruned)} of {self.groups} groups", ""]
        lines.append(_grid(md, ["", "before", "after", "kept"], [
            ["parameters", self.params_before, self.params_after,
             f"{100.0 * self.params_after / max(self.params_before, 1):.1f}%"],
            ["MACs", self.macs_before, self.macs_after,
             f"{100.0 * self.macs_after / max(self.macs_before, 1):.1f}%"]]))
        lines += ["", _grid(md, ["group", "channels before", "after"],
                            [[g, a, b] for g, (a, b) in sorted(self.pruned.items())])]
        if self.skipped:
            lines += ["", "not pruned:"] + [f"  {s}" for s in self.skipped]
        return "\n".join(lines)


def prune_by_magnitude(mod: tvm.IRModule, ratio: float, allow_io: bool = False,
                       entry_name: str = "main", rules: Any = None
                       ) -> tuple[tvm.IRModule, list[ChannelGroup], dict[int, list[int]]]:
    """Prune every exact group by the L1 criterion (see magnitude_selection); returns
    the pruned module, the groups of the original and the kept channels per group."""
    from .channel_graph import channel_graph
    from .channels import _Letters, _Namer, build_groups
    from .prune import _apply, check_selection, plan_prune

    g = channel_graph(mod, entry_name, rules, layouts=False)  # (letters: on first read)
    names = _Namer(mod, g.result, entry_name)
    groups = build_groups(g, names, _Letters(g.view, g.result.rules))
    sel = magnitude_selection(g.view, groups, ratio, allow_io)
    removed = check_selection(groups, sel, allow_io)
    return _apply(g, mod, plan_prune(groups, removed), False, names), groups, sel

"""The numeric oracle of a prune: the pruned module against the original with the
consumers' input slices of the removed channels set to zero (Relax VM on CPU)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

import msc_rules


def run(mod: tvm.IRModule, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Compile for llvm and run main on the Relax VM; the outputs, flattened."""
    ex = tvm.compile(mod, "llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    flat: list[np.ndarray] = []
    stack = [out]
    while stack:
        o = stack.pop(0)
        if isinstance(o, tvm.runtime.Tensor):
            flat.append(o.numpy())
        else:
            stack[:0] = list(o)
    return flat


def half_selection(groups: Sequence[msc_rules.ChannelGroup],
                   seed: int = 0) -> dict[int, list[int]]:
    """Keep a random half (at least one) of every exact group that stays inside the model."""
    rng = np.random.default_rng(seed)
    sel: dict[int, list[int]] = {}
    for g in groups:
        if g.exact and not g.touches_io and g.size >= 2:
            keep = max(1, g.size // 2)
            sel[g.id] = sorted(int(i) for i in rng.choice(g.size, keep, replace=False))
    return sel


def check(mod: tvm.IRModule, inputs: Sequence[np.ndarray],
          selection: dict[int, list[int]]) -> tuple[float, list[np.ndarray]]:
    """Prune and mask the same selection, run both; assert they agree (rtol 1e-5) and
    return the largest absolute difference and the masked module's outputs."""
    pruned = run(msc_rules.prune(mod, selection), inputs)
    masked = run(msc_rules.mask_consumers(mod, selection), inputs)
    assert len(pruned) == len(masked)
    worst = 0.0
    for p, m in zip(pruned, masked, strict=True):
        assert p.shape == m.shape
        np.testing.assert_allclose(p, m, rtol=1e-5, atol=1e-5)
        worst = max(worst, float(np.abs(p - m).max(initial=0.0)))
    return worst, masked

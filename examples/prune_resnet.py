"""Worked example for the README: channel groups of a ResNet-style CNN, a 50% prune by
weight magnitude, parameters before/after, and the numeric oracle's largest difference.

    PYTHONPATH=. python examples/prune_resnet.py
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

import msc_rules
from msc_rules.channel_report import count_macs, count_params, prune_by_magnitude, render_groups


class Block(torch.nn.Module):
    """conv-bn-relu, conv-bn, a residual add (a 1x1 conv on the shortcut when it widens)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout)
        self.c2, self.b2 = torch.nn.Conv2d(cout, cout, 3, padding=1), torch.nn.BatchNorm2d(cout)
        self.short = torch.nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class ResNet(torch.nn.Module):
    """stem, two blocks (the second widens), global pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = torch.nn.Sequential(Block(16, 16), Block(16, 32))
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(torch.relu(self.stem(x))).mean((2, 3)))


def run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    """Compile for CPU and run on the Relax VM."""
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x))[0].numpy()


def main() -> None:
    """Print the groups, prune at 50%, print the counts and the oracle's difference."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        mod = from_exported_program(torch.export.export(ResNet().eval(), (x,)))
    mod = msc_rules.annotate(mod)

    groups = msc_rules.channel_groups(mod)
    print(render_groups(groups, "ResNet", "table"))

    pruned, _, kept = prune_by_magnitude(mod, 0.5)
    print(f"\npruned groups: {sorted(kept)}")
    print(f"parameters: {count_params(mod)} -> {count_params(pruned)}")
    print(f"MACs per sample: {count_macs(mod) // 2} -> {count_macs(pruned) // 2}")

    reference = msc_rules.mask_consumers(mod, kept)  # removed channels' inputs zeroed
    diff = np.abs(run(pruned, x.numpy()) - run(reference, x.numpy())).max()
    print(f"oracle: max |pruned - masked original| = {diff:.3g}")


if __name__ == "__main__":
    main()

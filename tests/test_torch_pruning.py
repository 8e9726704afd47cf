"""Our groups next to Torch-Pruning's (DepGraph) on the same torch models.

Compared: for each group, the torch modules (conv, linear) whose output channels it
prunes. Torch-Pruning lists a depthwise conv among them (its `prune_out_channels`);
here its weight is a follow member of the group (role "follow", axis 0), and it is
counted on the same side. Grouped convs are pruned as Torch-Pruning's pruners do (the
same positions in every group, the group count kept): at 50% both give the same weight
shapes. Differences that are by design, not compared here: groups that reach the model
output are listed by both but pruned here only with allow_io; and attention heads need
Torch-Pruning's per-model head configuration (`num_heads`), where here they come from
the reshapes (tests/test_channels.py checks them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from channel_models import (
    TORCH_MODELS,
    conv_bias_net,
    dense_net,
    depthwise_net,
    fused_qkv,
    grouped_net,
)
from models import resnet18_like, tiny_mlp

import msc_rules
from msc_rules.channels import CONSUMER, FOLLOW, PRODUCER
from msc_rules.engine import infer_layouts

tp = pytest.importorskip("torch_pruning")

_LAYERS = (torch.nn.Conv2d, torch.nn.Linear)


def _small(name: str, build: Callable[[], tuple[object, np.ndarray]]
           ) -> Callable[[], tuple[object, torch.nn.Module, np.ndarray]]:
    def get() -> tuple[object, torch.nn.Module, np.ndarray]:
        mod, x = build()
        return mod, TORCH_MODELS[name], x
    return get


def _imported(build: Callable[[], object]) -> Callable[[], tuple[object, torch.nn.Module,
                                                                  np.ndarray]]:
    def get() -> tuple[object, torch.nn.Module, np.ndarray]:
        m = build()
        return m.mod, m.torch_module, m.example_inputs[0]  # type: ignore[attr-defined]
    return get


MODELS = {
    "conv_bias_net": _small("conv_bias_net", conv_bias_net),
    "dense_net": _small("dense_net", dense_net),
    "depthwise_net": _small("depthwise_net", depthwise_net),
    "fused_qkv": _small("fused_qkv", fused_qkv),
    "grouped_net": _small("grouped_net", grouped_net),
    "tiny_mlp": _imported(tiny_mlp),
    "resnet18_like": _imported(resnet18_like),
}


def _tp_groups(model: torch.nn.Module, x: np.ndarray) -> set[frozenset[str]]:
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.from_numpy(x))
    names = {m: n for n, m in model.named_modules()}
    out: set[frozenset[str]] = set()
    for group in dg.get_all_groups(root_module_types=list(_LAYERS)):
        mods = {names[dep.target.module] for dep, _ in group
                if isinstance(dep.target.module, _LAYERS)
                and getattr(dep.handler, "__name__", "") == "prune_out_channels"}
        out.add(frozenset(mods))
    return out


def _our_groups(mod: object, model: torch.nn.Module) -> set[frozenset[str]]:
    view = infer_layouts(mod).view  # type: ignore[arg-type]
    weights = [(n, m.weight.detach().numpy()) for n, m in model.named_modules()
               if isinstance(m, _LAYERS)]

    def module_of(leaf: int) -> str | None:
        v = view.values[view.leaf_value[leaf]]
        if v.kind != "const":
            return None
        arr = v.expr.value.numpy()
        for n, w in weights:
            if w.shape == arr.shape and np.array_equal(w, arr):
                return n
        return None

    out: set[frozenset[str]] = set()
    for g in msc_rules.channel_groups(mod):  # type: ignore[arg-type]
        mods = {module_of(m.leaf) for m in g.members
                if m.role in (PRODUCER, FOLLOW) and m.axis == 0}
        out.add(frozenset(x for x in mods if x is not None))
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_groups_match_torch_pruning(name: str) -> None:
    mod, model, x = MODELS[name]()
    assert _our_groups(mod, model) == _tp_groups(model, x)


def _weight_shapes(mod: object, model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of the conv and linear weights of a module, by torch module name (found
    on the unpruned module, by value; names survive the prune)."""
    view = infer_layouts(mod).view  # type: ignore[arg-type]
    out: dict[str, tuple[int, ...]] = {}
    for g in msc_rules.channel_groups(mod):  # type: ignore[arg-type]
        for m in g.members:
            if m.kind == "const" and m.role in (PRODUCER, FOLLOW, CONSUMER):
                out[m.tensor] = tuple(int(d) for d in view.shape(m.leaf) or ())
    return out


@pytest.mark.parametrize("name", ["grouped_net", "depthwise_net"])
def test_grouped_convs_prune_to_torch_prunings_shapes(name: str) -> None:
    import copy

    from prune_oracle import half_selection

    mod, model, x = MODELS[name]()
    torch_names = _const_modules(mod, model)
    groups = msc_rules.channel_groups(mod)  # type: ignore[arg-type]
    pruned = msc_rules.prune(mod, half_selection(groups))  # type: ignore[arg-type]
    ours = {torch_names[k]: v for k, v in _weight_shapes(pruned, model).items()
            if k in torch_names}
    theirs_model = copy.deepcopy(model).eval()
    last = [m for m in theirs_model.modules() if isinstance(m, torch.nn.Linear)][-1]
    tp.pruner.MagnitudePruner(
        theirs_model, torch.from_numpy(x), importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5, ignored_layers=[last]).step()
    theirs = {n: tuple(m.weight.shape) for n, m in theirs_model.named_modules()
              if isinstance(m, _LAYERS)}
    assert ours == theirs
    assert any(1 < m.groups < m.out_channels for m in model.modules()
               if isinstance(m, torch.nn.Conv2d))


def _const_modules(mod: object, model: torch.nn.Module) -> dict[str, str]:
    """Our name of each conv and linear weight constant -> its torch module's name."""
    view = infer_layouts(mod).view  # type: ignore[arg-type]
    weights = [(n, m.weight.detach().numpy()) for n, m in model.named_modules()
               if isinstance(m, _LAYERS)]
    out: dict[str, str] = {}
    for g in msc_rules.channel_groups(mod):  # type: ignore[arg-type]
        for m in g.members:
            v = view.values[view.leaf_value[m.leaf]]
            if v.kind != "const":
                continue
            arr = v.expr.value.numpy()
            for n, w in weights:
                if w.shape == arr.shape and np.array_equal(w, arr):
                    out[m.tensor] = n
    return out

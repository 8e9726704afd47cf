"""Annotation and FoldConstant (the README's "Running it with other passes"): folded
constants are new nodes without markers, so annotation runs after FoldConstant (or
again after it); then every weight is named after its consumer and has a layout.

A CNN with conv biases (torch imports them as `reshape(bias)` + add) and an MLP (torch
imports Linear weights as `permute_dims(W)` + matmul) both fold those views away.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import tvm
from models import tiny_mlp, unet_like
from tvm import relax

import msc_rules
from msc_rules.library import default_rules

Const = tvm.ir.expr.GenericConst
BUILDERS: dict[str, Callable[[], tvm.IRModule]] = {
    "cnn": lambda: unet_like().mod,
    "mlp": lambda: tiny_mlp().mod,
}


def _calls(mod: tvm.IRModule) -> list[relax.Call]:
    return [b.value for block in mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]


def _weights(mod: tvm.IRModule) -> list[tuple[Const, relax.Call, int]]:
    """(constant of rank >= 1, its first consumer, argument position), in program order."""
    seen: set[int] = set()
    out = []
    for call in _calls(mod):
        for i, a in enumerate(call.args):
            if isinstance(a, Const) and a.ty.ndim > 0 and a.__chandle__() not in seen:
                seen.add(a.__chandle__())
                out.append((a, call, i))
    return out


def _check_named_and_lettered(mod: tvm.IRModule) -> int:
    rules = default_rules()
    weights = _weights(mod)
    for const, call, i in weights:
        roles = rules.roles(str(call.op.name)) or ()
        assert i < len(roles), call.op.name
        assert msc_rules.get_name(const) == f"{msc_rules.get_name(call)}.{roles[i]}"
        assert len(msc_rules.get_layout(const)) == const.ty.ndim, \
            (msc_rules.get_name(const), msc_rules.get_layout(const))
    return len(weights)


def _folded_views(mod: tvm.IRModule) -> int:
    """Views of a constant (permute_dims, reshape): what FoldConstant folds away."""
    return sum(str(c.op.name) in ("relax.permute_dims", "relax.reshape")
               and isinstance(c.args[0], Const) for c in _calls(mod))


@pytest.mark.parametrize("model", sorted(BUILDERS))
def test_fold_then_annotate_names_and_letters_every_weight(model: str) -> None:
    mod = BUILDERS[model]()
    assert _folded_views(mod) > 0  # the import has weight views to fold
    folded = relax.transform.FoldConstant()(mod)
    assert _folded_views(folded) == 0
    assert _check_named_and_lettered(msc_rules.annotate(folded)) >= 4


@pytest.mark.parametrize("model", sorted(BUILDERS))
def test_annotate_fold_annotate_again(model: str) -> None:
    annotated = msc_rules.annotate(BUILDERS[model]())
    folded = relax.transform.FoldConstant()(annotated)
    # the constants FoldConstant made carry no markers; every node it kept keeps its own
    new = [c for c, _, _ in _weights(folded) if not msc_rules.get_name(c)]
    assert new and all(msc_rules.get_layout(c) == "" for c in new)
    kept = [call for call in _calls(folded) if msc_rules.get_name(call)]
    assert len(kept) == len(_calls(folded))
    # annotating again fills them in and changes no existing name
    again = msc_rules.annotate(folded)
    assert [msc_rules.get_name(c) for c in _calls(again)] == \
        [msc_rules.get_name(c) for c in _calls(folded)]
    _check_named_and_lettered(again)

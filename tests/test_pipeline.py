"""The `msc_rules` relax pipeline: annotate before lowering, compile, run, same numbers."""

from __future__ import annotations

from typing import Any

import models
import numpy as np
import pytest
import tvm
from tvm import relax

import msc_rules
from msc_rules import passes, span


@tvm.instrument.pass_instrument
class Capture:
    """Keeps the module as it was right after the named passes ran."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self.seen: dict[str, tvm.IRModule] = {}
        self.order: list[str] = []

    def run_after_pass(self, mod: tvm.IRModule, info: Any) -> None:
        self.order.append(str(info.name))
        if info.name in self.names:
            self.seen[str(info.name)] = mod


def run(mod: tvm.IRModule, inputs: tuple[np.ndarray, ...], pipeline: Any = "default",
        instruments: list[Any] | None = None) -> list[np.ndarray]:
    with tvm.transform.PassContext(instruments=instruments or []):
        exe = tvm.compile(mod, target="llvm", relax_pipeline=pipeline)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    outs = [out] if hasattr(out, "numpy") else list(out)
    return [o.numpy() for o in outs]


def first_conv(mod: tvm.IRModule) -> Any:
    return next(b.value for blk in mod["main"].body.blocks for b in blk.bindings
                if isinstance(b.value, tvm.ir.Call) and isinstance(b.value.op, tvm.ir.Op)
                and str(b.value.op.name) == "relax.nn.conv2d")


def test_pipeline_is_registered() -> None:
    assert msc_rules.PIPELINE_NAME == "msc_rules"
    assert msc_rules.PIPELINE_NAME in relax.pipeline.PIPELINE_MAP
    assert isinstance(relax.get_pipeline("msc_rules"), tvm.transform.Pass)
    passes._register_pipeline()  # registering again (a re-import) is harmless


@pytest.fixture(scope="module")
def resnet() -> models.ImportedModel:
    return models.resnet18_like()


@pytest.fixture(scope="module")
def reference(resnet: models.ImportedModel) -> list[np.ndarray]:
    return run(resnet.mod, resnet.example_inputs)


def test_registered_pipeline_annotates_then_compiles(resnet: models.ImportedModel,
                                                     reference: list[np.ndarray]) -> None:
    cap = Capture("SetExprName", "SetExprLayout")
    got = run(resnet.mod, resnet.example_inputs, "msc_rules", [cap])
    # the annotation passes ran first, before anything lowered the module
    assert cap.order.index("SetExprName") < cap.order.index("SetExprLayout")
    assert cap.order.index("SetExprLayout") < cap.order.index("LegalizeOps")
    conv = first_conv(cap.seen["SetExprLayout"])
    assert span.get_markers(conv) == {"Name": "conv2d", "Layout": "NCHW"}
    assert msc_rules.get_name(conv.args[1]) == "conv2d.weight"
    assert len(got) == len(reference)
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_recipe_sequential(resnet: models.ImportedModel,
                           reference: list[np.ndarray]) -> None:
    """The hand-written recipe from annotated_pipeline's docstring."""
    seq = tvm.transform.Sequential([
        msc_rules.SetExprName(),
        msc_rules.SetExprLayout(),
        relax.get_pipeline("default"),
    ])
    got = run(resnet.mod, resnet.example_inputs, seq)
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_annotated_pipeline_options() -> None:
    m = models.tiny_mlp()
    ref = run(m.mod, m.example_inputs)
    cap = Capture("SetExprName")
    pipeline = msc_rules.annotated_pipeline(base=relax.get_pipeline("default_build"),
                                            var_names={"lv1": "fc1"})
    got = run(m.mod, m.example_inputs, pipeline, [cap])
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    named = cap.seen["SetExprName"]
    names = {str(b.var.name): msc_rules.get_name(b.value)
             for blk in named["main"].body.blocks for b in blk.bindings}
    assert names["lv1"] == "fc1"
    # annotation_passes gives the two passes for a Sequential of one's own
    first, second = msc_rules.annotation_passes()
    assert first.info.name == "SetExprName" and second.info.name == "SetExprLayout"

"""The rule library on real models (issue 4 acceptance).

GPT-2-like, Llama-like and ViT-like HF transformers, a MobileNet-like CNN and a UNet-like
model (all exported from torch with a symbolic batch, and a symbolic sequence length for
the sequence models, then imported with `from_exported_program`), and a CNN imported
through ONNX with a symbolic batch (`tests/models.py` builds them).

For each model:
- every tensor-typed value (params, constants, bindings of every function reached) gets
  a layout with exactly ndim letters;
- the symbolic-batch oracle holds: every tensor axis whose size is exactly the batch
  (sequence) symbol carries the letter of the input's batch (sequence) axis. A tensor
  with the symbol on several axes (attention scores [b, h, s, s], causal masks
  [b, 1, s, s]) can name a letter only once, so there exactly one of those axes must
  carry it (which one is a convention: matmul outputs take the left operand's letters,
  so the query axis of Q.K^T carries it);
- every op the model uses has a rule, and there are at most MAX_CONFLICTS conflicts
  (zero today: a conflict report full of similar cases means a rule's convention is
  wrong, not the model).
Run with `-s` to see one summary line per model (tensors, conflicts, time).
"""

from __future__ import annotations

import time

import pytest
import tvm
from tvm import relax

import msc_rules

models = pytest.importorskip("models")
oracles = pytest.importorskip("oracles")

MAX_CONFLICTS = 2

# builder name -> the builder (all take dynamic=True: symbolic batch, and seq for
# sequence models)
MODELS = ["gpt2_like", "llama_like", "vit_like", "mobilenet_like", "unet_like", "onnx_cnn"]
SLOW = getattr(models, "SLOW_BUILDERS", frozenset())


def _params(names: list[str]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _tensor_exprs(mod: tvm.IRModule, entry: str = "main") -> list[tuple[str, relax.Expr]]:
    """Params, binding vars and constants of `entry` with a tensor (or tuple) type,
    found by walking the IR (independently of the dependency view)."""
    func = mod[entry]
    found: list[tuple[str, relax.Expr]] = [(p.name, p) for p in func.params]
    consts: list[relax.Expr] = []

    def visit(e: relax.Expr) -> None:
        if isinstance(e, tvm.ir.GenericConst) and not any(e.same_as(c) for c in consts):
            consts.append(e)

    relax.analysis.post_order_visit(func.body, visit)
    for block in func.body.blocks:
        for b in block.bindings:
            found.append((b.var.name, b.var))
    found += [("const", c) for c in consts]
    return [(n, e) for n, e in found if _has_tensor(e.ty)]


def _has_tensor(ty: object) -> bool:
    if isinstance(ty, relax.TensorType):
        return True
    return isinstance(ty, tvm.ir.type.TupleType) and any(_has_tensor(f) for f in ty.fields)


def _expected_marker_ok(ty: object, marker: str) -> bool:
    if isinstance(ty, relax.TensorType):
        return ty.ndim < 0 or len(marker) == ty.ndim
    if isinstance(ty, tvm.ir.type.TupleType) and all(
        isinstance(f, relax.TensorType) for f in ty.fields
    ):
        parts = marker.split(",")
        return len(parts) == len(ty.fields) and all(
            f.ndim < 0 or len(p) == f.ndim for p, f in zip(parts, ty.fields, strict=True)
        )
    return True  # nested tuples have no marker text; the leaves are checked by the view


@pytest.fixture(scope="module", params=_params(MODELS))
def inferred(request: pytest.FixtureRequest) -> tuple[object, msc_rules.InferenceResult, float]:
    m = getattr(models, request.param)()
    t0 = time.perf_counter()
    result = msc_rules.infer_layouts(m.mod)
    return m, result, time.perf_counter() - t0


def test_every_tensor_gets_a_layout_of_its_rank(inferred) -> None:
    m, result, seconds = inferred
    bad = oracles.missing_or_wrong_rank(result)
    assert not bad, f"{m.name}: {len(bad)} tensor(s) without a layout of their rank: {bad[:10]}"
    # the same seen from the IR, not the view: every tensor-typed value of main
    exprs = _tensor_exprs(m.mod)
    missing = []
    for name, e in exprs:
        marker = result.layout_of(e)
        ty = e.ty
        zero_d = isinstance(ty, relax.TensorType) and ty.ndim == 0
        if (not marker and not zero_d) or not _expected_marker_ok(ty, marker):
            missing.append(f"{name}: {ty} -> {marker!r}")
    assert not missing, f"{m.name}: {missing[:10]}"
    leaves = sum(1 for _ in oracles.leaves_of(result))
    print(f"\n{m.name}: {leaves} tensors ({len(exprs)} tensor values in main), "
          f"{len(result.conflicts)} conflicts, inferred in {seconds * 1000:.0f} ms")


def test_symbolic_batch_and_sequence_axes_keep_their_letters(inferred) -> None:
    m, result, _ = inferred
    assert m.batch_sym, f"{m.name}: expected a symbolic batch"
    syms = [m.batch_sym] + ([m.seq_sym] if m.seq_sym else [])
    for sym in syms:
        bad = oracles.symbol_violations(result, sym)
        assert not bad, f"{m.name}: {len(bad)} tensor(s) break the '{sym}' oracle: {bad[:10]}"
    if m.name in ("gpt2_like", "llama_like"):
        assert m.seq_sym, f"{m.name}: expected a symbolic sequence length"


def test_every_op_has_a_rule_and_conflicts_are_few(inferred) -> None:
    m, result, _ = inferred
    assert result.unruled == {}, f"{m.name}: ops without a rule: {result.unruled}"
    described = [
        f"{result.leaf_place(c.leaf)}: {c.message} [{c.equation.text}]"
        for c in result.conflicts
    ]
    assert len(result.conflicts) <= MAX_CONFLICTS, f"{m.name}: {described}"

"""Scale: 100k-binding modules run through SetExprLayout without recursion errors.

Two shapes: a 100k-binding chain (each binding uses the one before) and a 100k-binding
wide DAG (50k independent relus of the input, then a binary tree of adds). Each test
builds its module (about 1 s), runs the pass (a few seconds) and checks every marker.
No timing assertions here: speed is the benchmark's job (benchmarks/bench_layout.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as O

import msc_rules
from msc_rules.util import paused_gc

N = 100_000


@pytest.fixture(scope="module")
def chain() -> tvm.IRModule:
    """relu, add (a broadcast constant), permute to NHWC, permute back, repeated."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    bias = relax.const(np.ones((1, 4, 1, 1), "float32"))
    with paused_gc(), bb.function("main", [x]):
        with bb.dataflow():
            v: relax.Expr = x
            for i in range(N - 1):
                k = i % 4
                if k == 0:
                    v = bb.emit(O.nn.relu(v))
                elif k == 1:
                    v = bb.emit(O.add(v, bias))
                elif k == 2:
                    v = bb.emit(O.permute_dims(v, [0, 2, 3, 1]))
                else:
                    v = bb.emit(O.permute_dims(v, [0, 3, 1, 2]))
            out = bb.emit_output(v)
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def dag() -> tvm.IRModule:
    """N/2 independent relus of one input, then a binary tree of adds over them."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    with paused_gc(), bb.function("main", [x]):
        with bb.dataflow():
            level = [bb.emit(O.nn.relu(x)) for _ in range(N // 2)]
            while len(level) > 1:
                nxt = [bb.emit(O.add(level[i], level[i + 1]))
                       for i in range(0, len(level) - 1, 2)]
                if len(level) % 2:
                    nxt.append(level[-1])
                level = nxt
            out = bb.emit_output(level[0])
        bb.emit_func_output(out)
    return bb.get()


def bindings(mod: tvm.IRModule) -> list[relax.VarBinding]:
    return [b for block in mod["main"].body.blocks for b in block.bindings]


def test_100k_binding_chain(chain: tvm.IRModule) -> None:
    assert len(bindings(chain)) == N
    out = msc_rules.SetExprLayout(allow_missing=False)(chain)
    bs = bindings(out)
    assert len(bs) == N
    assert msc_rules.get_layout(out["main"].params[0]) == "ABCD"
    # relu, add keep ABCD; permute [0,2,3,1] gives ACDB; permute [0,3,1,2] gives ABCD back
    expected = ["ABCD", "ABCD", "ACDB", "ABCD"]
    got = [msc_rules.get_layout(b.var) for b in bs[:-1]]
    assert got == [expected[i % 4] for i in range(N - 1)]
    assert msc_rules.get_layout(bs[-1].var) == got[-1]
    assert all(msc_rules.get_layout(b.value) == lay for b, lay in zip(bs[:-1], got))
    const = bs[1].value.args[1]
    assert msc_rules.get_layout(const) == "ABCD"  # the (1,4,1,1) bias: size-1 axes kept


def test_100k_binding_wide_dag(dag: tvm.IRModule) -> None:
    n = len(bindings(dag))
    assert n >= N - 1
    res = msc_rules.infer_layouts(dag)
    assert res.conflicts == []
    x = res.view.values[0]
    assert isinstance(x.struct, int)
    assert res.view.edge_src.count(x.id) == N // 2  # x has 50k users
    out = msc_rules.SetExprLayout(allow_missing=False)(dag)
    assert {msc_rules.get_layout(b.var) for b in bindings(out)} == {"ABCD"}


def test_100k_binding_chain_of_names_and_layouts(chain: tvm.IRModule) -> None:
    if not hasattr(msc_rules, "annotate"):
        pytest.skip("no msc_rules.annotate")
    out = msc_rules.annotate(chain)
    bs = bindings(out)
    names = [msc_rules.get_name(b.value) for b in bs[:-1]]
    assert names[:4] == ["relu", "add", "permute_dims", "permute_dims_1"]
    assert len(set(names)) == len(names)
    assert msc_rules.get_layout(bs[-2].var) == ["ABCD", "ABCD", "ACDB", "ABCD"][(N - 2) % 4]

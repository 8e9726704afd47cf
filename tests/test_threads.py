"""Re-entrancy: passes running in several threads at once give the results they give
one at a time (no shared state leaks between runs: reshape memory, span caches, the
error side channel, the rule-file parser)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as O

import msc_rules
from msc_rules.errors import MissingLayoutError

ROUNDS = 3


def cnn(blocks: int = 300) -> tvm.IRModule:
    """conv, add, relu, reshape, permute, permute, reshape: ~7 bindings a block."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 8, 8], "float32"))
    rng = np.random.default_rng(0)
    with bb.function("main", [x]):
        with bb.dataflow():
            v: relax.Expr = x
            for _ in range(blocks):
                w = relax.const(rng.standard_normal((8, 8, 3, 3)).astype("float32"))
                b = relax.const(rng.standard_normal((1, 8, 1, 1)).astype("float32"))
                v = bb.emit(O.nn.conv2d(v, w, padding=1))
                v = bb.emit(O.add(v, b))
                v = bb.emit(O.nn.relu(v))
                v = bb.emit(O.reshape(v, [1, 8, 64]))
                v = bb.emit(O.permute_dims(v, [0, 2, 1]))
                v = bb.emit(O.permute_dims(v, [0, 2, 1]))
                v = bb.emit(O.reshape(v, [1, 8, 8, 8]))
            out = bb.emit_output(v)
        bb.emit_func_output(out)
    return bb.get()


def attention(layers: int = 100) -> tvm.IRModule:
    """Self-attention layers over symbolic batch and sequence (reshapes that split and
    merge heads: the reshape memory of one inference run is exercised)."""
    n, s = tvm.tirx.Var("n", "int64"), tvm.tirx.Var("s", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([n, s, 32], "float32"))
    rng = np.random.default_rng(1)

    def weight(*shape: int) -> relax.Constant:
        return relax.const(rng.standard_normal(shape).astype("float32"))

    with bb.function("main", [x]):
        with bb.dataflow():
            h: relax.Expr = x
            for _ in range(layers):
                heads = []
                for _ in range(3):
                    p = bb.emit(O.matmul(h, weight(32, 32)))
                    p = bb.emit(O.reshape(p, [n, s, 4, 8]))
                    heads.append(bb.emit(O.permute_dims(p, [0, 2, 1, 3])))
                q, k, v = heads
                kt = bb.emit(O.permute_dims(k, [0, 1, 3, 2]))
                a = bb.emit(O.nn.softmax(bb.emit(O.matmul(q, kt)), axis=-1))
                o = bb.emit(O.permute_dims(bb.emit(O.matmul(a, v)), [0, 2, 1, 3]))
                o = bb.emit(O.reshape(o, [n, s, 32]))
                h = bb.emit(O.nn.layer_norm(bb.emit(O.add(o, h)), weight(32), weight(32),
                                            axes=[-1]))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get()


def markers(mod: tvm.IRModule) -> list[tuple[str, str, str]]:
    """(var, Layout, Name) of every param and binding of main, in order."""
    f = mod["main"]
    out = [(str(p.name), msc_rules.get_layout(p), "") for p in f.params]
    for block in f.body.blocks:
        for b in block.bindings:
            out.append((str(b.var.name), msc_rules.get_layout(b.var),
                        msc_rules.get_name(b.value)))
    return out


def run_together(jobs: list[Callable[[], Any]]) -> list[list[Any]]:
    """Run each job ROUNDS times in its own thread, all starting at once."""
    barrier = threading.Barrier(len(jobs))
    results: list[list[Any]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(ROUNDS):
                results[i].append(jobs[i]())
        except BaseException as err:  # reported below, in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="module")
def modules() -> tuple[tvm.IRModule, tvm.IRModule]:
    return cnn(), attention()


def test_two_threads_annotate_like_one_at_a_time(modules: Any) -> None:
    a, b = modules
    want_a, want_b = markers(msc_rules.annotate(a)), markers(msc_rules.annotate(b))
    assert len({lay for _, lay, _ in want_b}) > 3  # the attention module is not trivial
    got_a, got_b = run_together([lambda: markers(msc_rules.annotate(a)),
                                 lambda: markers(msc_rules.annotate(b))])
    assert all(g == want_a for g in got_a)
    assert all(g == want_b for g in got_b)


def test_threads_inferring_the_same_module_agree(modules: Any) -> None:
    _, b = modules
    want = msc_rules.infer_layouts(b).layouts
    got = run_together([lambda: msc_rules.infer_layouts(b).layouts] * 3)
    assert all(g == want for per_thread in got for g in per_thread)


def test_errors_keep_their_own_fields_across_threads(modules: Any, tmp_path: Path) -> None:
    # an error raised inside a pass crosses TVM's pass machinery, which rebuilds it from
    # its message; its fields come back through a per-thread side channel
    # (errors.remember). Two threads failing at once must each get their own.
    a, b = modules
    empty = tmp_path / "empty.rules"
    empty.write_text("# no rules at all\n")
    bare = msc_rules.load_rules(empty, builtin=False)

    def strict(mod: tvm.IRModule) -> Callable[[], tuple[str, int, str]]:
        def job() -> tuple[str, int, str]:
            try:
                msc_rules.SetExprLayout(allow_missing=False, rules=bare)(mod)
            except MissingLayoutError as err:
                return err.function, len(err.bindings), err.bindings[0]
            raise AssertionError("expected MissingLayoutError")
        return job

    want = [strict(a)(), strict(b)()]
    assert want[0] != want[1]
    got = run_together([strict(a), strict(b), lambda: markers(msc_rules.annotate(a))])
    assert all(g == want[0] for g in got[0]) and all(g == want[1] for g in got[1])


def test_threads_loading_rule_files_at_once(tmp_path: Path, monkeypatch: Any) -> None:
    # the lark parser is shared (built once): parse many files at once, bypassing the
    # AST cache so that every thread really parses
    monkeypatch.setenv("MSC_RULES_NO_CACHE", "1")
    files = []
    for i in range(4):
        p = tmp_path / f"u{i}.rules"
        p.write_text(f"plugin ext_{i}(data) {{\n    out = data\n}}\n"
                     f"op relax.custom_{i}(x) {{\n    out = x +\n}}\n" if i % 2 else
                     f"plugin ext_{i}(data) {{\n    out = permute(data, none)\n}}\n")
        files.append(p)

    def load(p: Path) -> Callable[[], str]:
        def job() -> str:
            try:
                rs = msc_rules.load_rules(p, builtin=True)
            except msc_rules.RuleFileError as err:
                return "\n".join(d.format() for d in err.diagnostics)
            return ",".join(sorted(rs.plugins))
        return job

    want = [load(p)() for p in files]
    got = run_together([load(p) for p in files])
    for per_thread, w in zip(got, want):
        assert all(g == w for g in per_thread)
    assert "unexpected end of line" in want[1] and "ext_0" in want[0]

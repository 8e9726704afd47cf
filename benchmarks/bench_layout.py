"""Benchmark SetExprLayout against TVM's own passes on synthetic conv chains.

Prints a table: microseconds per binding for SetExprLayout (and its phases),
relax.transform.Normalize and ConvertLayout on the same modules, their ratios,
peak Python memory of the pass per binding, and the time to load the rule library.

    python benchmarks/bench_layout.py                # 1k, 10k, 100k
    python benchmarks/bench_layout.py --sizes 1000 10000 --convert-layout-max 10000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tvm
from synthetic import conv_chain, count_bindings

import msc_rules
from msc_rules.dsl.ruleset import load_rules
from msc_rules.engine import infer_view
from msc_rules.graph import build_view
from msc_rules.library import default_rules
from msc_rules.passes import layout_edits
from msc_rules.rewrite import rewrite_module
from msc_rules.util import paused_gc


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of `repeat` runs, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes Python allocated while `fn` ran (tracemalloc; TVM's C++ heap excluded)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return peak


def library_load_ms() -> tuple[float, float]:
    """(cold ms with the AST cache bypassed, warm ms) to load the whole rule library."""
    os.environ["MSC_RULES_NO_CACHE"] = "1"
    cold, _ = timed(lambda: load_rules(), repeat=3)
    del os.environ["MSC_RULES_NO_CACHE"]
    load_rules()
    warm, _ = timed(lambda: load_rules(), repeat=5)
    return cold * 1e3, warm * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument(
        "--convert-layout-max",
        type=int,
        default=10000,
        help="largest size to run ConvertLayout on (it is quadratic)",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc column")
    args = ap.parse_args(argv)

    cold, warm = library_load_ms()
    print(
        f"rule library: {len(default_rules().rules)} ops ruled; load {cold:.1f} ms cold "
        f"(parsing), {warm:.1f} ms warm (AST cache); target < 150 ms"
    )
    print()
    head = (
        f"{'bindings':>9} {'view':>6} {'infer':>6} {'write':>6} {'pass':>7} "
        f"{'Normalize':>9} {'ConvertLayout':>13} {'pass/Norm':>9} {'CL/pass':>8} "
        f"{'mem B/bind':>10}"
    )
    print("microseconds per binding (best of runs)")
    print(head)
    print("-" * len(head))
    rows: dict[int, float] = {}
    rules = default_rules()
    for n in args.sizes:
        mod = conv_chain(n)
        nb = count_bindings(mod)
        reps = 3 if n <= 10000 else 1
        with paused_gc():
            t_view, view = timed(lambda: build_view(mod, "main"), reps)
            t_inf, res = timed(lambda: infer_view(view, rules), reps)
            t_write, _ = timed(lambda: rewrite_module(mod, layout_edits(res)), reps)
        t_pass, annotated = timed(lambda: msc_rules.SetExprLayout()(mod), reps)
        t_norm, _ = timed(lambda: tvm.relax.transform.Normalize()(mod), reps)
        if n <= args.convert_layout_max:
            cl = tvm.relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})
            t_cl, _ = timed(lambda: cl(mod), 1)
            cl_txt, ratio_txt = f"{1e6 * t_cl / nb:13.1f}", f"{t_cl / t_pass:8.0f}x"
        else:
            cl_txt, ratio_txt = f"{'-':>13}", f"{'-':>9}"
        mem = (
            "-"
            if args.no_memory
            else f"{peak_memory(lambda: msc_rules.SetExprLayout()(mod)) / nb:10.0f}"
        )
        us = 1e6 * t_pass / nb
        rows[n] = t_pass
        print(
            f"{nb:9d} {1e6 * t_view / nb:6.1f} {1e6 * t_inf / nb:6.1f} "
            f"{1e6 * t_write / nb:6.1f} {us:7.1f} {1e6 * t_norm / nb:9.1f} {cl_txt} "
            f"{t_pass / t_norm:8.2f}x {ratio_txt} {mem:>10}"
        )
        assert len(res.conflicts) == 0, "synthetic chain should have no conflicts"
        del annotated
    sizes = sorted(rows)
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        print(
            f"\ngrowth: {b // a}x bindings cost {rows[b] / rows[a]:.1f}x time "
            f"(linear target: at most {1.2 * b / a:.0f}x)"
        )
    print(
        "targets: <= 30 us/binding at 100k; >= 100x faster than ConvertLayout at 10k; "
        "< 2 KiB/binding peak memory"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark channel_groups and prune against annotate on synthetic conv chains.

    PYTHONPATH=. python benchmarks/bench_channels.py [--sizes 1000 10000]

Prints milliseconds and microseconds per binding for: annotate (names + layouts),
channel_groups, prune (half of every exact group inside the model), and the ratio of
channel_groups + prune to annotate. Wall time, best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import conv_chain, count_bindings

import msc_rules


def best(fn: Callable[[], Any], repeat: int) -> float:
    """The fastest of `repeat` runs, in seconds (the previous result freed first)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        del out
    return min(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one row per size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    msc_rules.load_rules()  # the library's first load is not part of any pass
    print("| bindings | annotate ms | channel_groups ms | prune ms | "
          "(groups + prune) / annotate | groups | µs/binding groups + prune |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        mod = conv_chain(n)
        nb = count_bindings(mod)
        t_ann = best(lambda: msc_rules.annotate(mod), args.repeat)
        groups = msc_rules.channel_groups(mod)
        t_grp = best(lambda: msc_rules.channel_groups(mod), args.repeat)
        sel = {g.id: list(range(0, g.size, 2)) for g in groups
               if g.exact and not g.touches_io}
        t_pr = best(lambda: msc_rules.prune(mod, sel), args.repeat)
        both = t_grp + t_pr
        print(f"| {nb} | {t_ann * 1e3:.0f} | {t_grp * 1e3:.0f} | {t_pr * 1e3:.0f} | "
              f"{both / t_ann:.2f} | {len(groups)} ({len(sel)} pruned) | "
              f"{both / nb * 1e6:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

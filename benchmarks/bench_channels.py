"""Benchmark channel_groups and prune against annotate on synthetic conv chains.

    PYTHONPATH=. python benchmarks/bench_channels.py [--sizes 1000 10000] [--repeat 3]

Prints milliseconds per pass, one row per size: annotate (names + layouts), TVM's own
Normalize pass on the same module (for reference), channel_groups, prune (half of
every exact group inside the model) given the groups channel_groups returned (it
reuses their walk: the usual workflow) and prune alone (walking the module itself);
then channel_groups + prune and its ratio to annotate, the same with prune alone, and
the growth of channel_groups + prune from the previous size (as much as the bindings
grow: linear). Member names and layout letters are found on first read, which a prune
by group id never does: the last column is channel_groups with every member's name and
letter read (what `msc-rules channels` prints).
Wall time, best of `--repeat` runs, Python's cyclic GC paused as the passes do.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import conv_chain, count_bindings
from tvm import relax

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


def _read_all(groups: list[Any]) -> list[Any]:
    """Read every member's name and letter (planned and inferred on first read)."""
    for g in groups:
        for m in g.members:
            _ = m.tensor, m.letter
    return groups


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one row per size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    msc_rules.load_rules()  # the library's first load is not part of any pass
    print("| bindings | annotate ms | Normalize ms | channel_groups ms | prune ms "
          "(given groups) | prune alone ms | groups + prune ms | "
          "(groups + prune) / annotate | with prune alone | growth | groups | "
          "channel_groups, names and letters read ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    prev: tuple[int, float] | None = None
    normalize = relax.transform.Normalize()
    for n in args.sizes:
        mod = conv_chain(n)
        nb = count_bindings(mod)
        t_ann = best(lambda: msc_rules.annotate(mod), args.repeat)
        t_norm = best(lambda: normalize(mod), args.repeat)
        t_grp = best(lambda: msc_rules.channel_groups(mod), args.repeat)
        t_read = best(lambda: _read_all(msc_rules.channel_groups(mod)), args.repeat)
        groups = msc_rules.channel_groups(mod)
        sel = {g.id: list(range(0, g.size, 2)) for g in groups
               if g.exact and not g.touches_io}
        t_pr = best(functools.partial(msc_rules.prune, mod, sel, groups=groups), args.repeat)
        n_groups = len(groups)
        del groups  # (it holds the channel graph)
        t_alone = best(lambda: msc_rules.prune(mod, sel), args.repeat)
        both = t_grp + t_pr
        growth = f"{both / prev[1]:.1f}x for {nb / prev[0]:.0f}x" if prev else ""
        print(f"| {nb} | {t_ann * 1e3:.0f} | {t_norm * 1e3:.0f} | {t_grp * 1e3:.0f} | "
              f"{t_pr * 1e3:.0f} | {t_alone * 1e3:.0f} | {both * 1e3:.0f} | "
              f"{both / t_ann:.2f} | {(t_grp + t_alone) / t_ann:.2f} | {growth} | "
              f"{len(sel)} of {n_groups} pruned | {t_read * 1e3:.0f} |", flush=True)
        prev = (nb, both)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

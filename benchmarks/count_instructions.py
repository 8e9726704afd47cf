"""Instructions per binding of each phase of SetExprLayout, counted by callgrind.

Wall time on a shared machine drifts by 5-10% between identical runs, more than most
single changes to the hot paths gain; instruction counts are exact and repeatable, so
they settle an A/B comparison (run this before and after a change). They do not see
cache misses, which is where FFI reads and frees of cold objects spend their time:
confirm a change with `bench_layout.py` too.

    python benchmarks/count_instructions.py            # a 2k-binding chain
    python benchmarks/count_instructions.py --size 5000
    python benchmarks/count_instructions.py --annotate # annotate's phases instead (its
                                                       # read: the view and the names plan)
    python benchmarks/count_instructions.py --json bert12.json   # a saved module
    python benchmarks/count_instructions.py --channels # channel_groups and prune

`--json` reads a module saved with `tvm.ir.save_json` (bench_infer.py --save writes
a BERT): a real model's mix of ops, where the conv chain has five.

The rewrite phase runs the rebuild `MSC_RULES_NATIVE` selects (msc_rules/native;
unset: the native one if it builds): set it to 0 or 1 on both sides of an A/B
comparison.

Needs valgrind. The script re-runs itself under callgrind with instrumentation off,
switches it on around the phases (imports and the module build are not counted) and
prints one line per phase.
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tvm
from synthetic import conv_chain, count_bindings

PHASES = ("read", "view", "infer", "edits", "rewrite", "free")
CHANNEL_PHASES = ("view", "ties", "groups", "select", "prune", "free")


def load(size: int, json_path: str | None) -> tvm.IRModule:
    """The module to count: the saved one, else a conv chain of `size` bindings."""
    if json_path:
        with open(json_path) as fh:
            return tvm.ir.load_json(fh.read())
    return conv_chain(size)


def control(*args: str) -> None:
    """Run `callgrind_control` with `args` on this process (instrumentation, dumps)."""
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL)


def child(size: int, annotate: bool, json_path: str | None) -> None:
    """(Under callgrind) run the phases once, dumping the counters after each."""
    import msc_rules
    from msc_rules.engine import infer_view
    from msc_rules.graph import build_view
    from msc_rules.joint_read import read_and_name
    from msc_rules.library import default_rules
    from msc_rules.passes import layout_edits
    from msc_rules.rewrite import SpanEdits, rewrite_layers

    mod = load(size, json_path)
    rules = default_rules()
    msc_rules.annotate(mod)  # warm: rule library loaded, caches filled
    gc.collect()
    gc.disable()
    control("-i", "on")
    names: dict[str, SpanEdits] = {}
    if annotate:  # as passes.annotate does it: one read for the view and the names
        read = read_and_name(mod, rules)
        view = read.view
        control("-d", "read")
    else:
        view = build_view(mod, "main")
        control("-d", "view")
    result = infer_view(view, rules)
    control("-d", "infer")
    edits = layout_edits(result)
    if annotate:
        names = read.names().edits()
        del read
    control("-d", "edits")  # (annotate's: the Layout and the Name markers' edits)
    del result, view
    out = rewrite_layers(mod, [names, edits], release=True)
    control("-d", "rewrite")
    del names, edits, out
    control("-d", "free")
    control("-i", "off")


def channels_child(size: int, json_path: str | None) -> None:
    """(Under callgrind) channel_groups' phases (the view, the ties, the groups), then a
    prune of half of every exact group inside the model given those groups, as
    bench_channels.py runs them."""
    import msc_rules
    from msc_rules.channel_graph import channel_graph
    from msc_rules.channels import ChannelGroups, _Letters, _Namer, build_groups
    from msc_rules.graph import build_view

    mod = load(size, json_path)
    msc_rules.prune(mod, {0: [0]}, groups=msc_rules.channel_groups(mod))  # warm
    gc.collect()
    gc.disable()
    control("-i", "on")
    build_view(mod, "main")  # (the view alone: channel_graph builds its own)
    control("-d", "view")
    g = channel_graph(mod, layouts=False)
    control("-d", "ties")
    groups = ChannelGroups(build_groups(g, _Namer(mod, g.result, "main"),
                                        _Letters(g.view, g.result.rules)))
    groups.graph = g
    control("-d", "groups")
    sel = {gr.id: list(range(0, gr.size, 2)) for gr in groups
           if gr.exact and not gr.touches_io}
    control("-d", "select")
    out = msc_rules.prune(mod, sel, groups=groups)
    control("-d", "prune")
    del out, groups, g
    control("-d", "free")
    control("-i", "off")


def _last_level() -> list[str]:
    """callgrind's --LL option for this machine's last-level cache, from sysfs (callgrind's
    own guess can be far off on a VM: 256 MB direct-mapped here, which hides every miss
    of a 100k-binding module)."""
    def read(folder: str, name: str) -> str:
        with open(f"{folder}/{name}") as fh:
            return fh.read().strip()

    try:
        last = max(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"),
                   key=lambda d: int(read(d, "level")))
        size = read(last, "size")
        size_bytes = int(size[:-1]) * 1024 if size.endswith("K") else int(size)
        return [f"--LL={size_bytes},{read(last, 'ways_of_associativity')},"
                f"{read(last, 'coherency_line_size')}"]
    except (OSError, ValueError):
        return []


def main(argv: list[str] | None = None) -> int:
    """Run the phases under callgrind and print instructions per binding of each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2000, help="bindings of the synthetic chain")
    ap.add_argument("--annotate", action="store_true",
                    help="annotate's phases (its one read: the view and the names plan)")
    ap.add_argument("--json", help="count a module saved with tvm.ir.save_json instead")
    ap.add_argument("--channels", action="store_true",
                    help="channel_groups' and prune's phases instead (the view is counted "
                         "alone too: the ties phase builds it again)")
    ap.add_argument("--cache", action="store_true",
                    help="simulate the caches too and print last-level data misses per "
                         "binding (what makes a phase grow faster than its bindings)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.channels:
            channels_child(args.size, args.json)
        else:
            child(args.size, args.annotate, args.json)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("count_instructions.py needs valgrind (callgrind)", file=sys.stderr)
        return 2
    phases = CHANNEL_PHASES if args.channels else PHASES
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             *(["--cache-sim=yes", *_last_level()] if args.cache else []),
             f"--callgrind-out-file={out}", sys.executable, os.path.abspath(__file__),
             "--child", "--size", str(args.size), *(["--annotate"] * args.annotate),
             *(["--channels"] * args.channels),
             *(["--json", os.path.abspath(args.json)] if args.json else [])],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        bindings = count_bindings(load(args.size, args.json))
        counts: dict[str, int] = {}
        misses: dict[str, int] = {}
        for path in glob.glob(out + ".*"):
            trigger = phase = None
            events: list[str] = []
            summary: list[int] = []
            with open(path) as fh:
                for line in fh:
                    if line.startswith("desc: Trigger:"):
                        trigger = line.split()[-1]
                    elif line.startswith("events:"):
                        events = line.split()[1:]
                    elif line.startswith("summary:"):
                        summary = [int(x) for x in line.split()[1:]]
            phase = trigger if trigger in phases else None
            if phase is not None and summary:
                got = dict(zip(events, summary))
                counts[phase] = got.get("Ir", summary[0])
                misses[phase] = got.get("DLmr", 0) + got.get("DLmw", 0)
    what = "channel_groups and prune" if args.channels else \
        "annotate" if args.annotate else "SetExprLayout"
    print(f"instructions per binding of {what} ({bindings} bindings, callgrind)"
          + ("; last-level data misses per binding" if args.cache else ""))
    for phase in phases:
        if phase in counts:
            extra = f" {misses[phase] / bindings:8.2f}" if args.cache else ""
            print(f"  {phase:8s} {counts[phase] // bindings:8d}{extra}")
    kept = [k for k in counts if not (args.channels and k == "view")]
    extra = f" {sum(misses[k] for k in kept) / bindings:8.2f}" if args.cache else ""
    print(f"  {'total':8s} {sum(counts[k] for k in kept) // bindings:8d}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Inference (infer_view) per binding, memoisation on and off, on models whose layers repeat.

The engine memoises equation results and whole examinations of a site per site
signature (see msc_rules/engine.py); this prints microseconds per binding of
`infer_view` with the memo on and off (`engine.MEMOISE`), on the synthetic conv chain
and on an L-layer HF BERT imported through torch.export (dynamic batch and sequence),
and checks that both give the same layouts.

    python benchmarks/bench_infer.py                     # conv chain 10k, BERT 12 layers
    python benchmarks/bench_infer.py --layers 24 --chain 20000
    python benchmarks/bench_infer.py --save bert12.json  # also save the BERT (for
                                                         # count_instructions.py --json)

Wall time (best of `--repeat` runs, each on a fresh view, the garbage collector off);
on a shared machine the figures drift by 5-10%: compare within one run, and use
count_instructions.py for exact A/B counts.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tvm
from synthetic import conv_chain

from msc_rules import engine
from msc_rules.engine import infer_view
from msc_rules.graph import build_view
from msc_rules.library import default_rules


def bert(layers: int, hidden: int = 64, heads: int = 4) -> tvm.IRModule:
    """An HF BertModel of `layers` layers, imported with dynamic batch and sequence."""
    import torch
    from torch.export import Dim
    from transformers import BertConfig, BertModel
    from tvm.relax.frontend.torch import from_exported_program

    class Wrapped(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: Any, mask: Any) -> Any:
            return self.model(input_ids=ids, attention_mask=mask, return_dict=False)[0]

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=128, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=hidden * 2,
                     max_position_embeddings=64, attn_implementation="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Wrapped(BertModel(cfg, add_pooling_layer=False)).eval()
        ids = torch.randint(0, 128, (2, 8))
        mask = torch.ones_like(ids)
        batch, seq = Dim("batch", min=2), Dim("seq", min=2, max=64)
        dyn = ({0: batch, 1: seq}, {0: batch, 1: seq})
        with torch.no_grad():
            ep = torch.export.export(model, (ids, mask), dynamic_shapes=dyn, strict=False)
            return from_exported_program(ep)


def measure(mod: tvm.IRModule, repeat: int) -> tuple[int, float, float, float]:
    """(bindings, view us/b, infer us/b memo on, infer us/b memo off): best of `repeat`."""
    rules = default_rules()
    out: dict[bool, float] = {}
    layouts: dict[bool, list[str | None]] = {}
    view_best = float("inf")
    for memo in (True, False, True, False):
        engine.MEMOISE = memo
        for _ in range(repeat):
            gc.collect()
            gc.disable()
            t = time.perf_counter()
            view = build_view(mod, "main")
            t1 = time.perf_counter()
            result = infer_view(view, rules)
            t2 = time.perf_counter()
            gc.enable()
            view_best = min(view_best, t1 - t)
            out[memo] = min(out.get(memo, float("inf")), t2 - t1)
            layouts[memo] = result.layouts
    engine.MEMOISE = True
    if layouts[True] != layouts[False]:
        raise SystemExit("memoisation changed the layouts")
    n = len(view.sites)
    return n, view_best / n * 1e6, out[True] / n * 1e6, out[False] / n * 1e6


def main(argv: list[str] | None = None) -> int:
    """Print infer_view's cost per binding with the memo on and off."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12, help="BERT layers")
    ap.add_argument("--chain", type=int, default=10000, help="bindings of the conv chain")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--save", help="write the BERT module here (tvm.ir.save_json)")
    args = ap.parse_args(argv)
    default_rules()
    print(f"{'model':22s} {'sites':>7s} {'view us/b':>10s} {'memo us/b':>10s} "
          f"{'no memo':>10s} {'ratio':>6s}")
    for name, build in ((f"conv_chain {args.chain}", lambda: conv_chain(args.chain)),
                        (f"bert {args.layers} layers", lambda: bert(args.layers))):
        mod = build()
        if args.save and name.startswith("bert"):
            with open(args.save, "w") as fh:
                fh.write(tvm.ir.save_json(mod))
        n, view, on, off = measure(mod, args.repeat)
        print(f"{name:22s} {n:7d} {view:10.2f} {on:10.2f} {off:10.2f} {on / off:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

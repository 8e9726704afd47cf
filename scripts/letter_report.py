"""Issue 11 progress: property and role violations of every letter model x import route.

Usage: PYTHONPATH=. python scripts/letter_report.py [-n N] [--dump MODEL:ROUTE] [MODEL ...]

Prints a table of counts per model and route (property and role violations, recorded
conflicts other than self-broadcast ones, self-broadcast conflicts), then the first N
of each kind per combination.
`--dump MODEL:ROUTE` prints every call site with its layouts instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import letter_models as lm
import letter_props as lp

from msc_rules import infer_layouts


def main(argv: list[str] | None = None) -> int:
    """Run the checks and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help=f"models (default: {', '.join(lm.MODELS)})")
    ap.add_argument("-n", type=int, default=3, help="violations shown per combination")
    ap.add_argument("--dump", metavar="MODEL:ROUTE", help="print every site's layouts")
    args = ap.parse_args(argv)
    if args.dump:
        name, route = args.dump.split(":")
        m = lm.build(name, route)
        print(lp.dump(infer_layouts(m.mod)))
        return 0
    rows = []
    details: list[tuple[str, list[str]]] = []
    start = time.perf_counter()
    for name in args.models or lm.MODELS:
        for route in lm.ROUTES:
            try:
                m = lm.build(name, route)
            except lm.RouteUnsupported as e:
                rows.append((name, route, "skip", "", "", "", str(e)))
                continue
            r = infer_layouts(m.mod)
            props = lp.property_violations(r)
            roles = lp.role_violations(r, m.num_input)
            others = lp.other_conflicts(r)
            selfb = len(r.conflicts) - len(others)
            rows.append((name, route, str(len(props)), str(len(roles)), str(len(others)),
                         str(selfb), ""))
            if props or roles or others:
                details.append((f"{name}/{route}",
                                props[: args.n] + roles[: args.n] + others[: args.n]))
    head = ("model", "route", "props", "roles", "conflicts", "self-bcast", "note")
    # conflicts: recorded conflicts other than self-broadcast ones (those are counted apart)
    widths = [max(len(str(x[c])) for x in [head, *rows]) for c in range(len(head))]
    for row in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    total_p = sum(int(r[2]) for r in rows if r[2].isdigit())
    total_r = sum(int(r[3]) for r in rows if r[3].isdigit())
    total_c = sum(int(r[4]) for r in rows if r[4].isdigit())
    print(f"\ntotal: {total_p} property, {total_r} role violations, {total_c} conflicts "
          f"({time.perf_counter() - start:.1f} s)")
    for label, items in details:
        print(f"\n{label}:")
        for v in items:
            print(f"  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

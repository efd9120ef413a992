"""Compare bench runs of several versions: one Markdown table, median [min-max] over rounds.

    python bench/compare.py before=r1-before.json,r2-before.json after=r1-after.json,r2-after.json
    python bench/compare.py --match "cycle|fetch" before=... after=...

Each argument is LABEL=JSON[,JSON...]: the `bench/run.py --json` files of one version,
one per round. A row measured against the floor shows its ratio (floors), every other
row its value in its unit. The last column is the target of the newest file that has
one, and whether the median of the last label meets it is left to the reader: the
per-run verdicts are in each run's own table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path


def fmt(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def load(spec: str) -> tuple[str, list[dict]]:
    label, _, files = spec.partition("=")
    if not files:
        raise SystemExit(f"expected LABEL=FILE[,FILE...], got {spec!r}")
    return label, [json.loads(Path(f).read_text()) for f in files.split(",") if f]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", nargs="+", help="LABEL=JSON[,JSON...]")
    ap.add_argument("--match", default="", help="only rows whose 'family / name' matches this regex")
    args = ap.parse_args(argv)
    versions = [load(v) for v in args.versions]
    order: list[tuple[str, str]] = []
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    units: dict[tuple[str, str], str] = {}
    targets: dict[tuple[str, str], str] = {}
    for label, runs in versions:
        for run in runs:
            rows = list(run["rows"])
            rows.insert(0, {"family": "floor", "name": "THE floor (PING, dedicated connection, cross-core)",
                            "value": run.get("floor_us"), "ratio": None, "ratio_of": "", "unit": "us", "target": ""})
            for r in rows:
                key = (r["family"], r["name"])
                if args.match and not re.search(args.match, f"{key[0]} / {key[1]}"):
                    continue
                floors = r.get("ratio_of") == "floor" and r["family"] != "floor" and r.get("ratio") is not None
                v = r["ratio"] if floors else r.get("value")
                if v is None:
                    continue
                if key not in cells:
                    order.append(key)
                    cells[key] = {}
                cells[key].setdefault(label, []).append(float(v))
                units[key] = "floors" if floors else r.get("unit", "")
                if r.get("target"):
                    targets[key] = r["target"]
    labels = [label for label, _ in versions]
    out = ["| family | measurement | unit | " + " | ".join(labels) + " | target |",
           "| --- | --- | --- | " + " | ".join("---:" for _ in labels) + " | --- |"]
    for key in order:
        parts = []
        for label in labels:
            xs = cells[key].get(label)
            if not xs:
                parts.append("")
            elif len(xs) == 1:
                parts.append(fmt(xs[0]))
            else:
                parts.append(f"{fmt(statistics.median(xs))} [{fmt(min(xs))}-{fmt(max(xs))}]")
        out.append(f"| {key[0]} | {key[1]} | {units[key]} | " + " | ".join(parts) + f" | {targets.get(key, '')} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a program evaluation costs on top of starting the program (issue 17, part 5).

Side by side in one run, for a program that exits at once (``/bin/echo 1``):

- ``subprocess.run`` in a loop: the floor, what a hand-written wrapper pays;
- ``rushhpc.worker.command.run_command`` in a loop: the mechanism alone (trial folder made fresh,
  stdout/stderr files, process group, result read back);
- a sweep's worker: ``rushhpc sweep`` with one local worker and a command objective, from the
  first evaluation's start to the last one's end (Redis round trips, results, journal included).

Target: the sweep's worker at most 5 ms more per evaluation than ``subprocess.run``.

    python bench/command_eval.py              # 300 evaluations each
    python bench/command_eval.py --quick      # 60, a smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAM = ["/bin/echo", "1"]
TARGET_MS = 5.0


def bare(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run(PROGRAM, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t0) / n


def mechanism(n: int, work: Path) -> float:
    from rushhpc.worker.command import CommandSpec, TrialContext, run_command

    spec = CommandSpec.from_mapping({"command": PROGRAM})
    t0 = time.perf_counter()
    for i in range(n):
        run_command(spec, {}, TrialContext(work / "trials" / str(i), i, None, "bench", work))
    return (time.perf_counter() - t0) / n


def sweep_worker(n: int, work: Path) -> float:
    import rushhpc

    df = rushhpc.sweep({"objective": {"command": PROGRAM}, "metric": "y", "strategy": "random",
                        "space": {"x": {"type": "float", "low": 0, "high": 1}}, "budget": {"evaluations": n},
                        "workers": {"n": 1, "launcher": "local"}, "redis": "embedded", "progress": "none",
                        "output": str(work / "sweep")})
    assert len(df) == n and df["state"].eq("finished").all(), df["state"].value_counts()
    started, finished = df["started_at"].min(), df["finished_at"].max()
    return (finished - started).total_seconds() / (n - 1)  # n evaluations, n-1 gaps after the first start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="evaluations per form")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, forms alternating; medians are reported")
    ap.add_argument("--quick", action="store_true", help="60 evaluations, 1 round")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    n, rounds = (60, 1) if args.quick else (args.n, args.rounds)
    figures: dict[str, list[float]] = {"bare": [], "mechanism": [], "sweep": []}
    with tempfile.TemporaryDirectory(prefix="rushhpc-bench-cmd-") as tmp:
        work = Path(tmp)
        for r in range(rounds):
            figures["bare"].append(bare(n))
            figures["mechanism"].append(mechanism(n, work / f"m{r}"))
            figures["sweep"].append(sweep_worker(n, work / f"s{r}"))
    med = {k: statistics.median(v) * 1000 for k, v in figures.items()}
    extra = med["sweep"] - med["bare"]
    print(f"{n} evaluations of {' '.join(PROGRAM)} per form, {rounds} round(s), medians, ms per evaluation\n")
    print("| form | ms / evaluation | more than subprocess.run |")
    print("| --- | ---: | ---: |")
    print(f"| subprocess.run in a loop | {med['bare']:.2f} | |")
    print(f"| run_command in a loop | {med['mechanism']:.2f} | {med['mechanism'] - med['bare']:+.2f} |")
    print(f"| a sweep's worker (1 local worker) | {med['sweep']:.2f} | {extra:+.2f} |")
    print(f"\ntarget: at most {TARGET_MS:g} ms more per evaluation in a sweep's worker: "
          f"{'met' if extra <= TARGET_MS else 'MISSED'} ({extra:+.2f} ms)")
    if args.json:
        args.json.write_text(json.dumps({"n": n, "rounds": rounds, "ms": med, "extra_ms": extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

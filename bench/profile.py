"""Where a worker's client CPU goes: the default (synchronous) in-process cycles under a
sampling profiler.

    python bench/profile.py                 # py-spy, 20,000 cycles of each loop
    python bench/profile.py --cycles 5000 --top 25

Runs the propose/evaluate/report cycle (push_running_tasks + finish_tasks) and the
queue cycle (pop_task + finish_tasks) of one in-process `RushWorker` against a private
redis-server (Redis on one CPU, the client on the other, as the floor), under ``py-spy
record --gil`` (only samples holding the GIL: the client's own Python CPU, not the wait
for Redis). Prints, per cycle, the GIL time per task (samples / rate / cycles), its split
between redis-py, rushhpc and the rest (by the innermost frame's file), and the functions
with the most inclusive samples. Needs ``pip install py-spy`` (run as root, or with
ptrace allowed). Works with any rushhpc version: it only uses the public worker API.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

_FRAME = re.compile(r"(.*) \((.*?)(?::\d+)?\)$")


def child(port: int, cycles: int, kind: str, marker: str) -> None:
    """The profiled process: ``cycles`` cycles of one kind, after a warm-up."""
    import rushhpc

    cfg = rushhpc.redis_config(host="127.0.0.1", port=port)
    rush = rushhpc.Rush(f"prof-{os.getpid()}", config=cfg)
    w = rushhpc.RushWorker(rush.network_id, config=cfg)
    xs, ys = [{"x1": 0.5, "x2": 1.5}], [{"y": 2.0}]
    if kind == "queue":
        for lo in range(0, cycles + 500, 10_000):
            rush.push_tasks(xs * min(10_000, cycles + 500 - lo))

    def propose_cycle() -> None:
        w.finish_tasks(w.push_running_tasks(xs), ys)

    def queue_cycle() -> None:
        task = w.pop_task(timeout=1)
        w.finish_tasks([task["key"]], ys)

    fn = propose_cycle if kind == "propose" else queue_cycle
    for _ in range(300):
        fn()
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(cycles):
        fn()
    c1, t1 = time.thread_time(), time.perf_counter()
    Path(marker).write_text(json.dumps({"cpu_us": (c1 - c0) / cycles * 1e6, "wall_us": (t1 - t0) / cycles * 1e6}))
    w.close()
    rush.reset()
    rush.close()


def category(path: str) -> str:
    p = path.replace("\\", "/")
    if "/redis/" in p or p.startswith("redis/"):
        return "redis-py"
    if "/rushhpc/" in p or p.startswith("rushhpc/"):
        return "rushhpc"
    return "other (interpreter, stdlib, orjson, the bench loop)"


def analyse(raw: Path, cycles: int, rate: int, top: int, stage: str) -> dict:
    """Aggregate py-spy's raw (collapsed) stacks: only samples inside the timed cycles."""
    inclusive: collections.Counter[str] = collections.Counter()
    by_cat: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if stage not in stack:
            continue
        n = int(n_text)
        total += n
        names = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            if m:
                names.append((m.group(1), m.group(2)))
        for name, path in set(names):
            inclusive[f"{name} ({Path(path).name})"] += n
        if names:
            by_cat[category(names[-1][1])] += n
    per_task_us = total / rate / cycles * 1e6
    return {"samples": total, "gil_us_per_task": round(per_task_us, 1),
            "split": {k: round(100 * v / total, 1) for k, v in by_cat.most_common()} if total else {},
            "top": [(k, round(100 * v / total, 1)) for k, v in inclusive.most_common(top)] if total else []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=1000, help="samples per second")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--child", nargs=4, metavar=("PORT", "CYCLES", "KIND", "MARKER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        port, cycles, kind, marker = args.child
        child(int(port), int(cycles), kind, marker)
        return 0

    from common import RedisServer, can_pin

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rushhpc-profile-"))
    server = RedisServer(work)
    results = {}
    try:
        if can_pin():
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(server.proc.pid, {cpus[0]})
            os.sched_setaffinity(0, {cpus[1]})  # the child inherits it
        for kind in ("propose", "queue"):
            raw, marker = work / f"{kind}.txt", work / f"{kind}.json"
            subprocess.run([pyspy, "record", "--gil", "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--",
                            sys.executable, __file__, "--child", str(server.port), str(args.cycles), kind, str(marker)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stage = "propose_cycle" if kind == "propose" else "queue_cycle"
            res = analyse(raw, args.cycles + 300, args.rate, args.top, stage)
            res.update(json.loads(marker.read_text()))
            results[kind] = res
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    import rushhpc

    print(f"rushhpc {rushhpc.__version__} at {Path(rushhpc.__file__).parent}; py-spy --gil at {args.rate} Hz; "
          f"{args.cycles:,} cycles each")
    for kind, res in results.items():
        print(f"\n{kind} cycle: GIL time {res['gil_us_per_task']} us/task (thread CPU {res['cpu_us']:.1f} us, "
              f"wall {res['wall_us']:.1f} us); {res['samples']} samples")
        print("  split by innermost frame: " + ", ".join(f"{k} {v} %" for k, v in res["split"].items()))
        for name, share in res["top"]:
            print(f"  {share:5.1f} %  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

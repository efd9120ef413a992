"""Core-hours of a bursty workload: a fixed pool of N workers against ``adapt(0, N)``.

The workload (issue 10): 500 tasks of 1-5 s (uniform, seeded) arriving in three waves, with a
quiet gap between waves. Both configurations run the same tasks on local workers of one
private Redis; `rush.accounting()` gives the core-hours allocated (each worker's registration
to stop, 1 core each) and the core-hours busy in the objective. Reported per configuration:
core-hours allocated, busy share (busy / allocated), the makespan (first push to last result),
and the largest number of workers present at once.

Durations are scaled by ``--scale`` (default 0.1: tasks of 0.1-0.5 s, gaps of 15 x scale x 10 s) so
the whole run takes a few minutes; ``--scale 1`` is the issue's workload as written.

    python bench/elastic.py                 # both configurations, N = 8
    python bench/elastic.py --scale 1 --workers 16
    python bench/elastic.py --quick         # 120 tasks, for a smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RedisServer, log, make_workdir  # noqa: E402

import rushhpc  # noqa: E402
from rushhpc import queue_loop, rush_plan  # noqa: E402


def _sleep_task(s: float) -> dict:
    time.sleep(s)
    return {"y": s}


def workload(n: int, scale: float, seed: int = 1) -> list[list[float]]:
    """Three waves of task durations (seconds, already scaled)."""
    rng = random.Random(seed)
    durations = [rng.uniform(1, 5) * scale for _ in range(n)]
    k = len(durations) // 3
    return [durations[:k], durations[k:2 * k], durations[2 * k:]]


def run_one(server: RedisServer, mode: str, waves: list[list[float]], n_workers: int, gap: float,
            idle_timeout: float) -> dict:
    rush_plan(config=server.config(), worker_type="local", heartbeat_period=1, heartbeat_expire=5)
    r = rushhpc.rsh(f"elastic-{mode}-{uuid.uuid4().hex[:6]}")
    try:
        if mode == "fixed":
            ids = r.start_workers(queue_loop, n_workers=n_workers, fun=_sleep_task)
            r.wait_for_workers(worker_ids=ids, timeout=120)
        else:
            r.adapt(queue_loop, minimum=0, maximum=n_workers, idle_timeout=idle_timeout, interval=0.5,
                    fun=_sleep_task)
        t0 = time.time()
        peak = 0
        total = 0
        for i, wave in enumerate(waves):
            keys = r.push_tasks([{"s": s} for s in wave])
            total += len(keys)
            while r.n_finished_tasks < total:
                peak = max(peak, r.n_running_workers)
                time.sleep(0.2)
            if i < len(waves) - 1:
                end = time.monotonic() + gap
                while time.monotonic() < end:  # the quiet gap: a fixed pool idles, adapt releases
                    peak = max(peak, r.n_running_workers)
                    time.sleep(0.2)
        makespan = time.time() - t0
        r.stop_monitor()
        r.stop_workers(type="terminate")
        deadline = time.monotonic() + 60
        while r.n_running_workers and time.monotonic() < deadline:
            time.sleep(0.2)
        _, totals = r.accounting()
        assert r.n_finished_tasks == total and r.n_failed_tasks == 0, "tasks lost or failed"
        return {"mode": mode, "tasks": total, "core_h": totals["core_hours"], "busy_core_h": totals["busy_core_hours"],
                "busy_share": totals["busy_share"], "makespan_s": makespan, "peak_workers": peak,
                "workers_started": totals["workers"]}
    finally:
        r.reset()
        r.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--scale", type=float, default=0.1, help="factor on task durations and gaps (1 = as in the issue)")
    ap.add_argument("--quick", action="store_true", help="120 tasks, 4 workers")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.workers = 120, 4
    waves = workload(args.tasks, args.scale)
    gap = 150 * args.scale  # 15 s at scale 0.1: longer than the idle timeout, as between real bursts
    idle_timeout = 30 * args.scale
    work = Path(make_workdir())
    server = RedisServer(work)
    rows = []
    try:
        for mode in ("fixed", "adapt"):
            log(f"{mode}: {args.tasks} tasks in 3 waves, {args.workers} workers at most, gap {gap:g} s")
            rows.append(run_one(server, mode, waves, args.workers, gap, idle_timeout))
    finally:
        server.stop()
    load = os.getloadavg()
    print(f"\nbursty workload: {args.tasks} tasks of {args.scale:g}-{5 * args.scale:g} s in 3 waves, gaps {gap:g} s, "
          f"N = {args.workers}, idle_timeout {idle_timeout:g} s; load average {load[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'configuration':<14}{'core-h alloc':>14}{'core-h busy':>13}{'busy share':>12}{'makespan s':>12}"
          f"{'peak workers':>14}{'workers':>9}")
    for r in rows:
        name = "fixed N" if r["mode"] == "fixed" else "adapt(0, N)"
        print(f"{name:<14}{r['core_h']:>14.4f}{r['busy_core_h']:>13.4f}{r['busy_share']:>12.1%}"
              f"{r['makespan_s']:>12.1f}{r['peak_workers']:>14}{r['workers_started']:>9}")
    fixed, adapt = rows
    print(f"adapt / fixed: core-hours x{adapt['core_h'] / fixed['core_h']:.2f}, "
          f"makespan x{adapt['makespan_s'] / fixed['makespan_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

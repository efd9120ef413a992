"""Monitoring cost: what the manager pays to watch W registered workers.

W = 10, 100 and 1,000 workers are registered directly with the worker
registration script (as a worker process would, heartbeat key alive, no
process behind them, each with a local launch record), then the manager calls:

- ``detect_lost_workers()``: value = median time per call (ms); note = Redis
  round trips per call. Target: the same number of round trips for every W.
- ``worker_info``: the DataFrame of every worker; same columns.

The scheduler rows (calls per poll for 1 and 100 batch jobs, submissions for
a launch of 100 workers) submit held jobs to the SLURM test cluster when it
answers, else to the PBS emulator in tests/pbs_emulator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import Context, Row, count_round_trips, log, median

import rushhpc
from rushhpc.store.protocol import SCHEMA_VERSION


def register_workers(rush: rushhpc.Rush, n: int, first: int = 0) -> None:
    """Register ``n`` workers the way RushWorker does, with a live heartbeat key (60 s),
    each with the launch record a local start leaves (the manager reads them when it polls)."""
    k = rush.keys
    with rush.connector.pipeline(transaction=False) as pipe:
        for i in range(first, first + n):
            wid = f"bench-w{i:05d}"
            record = {"worker_id": wid, "launcher": "local", "job_id": str(100000 + i), "submitted_at": time.time(),
                      "start_id": "bench", "extra": {}}
            pipe.hset(k.launches, wid, json.dumps(record))
            rush.protocol.script("register_worker")(
                keys=[k.workers, k.workers_in("running"), k.worker(wid), k.heartbeat(wid), k.workers_in("pending"),
                      k.meta],
                args=[k.prefix, wid, "60", SCHEMA_VERSION, "pid", str(100000 + i), "hostname", "bench",
                      "launcher", "manual"],
                client=pipe,
            )
        pipe.execute()


def timed(fn, n: int) -> tuple[float, float]:
    """(median seconds per call, round trips per call) over ``n`` calls, after one
    untimed call (which may load a Lua script)."""
    fn()
    times = []
    with count_round_trips() as c:
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return median(times), c.count / n


# --------------------------------------------------------------------------- batch launchers
REPO = Path(__file__).resolve().parent.parent


def batch_backend() -> tuple[str, dict, str]:
    """The real SLURM test cluster when it answers (and ``RUSHHPC_BENCH_NO_SLURM`` is not 1),
    else the PBS emulator shipped in tests/. Jobs are submitted held, so nothing runs: only
    the scheduler's bookkeeping is measured."""
    if (os.environ.get("RUSHHPC_BENCH_NO_SLURM") != "1" and shutil.which("sinfo")
            and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0):
        return "slurm", {"extra_directives": ["--hold"]}, "SLURM test cluster"
    os.environ["PATH"] = f"{REPO / 'tests' / 'pbs_emulator' / 'bin'}{os.pathsep}{os.environ['PATH']}"
    os.environ.setdefault("PBS_EMU_HOME", tempfile.mkdtemp(prefix="rushhpc-bench-pbs-"))
    return "pbs", {"extra_directives": ["-h"]}, "PBS emulator"


def held_launch(ctx: Context, n: int):
    """Start ``n`` held batch workers; returns (manager, launcher, backend name)."""
    worker_type, options, name = batch_backend()
    rushhpc.rush_plan(config=ctx.server.config(), worker_type=worker_type, launcher_options=options)
    rush = rushhpc.Rush(ctx.network(f"batch{n}"), config=ctx.server.config())
    rush.start_workers(rushhpc.queue_loop, n_workers=n, fun=None)
    return rush, rush.launcher(worker_type), name


def scheduler_calls_per_poll(ctx: Context, n_jobs: int) -> tuple[int, str]:
    """Scheduler commands (squeue/qstat) the manager runs per poll of ``n_jobs`` batch
    jobs. Target: 1 whatever ``n_jobs``."""
    rush, launcher, name = held_launch(ctx, n_jobs)
    try:
        before = launcher.calls
        rush.detect_lost_workers(poll_scheduler=True)
        return launcher.calls - before, name
    finally:
        rush.reset()
        rushhpc.remove_rush_plan()


def submissions_per_launch(ctx: Context, n_workers: int) -> tuple[int, str]:
    """Scheduler submissions (sbatch/qsub) for one launch of ``n_workers`` batch workers.
    Target: 1 (one job array)."""
    rush, launcher, name = held_launch(ctx, n_workers)
    try:
        return launcher.submissions, name
    finally:
        rush.reset()
        rushhpc.remove_rush_plan()


def scheduler_rows(ctx: Context) -> list[Row]:
    rows = []
    for n in (1, 100):
        got, name = scheduler_calls_per_poll(ctx, n)
        rows.append(Row("monitoring", f"scheduler calls per poll, {n} batch job{'s' if n > 1 else ''}", got, "calls",
                        target="== 1", met=got == 1, note=f"{name}, held jobs"))
    got, name = submissions_per_launch(ctx, 100)
    rows.append(Row("monitoring", "scheduler submissions for a launch of 100 workers", got, "submissions",
                    target="== 1", met=got == 1, note=f"{name}: one job array"))
    return rows


def run(ctx: Context) -> list[Row]:
    calls = ctx.pick(50, 10)
    rush = rushhpc.Rush(ctx.network("mon"), config=ctx.server.config())
    rows, trips_by_size = [], {}
    try:
        have = 0
        for n in (10, 100, 1000):
            log(f"monitoring: {n} workers")
            register_workers(rush, n - have, first=have)
            have = n
            t, trips = timed(rush.detect_lost_workers, calls)
            assert not rush.lost_worker_ids
            trips_by_size[n] = trips
            rows.append(Row("monitoring", f"detect_lost_workers(), {n:,} workers", round(t * 1e3, 3), "ms",
                            note=f"{trips:g} round trip(s)/call; {t * 1e6 / n:.1f} us per worker"))
            t, trips = timed(lambda: rush.worker_info, max(3, calls // 5))
            assert len(rush.worker_info) == n
            rows.append(Row("monitoring", f"worker_info, {n:,} workers", round(t * 1e3, 3), "ms",
                            note=f"{trips:g} round trip(s)/call; {t * 1e6 / n:.1f} us per worker"))
        constant = len(set(trips_by_size.values())) == 1
        rows.append(Row("monitoring", "detect_lost_workers() round trips for 10 / 100 / 1,000 workers",
                        trips_by_size[1000], "round trips", target="constant in the number of workers",
                        met=constant, note=" / ".join(f"{v:g}" for v in trips_by_size.values())))
    finally:
        rush.reset()
        rush.close()
    return rows + scheduler_rows(ctx)

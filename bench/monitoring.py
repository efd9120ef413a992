"""Monitoring cost: what the manager pays to watch W registered workers.

W = 10, 100 and 1,000 workers are registered directly with the worker
registration script (as a worker process would, heartbeat key alive, no
process behind them, each with a local launch record), then the manager calls:

- ``detect_lost_workers()``: value = median time per call (ms); note = Redis
  round trips per call. Target: the same number of round trips for every W.
- ``worker_info``: the DataFrame of every worker; same columns.

The scheduler rows (calls per poll for 1 and 100 batch jobs, submissions for
a launch of 100 workers) wait for the batch launchers: `scheduler_calls_per_poll`
and `submissions_per_launch` are the stubs to fill in; while they return
None the rows read "n/a (launcher pending)".
"""

from __future__ import annotations

import json
import time

from common import Context, Row, count_round_trips, log, median

import rushhpc


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
            rush.scripts.register_worker(
                keys=[k.workers, k.workers_in("running"), k.worker(wid), k.heartbeat(wid)],
                args=[k.prefix, wid, "60", "pid", str(100000 + i), "hostname", "bench", "launcher", "manual"],
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


# --------------------------------------------------------------------------- stubs
def scheduler_calls_per_poll(ctx: Context, n_jobs: int) -> int | None:
    """Scheduler commands (squeue/qstat) the manager runs per poll of ``n_jobs`` batch
    jobs. Target: 1 whatever ``n_jobs``. None until the batch launchers exist."""
    return None


def submissions_per_launch(ctx: Context, n_workers: int) -> int | None:
    """Scheduler submissions (sbatch/qsub) for one launch of ``n_workers`` batch workers.
    Target: 1 (one job array). None until the batch launchers exist."""
    return None


def scheduler_rows(ctx: Context) -> list[Row]:
    rows = []
    for n in (1, 100):
        got = scheduler_calls_per_poll(ctx, n)
        rows.append(Row("monitoring", f"scheduler calls per poll, {n} batch job{'s' if n > 1 else ''}", got, "calls",
                        target="== 1", met=None if got is None else got == 1,
                        note="n/a (launcher pending)" if got is None else ""))
    got = submissions_per_launch(ctx, 100)
    rows.append(Row("monitoring", "scheduler submissions for a launch of 100 workers", got, "submissions",
                    target="== 1", met=None if got is None else got == 1,
                    note="n/a (launcher pending)" if got is None else ""))
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

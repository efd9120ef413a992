"""Worker loops end to end: real worker processes (start_local_workers), no-op objective.

Two loops, each with 1, 2 and 4 workers:

- propose/evaluate/report (`workloads.propose_loop`): each worker proposes a
  random point, registers it (push_running_tasks), evaluates the no-op and
  reports (finish_tasks). 2 round trips per task, plus the terminate check
  every 20 ms.
- queue (`rushhpc.queue_loop`): the manager pushes tasks (push_tasks); each
  worker pops one (pop_task: BLMOVE + claim script) and reports it
  (finish_tasks). 3 round trips per task.

How: start the workers (1 worker: pinned to another CPU than Redis, the
floor's placement; more workers: where the OS puts them), wait until all are
registered (for the queue loop,
then push enough tasks that the queue never runs dry), let them run a
warm-up, then count finished tasks over a fixed window. Rows:

- ``tasks/s``: finished tasks per second in the window, all workers together,
  median of 3 runs (quick: 1); ratio = against the same loop with 1 worker (2 cores: expect at most ~2x,
  and Redis needs a share of the cores too).
- ``per-task time, 1 worker``: 1 / (tasks/s with 1 worker), in us; ratio = in
  floors (cross-core PING, the mean of medians measured right before and right
  after the workers ran); target 1.3 x the loop's round trips. Less steady
  than the paired ratios of `ops` (the floor cannot be measured during the
  window), so read it together with the ``ops`` cycle rows.
"""

from __future__ import annotations

import os
import time

import workloads
from common import Context, Row, can_pin, log, median, us

import rushhpc

LOOPS = ("propose", "queue")
ROUND_TRIPS = {"propose": 2, "queue": 3}


def start(rush: rushhpc.Rush, kind: str, n_workers: int, objective) -> list[str]:
    """Start ``n_workers`` worker processes running loop ``kind`` with ``objective``; wait until registered."""
    workloads.rushhpc_loops()
    if kind == "propose":
        ids = rush.start_local_workers(workloads.propose_loop, n_workers=n_workers, objective=objective)
    else:
        ids = rush.start_local_workers(rushhpc.queue_loop, n_workers=n_workers, fun=objective)
    rush.wait_for_workers(worker_ids=ids, timeout=120)
    return ids


def fill_queue(rush: rushhpc.Rush, n: int) -> None:
    """Push ``n`` tasks (random points) in calls of 10,000."""
    for lo in range(0, n, 10_000):
        rush.push_tasks(workloads.random_xs(min(10_000, n - lo)))


def server_time(rush: rushhpc.Rush) -> float:
    """Redis's clock (TIME) in seconds: the clock of the tasks' timestamps."""
    s, micro = rush.connector.time()
    return s + micro / 1e6


def pin_cross(ctx: Context, rush: rushhpc.Rush) -> dict:
    """Pin Redis to the first CPU and the workers to the second (the floor's placement);
    returns Redis's old affinity to restore."""
    before = os.sched_getaffinity(ctx.server.proc.pid)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(ctx.server.proc.pid, {cpus[0]})
    for pid in rush.worker_info["pid"].dropna():
        os.sched_setaffinity(int(pid), {cpus[1]})
    return {"redis": before}


def measure(ctx: Context, kind: str, n_workers: int, window: float, objective=workloads.noop,
            queue_size: int = 0, pin: bool = False) -> dict:
    """Run loop ``kind`` on ``n_workers`` processes; returns the window's counts.

    ``pin``: place Redis and the workers on different CPUs as for the floor
    (used with 1 worker; several workers share the cores as the OS likes).
    Returns tasks/s, the window (server clock, for utilisation), whether the
    queue ran dry, and the stopped manager (its tasks are still in Redis:
    call ``rush.reset()`` when done).
    """
    rush = rushhpc.Rush(ctx.network(f"loop-{kind}"), config=ctx.server.config())
    start(rush, kind, n_workers, objective)
    pinned = pin_cross(ctx, rush) if pin and can_pin() else None
    try:
        if kind == "queue":
            fill_queue(rush, queue_size)
        time.sleep(ctx.pick(0.5, 0.3))  # warm-up
        c0, t0, s0 = rush.n_finished_tasks, time.monotonic(), server_time(rush)
        time.sleep(window)
        c1, t1, s1 = rush.n_finished_tasks, time.monotonic(), server_time(rush)
        left = rush.n_queued_tasks if kind == "queue" else None
        rush.stop_workers(type="kill")
    finally:
        if pinned:
            os.sched_setaffinity(ctx.server.proc.pid, pinned["redis"])
    return {"rate": (c1 - c0) / (t1 - t0), "tasks": c1 - c0, "window": (s0, s1), "dry": left == 0,
            "rush": rush}


def run(ctx: Context) -> list[Row]:
    window = ctx.pick(3.0, 1.0)
    repeats = ctx.pick(3, 1)  # other jobs on a shared machine come and go: take the median
    # enough for ~12,000 tasks/s over push + warm-up + window (checked: "dry" below)
    queue_size = ctx.pick(60_000, 25_000)
    rows = []
    for kind in LOOPS:
        base = None
        for n in (1, 2, 4):
            rates, ratios, floors, dry = [], [], [], False
            for r in range(repeats):
                floor_before = ctx.floor_now()
                log(f"loops: {kind} loop, {n} worker(s), run {r + 1}/{repeats}")
                m = measure(ctx, kind, n, window, queue_size=queue_size, pin=n == 1)
                m["rush"].reset()
                m["rush"].close()
                floor_after = ctx.floor_now()
                floor = (floor_before + floor_after) / 2
                rates.append(m["rate"])
                ratios.append(1 / m["rate"] / floor)
                floors.append(floor)
                dry = dry or m["dry"]
            rate = median(rates)
            ctx.shared[f"loops.{kind}.{n}"] = rate
            base = base or rate
            note = f"{window:g} s windows, median of {repeats}: " + ", ".join(f"{x:,.0f}" for x in rates)
            if dry:
                note += "; the queue ran dry: a lower bound"
            if n == 1:
                note += "; worker and Redis pinned to different CPUs"
            rows.append(Row("loops", f"{kind} loop, no-op, {n} worker{'s' if n > 1 else ''}: tasks/s", round(rate),
                            "tasks/s", None, round(rate / base, 2), "1 worker", note=note))
            if n == 1:
                k = ROUND_TRIPS[kind]
                ratio = round(median(ratios), 2)
                rows.append(Row("loops", f"{kind} loop, per-task time, 1 worker process", us(1 / rate), "us", None,
                                ratio, "floor", f"<= {1.3 * k:g}x floor (1.3 x {k} round trips)", ratio <= 1.3 * k,
                                note="floor (cross-core PING, mean of before and after each run): "
                                     + ", ".join(f"{us(f)}" for f in floors) + " us; ratio: median over runs"))
    return rows

"""Per-operation cost, one client, in-process (no worker processes).

Each operation is timed in blocks alternating with PINGs on the same
connection, so its ratio to the floor is measured under the same load.
Redis and this process are pinned to different CPUs ("cross-core", the
placement of a busy worker, see `common.placement`); the two loop cycles are
measured again on one CPU ("same core"), where the round trip is smallest and
the client's own CPU time weighs most.

Rows (value = median per call, p99 per call; ratio = median / median PING on
the same connection = "round trips' worth of time" per call):

- ``push_running_tasks``, ``finish_tasks``, ``fail_tasks``, ``pop_task``: one
  task per call, by an in-process `RushWorker` (dedicated connection).
- ``push_tasks`` with 1, 100 and 10,000 tasks per call, by the manager
  (connection pool; its floor is a PING through the pool).
- ``propose/evaluate/report cycle`` (push_running_tasks + finish_tasks) and
  ``queue cycle`` (pop_task + finish_tasks): the per-task overhead of the two
  worker loops without process scheduling; targets 1.3 x 2 and 1.3 x 3 floors.

The note gives the Redis round trips per call (counted client writes) and p99
as a multiple of the PING p99.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from common import (
    Context,
    Paired,
    Row,
    count_round_trips,
    interleaved,
    median,
    p99,
    placement,
    us,
)

import rushhpc


def round_trips(fn: Callable[[], Any], calls: int = 20) -> float:
    """Redis round trips per call of ``fn`` (counted client writes, averaged)."""
    with count_round_trips() as c:
        for _ in range(calls):
            fn()
    return round(c.count / calls, 2)


def op_row(name: str, m: Paired, trips: float, *, floors_target: float | None = None, factor: float = 1.3,
           per_task: int = 1, note: str = "", suffix: str = "") -> Row:
    """One table row: median and p99 of the op against the PINGs interleaved with it."""
    op_s, floor_s = m.op, m.floor
    name = f"{name}{suffix}"
    floor_med, floor_p99 = median(floor_s), p99(floor_s)
    ratio = m.ratio  # paired per block; median(op) / median(PING) is close when the load is steady
    parts = [f"{trips:g} round trip(s)/call", f"p99 = {p99(op_s) / floor_p99:.2f}x PING p99",
             f"PING {us(floor_med)} us"]
    if per_task > 1:
        parts.insert(0, f"{us(median(op_s) / per_task)} us/task")
    if note:
        parts.append(note)
    row = Row("ops", name, us(median(op_s)), "us", us(p99(op_s)), ratio, "floor", note="; ".join(parts),
              extra={"round_trips": trips, "floor_us": us(floor_med), "floor_p99_us": us(floor_p99),
                     "p99_ratio": round(p99(op_s) / floor_p99, 2), "per_task_us": us(median(op_s) / per_task)})
    if floors_target is not None:
        limit = round(factor * floors_target, 2)
        row.target = f"<= {limit:g}x floor ({factor:g} x {floors_target:g} round trips)"
        row.met = ratio <= limit
    return row


def worker_ops(ctx: Context, w: rushhpc.RushWorker, rush: rushhpc.Rush, n: int) -> list[Row]:
    """push_running / finish / fail / pop, one task per call."""
    ping = w._net.connector.ping
    rows = []
    xs, ys = [{"x1": 0.5, "x2": 1.5}], [{"y": 2.0}]

    # push_running_tasks then finish_tasks, over the keys it made
    keys: list[str] = []
    m = interleaved(lambda: keys.extend(w.push_running_tasks(xs)), ping, n)
    trips = round_trips(lambda: keys.extend(w.push_running_tasks(xs)))
    rows.append(op_row("push_running_tasks (1 task)", m, trips))
    it = iter(keys)
    m = interleaved(lambda: w.finish_tasks([next(it)], ys), ping, n)
    trips = round_trips(lambda: w.finish_tasks([next(it)], ys))
    rows.append(op_row("finish_tasks (1 task)", m, trips))

    # fail_tasks over running tasks made untimed
    keys = [k for _ in range(n + 20) for k in w.push_running_tasks(xs)]
    it = iter(keys)
    m = interleaved(lambda: w.fail_tasks([next(it)], ["boom"]), ping, n)
    trips = round_trips(lambda: w.fail_tasks([next(it)], ["boom"]))
    rows.append(op_row("fail_tasks (1 task)", m, trips))

    # pop_task from a full queue (BLMOVE returns at once, then the claim script)
    rush.push_tasks(xs * (n + 20))
    m = interleaved(lambda: w.pop_task(timeout=1), ping, n)
    trips = round_trips(lambda: w.pop_task(timeout=1))
    rows.append(op_row("pop_task (timeout=1, queue not empty)", m, trips))

    return rows


def cycles(ctx: Context, w: rushhpc.RushWorker, rush: rushhpc.Rush, n: int, suffix: str,
           targets: tuple[float, float] | None = (1.3, 1.3)) -> list[Row]:
    """The per-task overhead of the two worker loops, without process scheduling. Worker
    processes use deferred replies; the synchronous rows are the default in-process
    worker (issue 7: propose within 1.2 x 2 floors, queue within 1.3 x 3). ``targets``:
    the factors for the propose and queue cycles (None: no target, e.g. same core)."""
    ping = w._net.connector.ping
    rows = []
    xs, ys = [{"x1": 0.5, "x2": 1.5}], [{"y": 2.0}]

    def propose_cycle() -> None:
        w.finish_tasks(w.push_running_tasks(xs), ys)

    m = interleaved(propose_cycle, ping, n)
    trips = round_trips(propose_cycle)
    rows.append(op_row("propose/evaluate/report cycle (push_running + finish), in-process", m, trips,
                       floors_target=2 if targets else None, factor=targets[0] if targets else 1.3,
                       suffix=suffix))

    rush.push_tasks(xs * (n + 20))

    def queue_cycle() -> None:
        task = w.pop_task(timeout=1)
        w.finish_tasks([task["key"]], ys)

    m = interleaved(queue_cycle, ping, n)
    trips = round_trips(queue_cycle)
    rows.append(op_row("queue cycle (pop_task + finish), in-process", m, trips, floors_target=3 if targets else None,
                       factor=targets[1] if targets else 1.3, suffix=suffix))
    w._net.connector.ping()  # read any deferred reply before the next family
    return rows


def client_cpu(ctx: Context, w: rushhpc.RushWorker, rush: rushhpc.Rush, n: int, suffix: str) -> list[Row]:
    """The client's own CPU time per task of the two cycles (``time.thread_time``, so the
    wait for Redis is not counted), and of one PING for scale. Median of 5 runs of n/5
    cycles. Where this CPU goes: ``python bench/profile.py`` (a sampling profiler)."""
    xs, ys = [{"x1": 0.5, "x2": 1.5}], [{"y": 2.0}]
    runs = 5
    per = max(50, n // runs)
    rush.push_tasks(xs * (per * runs + 20))

    def propose_cycle() -> None:
        w.finish_tasks(w.push_running_tasks(xs), ys)

    def queue_cycle() -> None:
        task = w.pop_task(timeout=1)
        w.finish_tasks([task["key"]], ys)

    rows = []
    for name, fn in (("propose/evaluate/report cycle", propose_cycle), ("queue cycle", queue_cycle),
                     ("PING (for scale)", w._net.connector.ping)):
        cpu = []
        for _ in range(runs):
            t = time.thread_time()
            for _ in range(per):
                fn()
            cpu.append((time.thread_time() - t) / per)
        rows.append(Row("ops", f"client CPU per task, {name}, in-process{suffix}", us(median(cpu)), "us",
                        note="thread CPU time, median of 5 runs of " + f"{per:,} calls: "
                             + ", ".join(f"{us(c)}" for c in cpu) + "; profile: bench/profile.py",
                        extra={"cpu_us": [us(c) for c in cpu]}))
    w._net.connector.ping()
    return rows


def push_ops(ctx: Context, rush: rushhpc.Rush) -> list[Row]:
    """push_tasks by the manager with 1, 100 and 10,000 tasks per call."""
    ping = rush.connector.ping
    rows = []
    for size, calls in ((1, ctx.pick(3000, 500)), (100, ctx.pick(300, 50)), (10_000, ctx.pick(10, 3))):
        batch = [{"x1": 0.5, "x2": float(i)} for i in range(size)]
        # a large call is paired with the 10 PINGs just before it
        m = interleaved(lambda b=batch: rush.push_tasks(b), ping, calls, block=10 if size == 1 else 1)
        trips = round_trips(lambda b=batch: rush.push_tasks(b), calls=2)
        name = f"push_tasks ({size:,} task{'s' if size > 1 else ''} per call), manager"
        rows.append(op_row(name, m, trips, per_task=size, note="floor: PING through the manager's pool"))
        rush.reset(workers=False)
    return rows


def run(ctx: Context) -> list[Row]:
    n = ctx.pick(5000, 1000)
    cfg = ctx.server.config()
    rush = rushhpc.Rush(ctx.network("ops"), config=cfg)
    w = rushhpc.RushWorker(rush.network_id, config=cfg)
    wd = rushhpc.RushWorker(rush.network_id, config=cfg, deferred_replies=True)  # as worker processes run
    try:
        with placement(ctx.server, "cross"):
            rows = worker_ops(ctx, w, rush, n)
            rows += cycles(ctx, wd, rush, n, ", deferred replies, cross-core")
            rows += cycles(ctx, w, rush, n, ", synchronous (the default), cross-core", targets=(1.2, 1.3))
            rows += client_cpu(ctx, w, rush, n, ", synchronous, cross-core")
            rush.reset(workers=False)
            rows += push_ops(ctx, rush)
        rush.reset(workers=False)
        with placement(ctx.server, "same"):
            rows += cycles(ctx, wd, rush, n, ", deferred replies, same core")
            rows += cycles(ctx, w, rush, n, ", synchronous (the default), same core", targets=None)
    finally:
        w.close()
        wd.close()
        rush.reset()
        rush.close()
    return rows

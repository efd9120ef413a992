"""Reading results: fetch_finished_tasks() into a pandas DataFrame.

The network holds N finished tasks (xs = two floats, ys = one float), made
with push_finished_tasks. Rows, for N = 1,000, 10,000 and 100,000 (quick
mode: up to 10,000):

- ``uncached``: fetch_finished_tasks(reset_cache=True) by a manager: every
  task read from Redis and turned into a DataFrame. Value = median time per
  task (us); the note gives the whole call and its round trips. Target at
  100,000: at most 15 us per task.
- ``incremental``: with N tasks cached, one more task finishes; time of the
  next fetch_finished_tasks() (the whole call, ms). Target: independent of
  the cache size, within 2x from 1,000 to 100,000 cached (a row of its own).
"""

from __future__ import annotations

import time

import workloads
from common import Context, Row, count_round_trips, log, median

import rushhpc


def add_finished(rush: rushhpc.Rush, n: int) -> None:
    """Record ``n`` finished tasks, 10,000 per call."""
    for lo in range(0, n, 10_000):
        k = min(10_000, n - lo)
        rush.push_finished_tasks(workloads.random_xs(k), [{"y": float(i)} for i in range(k)])


def time_call(fn) -> tuple[float, int]:
    """(seconds, round trips) of one call of ``fn``."""
    with count_round_trips() as c:
        t = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t
    return elapsed, c.count


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick((1_000, 10_000, 100_000), (1_000, 10_000))
    repeats = ctx.pick(3, 2)
    increments = ctx.pick(20, 10)
    rush = rushhpc.Rush(ctx.network("fetch"), config=ctx.server.config())
    rows, incremental = [], {}
    try:
        have = 0
        for n in sizes:
            log(f"fetch: {n:,} tasks")
            add_finished(rush, n - have)
            have = n
            times = []
            for _ in range(repeats):
                t, trips = time_call(lambda: rush.fetch_finished_tasks(reset_cache=True))
                times.append(t)
            assert len(rush.fetch_finished_tasks()) == n
            per_task = median(times) / n
            row = Row("fetch", f"fetch_finished_tasks(), uncached, {n:,} tasks: per task", round(per_task * 1e6, 2),
                      "us", None, note=f"whole call {median(times) * 1e3:.1f} ms; {trips} round trip(s)")
            if n == 100_000:
                row.target, row.met = "<= 15 us per task at 100,000", per_task * 1e6 <= 15
            rows.append(row)

            inc, inc_trips = [], 0
            for _ in range(increments):
                add_finished(rush, 1)
                have += 1
                t, inc_trips = time_call(rush.fetch_finished_tasks)
                inc.append(t)
            incremental[n] = median(inc)
            rows.append(Row("fetch", f"fetch_finished_tasks(), 1 new task, {n:,} cached", round(median(inc) * 1e3, 3),
                            "ms", round(max(inc) * 1e3, 3), round(median(inc) / incremental[sizes[0]], 2),
                            f"{sizes[0]:,} cached", note=f"{inc_trips} round trip(s); p99 column = max of {increments}"))
        big = sizes[-1]
        growth = incremental[big] / incremental[sizes[0]]
        rows.append(Row("fetch", f"incremental fetch: {big:,} cached vs {sizes[0]:,} cached", round(growth, 2), "x",
                        None, round(growth, 2), f"{sizes[0]:,} cached", "<= 2x (independent of the cache size)",
                        growth <= 2))
    finally:
        rush.reset()
        rush.close()
    return rows

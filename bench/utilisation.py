"""Utilisation, as in the rush paper: the share of worker time spent in the objective.

2 worker processes run each loop (propose/evaluate/report and queue) with an
objective that sleeps 1 ms or 10 ms and reports how long it really took
(``t_obj``). Over a fixed window (server clock):

    utilisation = sum of t_obj of the tasks finished in the window
                  / (number of workers x window length)

Median of 3 runs (quick: 1). The rest is rushhpc's overhead (round trips, encoding, the terminate check)
and the time a worker waits for a CPU. Targets with 10 ms: at least 95 % (propose loop) and
97 % (queue loop, issue 7).
The note gives the overhead per task implied: (1 - utilisation) x window x
workers / tasks.
"""

from __future__ import annotations

import loops
import pandas as pd
import workloads
from common import Context, Row, log


def utilisation(rush, window: tuple[float, float], n_workers: int) -> tuple[float, int]:
    """(utilisation, number of tasks) of the tasks finished inside ``window`` (server clock)."""
    df = rush.fetch_finished_tasks()
    lo = pd.Timestamp(window[0], unit="s", tz="UTC")
    hi = pd.Timestamp(window[1], unit="s", tz="UTC")
    inside = df[(df["finished_at"] >= lo) & (df["finished_at"] <= hi)]
    busy = float(inside["t_obj"].sum()) if len(inside) else 0.0
    return busy / (n_workers * (window[1] - window[0])), len(inside)


def once(ctx: Context, kind: str, seconds: float, n_workers: int, window: float) -> tuple[float, int, float]:
    """One run: (utilisation, tasks in the window, overhead per task in seconds)."""
    # the queue must outlast warm-up + window: at most n_workers / seconds tasks/s
    queue_size = int(n_workers / seconds * (window + 3))
    m = loops.measure(ctx, kind, n_workers, window, objective=workloads.timed_sleep(seconds), queue_size=queue_size)
    rush = m["rush"]
    try:
        u, n_tasks = utilisation(rush, m["window"], n_workers)
    finally:
        rush.reset()
        rush.close()
    length = m["window"][1] - m["window"][0]
    overhead = (1 - u) * length * n_workers / n_tasks if n_tasks else float("nan")
    return u, n_tasks, overhead


def run(ctx: Context) -> list[Row]:
    window = ctx.pick(3.0, 1.0)
    repeats = ctx.pick(3, 1)
    n_workers = 2
    rows = []
    for seconds in (0.001, 0.01):
        for kind in loops.LOOPS:
            runs = []
            for r in range(repeats):
                log(f"utilisation: {kind} loop, {seconds * 1000:g} ms objective, run {r + 1}/{repeats}")
                runs.append(once(ctx, kind, seconds, n_workers, window))
            u, n_tasks, overhead = sorted(runs)[len(runs) // 2]  # the run with the median utilisation
            row = Row("utilisation", f"{kind} loop, {seconds * 1000:g} ms objective, {n_workers} workers",
                      round(100 * u, 1), "%",
                      note=f"median of {repeats} runs ({', '.join(f'{100 * x[0]:.1f}' for x in runs)} %); "
                           f"{n_tasks:,} tasks; {overhead * 1e6:.0f} us overhead per task")
            if seconds == 0.01:
                goal = 0.97 if kind == "queue" else 0.95  # issue 7 raised the queue loop's to 97 %
                row.target, row.met = f">= {goal * 100:g} %", u >= goal
            rows.append(row)
    return rows

"""Random search on the Branin function with local workers: the rush manager vignette in Python.

Run it with no configuration at all: rushhpc starts a private Redis on this
machine and stops it at the end.

    python examples/random_search.py [--workers 2] [--tasks 200]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import rushhpc


def branin(x1: float, x2: float) -> float:
    """The Branin function; its global minimum is 0.397887 at three points."""
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def random_search(rush: rushhpc.RushWorker, n_tasks: int) -> None:
    """The worker loop: propose a point, mark it running, evaluate, report. Until the network holds
    n_tasks tasks: ``max_tasks`` creates a task only while there are fewer, in one atomic step, so
    the workers together evaluate exactly n_tasks points (checking ``n_finished_tasks`` first would
    let each worker start one more at the end)."""
    while not rush.terminated:
        xs = {"x1": random.uniform(-5, 10), "x2": random.uniform(0, 15)}
        keys = rush.push_running_tasks([xs], max_tasks=n_tasks)
        if not keys:  # the budget's tasks exist
            return
        rush.finish_tasks(keys, [{"y": branin(**xs)}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()

    rush = rushhpc.rsh("branin-random-search")
    rush.reset()
    worker_ids = rush.start_local_workers(random_search, n_workers=args.workers, n_tasks=args.tasks)
    rush.wait_for_workers(worker_ids=worker_ids)
    print(f"{len(worker_ids)} workers running on network {rush.network_id!r} (Redis {rush.config})")

    # workers stop themselves after n_tasks; poll the network until they have, and print a line
    # at most every 2 seconds (the best so far is kept from the new results, not re-read each time)
    best, seen, last_print = math.inf, 0, time.monotonic()
    while rush.n_running_workers > 0:
        rush.detect_lost_workers()
        new = rush.fetch_new_tasks(timeout=1)
        if len(new):
            seen += len(new)
            best = min(best, float(new["y"].min()))
        if time.monotonic() - last_print >= 2.0:
            last_print = time.monotonic()
            print(f"  {seen:5d} of {args.tasks} finished, best y so far {best:.4f}", flush=True)

    results = rush.fetch_finished_tasks().sort_values("y")
    print("\nBest 10 of", len(results), "evaluations (global minimum 0.397887):")
    print(results[["x1", "x2", "y", "worker_id"]].head(10).to_string(index=False))
    print("\nTasks per worker:", results["worker_id"].value_counts().to_dict())
    print(rush.worker_info[["worker_id", "state", "reason", "hostname", "pid"]].to_string(index=False))
    rush.reset()


if __name__ == "__main__":
    main()

"""Random search on the Branin function with workers started by a SLURM job array.

On a cluster's login node, with a Redis the compute nodes can reach:

    RUSHHPC_REDIS_URL=redis://:PASSWORD@login1:6379 python examples/slurm_random_search.py --workers 8

On the project's one-machine test cluster (scripts/slurm-cluster.sh start), leave RUSHHPC_REDIS_URL
unset: the private embedded Redis on 127.0.0.1 is reachable from its nodes, which are this machine.
"""

from __future__ import annotations

import argparse
import time

from random_search import random_search  # the same worker loop as the local example

import rushhpc
from rushhpc import rush_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--partition", default=None)
    parser.add_argument("--time", default="00:10:00", help="time limit of each worker job")
    args = parser.parse_args()

    rush_plan(
        worker_type="slurm",
        heartbeat_period=5,
        heartbeat_expire=30,
        launcher_options={"partition": args.partition, "time": args.time, "poll_interval": 5},
    )
    rush = rushhpc.rsh("branin-slurm")
    rush.reset()
    print(rush.render_script(random_search, n_workers=args.workers, n_tasks=args.tasks))

    worker_ids = rush.start_workers(random_search, n_workers=args.workers, n_tasks=args.tasks)
    print(rush.worker_info[["worker_id", "state", "job_id"]].to_string(index=False))
    rush.wait_for_workers(worker_ids=worker_ids, timeout=300)
    rush.start_monitor(interval=5)  # reconciles with squeue/sacct in the background
    print(rush.worker_info[["worker_id", "state", "job_id", "node"]].to_string(index=False))

    while rush.n_running_workers > 0:
        time.sleep(1)
        print(f"  {rush.n_finished_tasks:6d} finished", end="\r", flush=True)

    results = rush.fetch_finished_tasks().sort_values("y")
    print(f"\nBest 5 of {len(results)} evaluations (global minimum 0.397887):")
    print(results[["x1", "x2", "y", "worker_id"]].head(5).to_string(index=False))
    rush.detect_lost_workers(poll_scheduler=True)
    print(rush.worker_info[["worker_id", "state", "reason", "job_id", "job_state"]].to_string(index=False))
    rush.reset()


if __name__ == "__main__":
    main()

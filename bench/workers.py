"""Worker processes: how long they take to start, and how much memory they hold.

- ``start_local_workers() to registered``: wall time from the call to the
  moment every worker has registered in Redis (wait_for_workers), for 1 and
  4 workers (quick: 1 and 2). Mostly Python start-up and imports.
- ``resident memory``: RSS and USS (memory not shared with other processes,
  what ending it would free) of an idle worker (queue_loop on an empty queue)
  and of its heartbeat process, in MiB.
- ``import time``: ``python -c "import rushhpc"`` and of the heartbeat process's
  module, in a fresh interpreter (``-X importtime`` total), in ms.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import workloads
from common import Context, Row, log, rss_mib

import rushhpc


def start_time(ctx: Context, n: int) -> float:
    """Seconds from start_local_workers() until all ``n`` workers are registered."""
    workloads.rushhpc_loops()
    rush = rushhpc.Rush(ctx.network("start"), config=ctx.server.config())
    try:
        t = time.perf_counter()
        ids = rush.start_local_workers(rushhpc.queue_loop, n_workers=n, fun=workloads.noop)
        rush.wait_for_workers(worker_ids=ids, timeout=120)
        return time.perf_counter() - t
    finally:
        rush.reset()
        rush.close()


def idle_memory(ctx: Context) -> dict[str, tuple[float, float]]:
    """(RSS, USS) in MiB of an idle worker and of its heartbeat process."""
    workloads.rushhpc_loops()
    rush = rushhpc.Rush(ctx.network("mem"), config=ctx.server.config())
    try:
        ids = rush.start_local_workers(rushhpc.queue_loop, n_workers=1, fun=workloads.noop)
        rush.wait_for_workers(worker_ids=ids, timeout=120)
        time.sleep(1.0)  # let it settle into its idle wait
        info = rush.worker_info.iloc[0]
        return {"worker": rss_mib(int(info["pid"])), "heartbeat": rss_mib(int(info["heartbeat_pid"]))}
    finally:
        rush.reset()
        rush.close()


def import_ms(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, in ms."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, timeout=60, check=False).stderr
    total = 0
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m and not m.group(2).startswith(" "):
            total += int(m.group(1))  # top-level imports only: their cumulative times add up
    return round(total / 1000, 1)


def run(ctx: Context) -> list[Row]:
    rows = []
    for n in ctx.pick((1, 4), (1, 2)):
        log(f"workers: start {n}")
        samples = [start_time(ctx, n) for _ in range(ctx.pick(3, 1))]
        t = sorted(samples)[len(samples) // 2]
        rows.append(Row("workers", f"start_local_workers() to registered, {n} worker{'s' if n > 1 else ''}",
                        round(t, 3), "s", note=f"median of {len(samples)}"))
    mem = idle_memory(ctx)
    for what in ("worker", "heartbeat"):
        rss, uss = mem[what]
        rows.append(Row("workers", f"resident memory, idle {what} process", rss, "MiB",
                        note=f"USS {uss} MiB (not shared)"))
    for module in ("rushhpc", "rushhpc.worker.beat"):
        rows.append(Row("workers", f"import time of {module}", import_ms(module), "ms",
                        note="python -X importtime, fresh interpreter"))
    return rows

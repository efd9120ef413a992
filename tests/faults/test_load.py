"""Load: 100,000 tasks through 8 local workers while workers are SIGKILLed at random and the
monitor replaces them; then the invariant. The time it takes goes to docs/reliability.md."""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import cloudpickle
import pytest
from support import wait_until
from support.invariant import check, settle

from rushhpc import queue_loop

cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_TASKS = 100_000


def _noop(x):
    return {"y": x}


@pytest.mark.timeout(900)
def test_100k_tasks_with_random_kills(rush):
    rng = random.Random(7)
    rush.start_local_workers(queue_loop, n_workers=8, fun=_noop, heartbeat_period=0.5, heartbeat_expire=5)
    rush.wait_for_workers(8, timeout=60)
    rush.start_monitor(interval=0.5, keep_workers=True, restart_budget=50)
    t0 = time.monotonic()
    keys = rush.push_tasks([{"x": i} for i in range(N_TASKS)], max_retries=5)
    kills = 0
    procs = rush.launcher("local").processes
    while rush.n_finished_tasks < N_TASKS and time.monotonic() - t0 < 600:
        time.sleep(1.0)
        if kills < 8:
            alive = [w for w, p in procs.items() if p.poll() is None and w in set(rush.running_worker_ids)]
            if alive:
                os.killpg(procs[rng.choice(alive)].pid, signal.SIGKILL)
                kills += 1
    rush.wait_for_tasks(keys, timeout=120)
    elapsed = time.monotonic() - t0
    print(f"\n{N_TASKS} tasks, 8 workers, {kills} SIGKILLs, {len(rush.monitor.replacements)} replacements: "
          f"{elapsed:.1f} s")
    assert kills == 8
    wait_until(lambda: len(rush.monitor.replacements) >= kills, 30, what="the monitor to replace every killed worker")
    rush.stop_monitor()
    settle(rush)
    counts = check(rush, N_TASKS)
    assert counts == {"finished": N_TASKS}
    assert len(rush.lost_worker_ids) == kills

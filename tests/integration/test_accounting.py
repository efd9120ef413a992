"""Accounting with local workers: allocated time against time spent in objectives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cloudpickle
from support import wait_until

from rushhpc import queue_loop

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _sleepy(x):
    time.sleep(0.1)
    return {"y": x}


def test_accounting_matches_task_durations(rush, config):
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=_sleepy, heartbeat_period=0.5, heartbeat_expire=5)
    rush.wait_for_workers(2, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(20)])
    rush.wait_for_tasks(keys, timeout=60)
    rush.stop_workers(type="terminate")
    wait_until(lambda: set(rush.terminated_worker_ids) == set(ids), 30, what="workers to end")
    df, totals = rush.accounting()
    tasks = rush.fetch_finished_tasks()
    durations = (tasks["finished_at"] - tasks["started_at"]).dt.total_seconds()
    assert abs(df["busy_s"].sum() - durations.sum()) < 0.05
    assert df["tasks"].sum() == 20 and set(df["worker_id"]) == set(ids)
    assert (df["allocated_s"] >= df["busy_s"]).all() and (df["idle_s"] >= 0).all()
    assert set(df["source"]) == {"redis"} and set(df["cpus"]) == {1}
    assert 2.0 <= durations.sum() < 4.0  # 20 tasks of 0.1 s
    assert 0 < totals["busy_share"] <= 1
    assert abs(totals["core_hours"] - df["allocated_s"].sum() / 3600) < 1e-6
    out = subprocess.run([sys.executable, "-m", "rushhpc", "workers", rush.network_id, "--summary", "--json"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, RUSHHPC_REDIS_URL=config.url()))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert abs(doc["totals"]["busy_core_hours"] - totals["busy_core_hours"]) < 1e-6

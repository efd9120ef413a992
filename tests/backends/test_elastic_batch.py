"""Elasticity on the real SLURM cluster and the PBS emulator: adapt, paused adapt, chunked arrays, accounting."""

from __future__ import annotations

import subprocess
import sys
import time

import cloudpickle
import pytest
from support import wait_until
from support.batch import info

from rushhpc import queue_loop

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _nap(x):
    time.sleep(0.5)
    return {"y": x}


def test_adapt_bursty_queue_from_zero_to_max_and_back(batch, backend):
    r = batch(heartbeat_expire=20)
    adapter = r.adapt(queue_loop, minimum=0, maximum=3, idle_timeout=2, backlog=2, interval=0.5, fun=_nap)
    max_coming = 0
    for wave in range(2):
        keys = r.push_tasks([{"x": i} for i in range(12)])
        deadline = time.monotonic() + 180
        while r.n_finished_tasks < 12 * (wave + 1):
            rows = r.worker_rows()
            coming = sum(1 for w in rows if w["state"] in ("pending", "held", "starting"))
            max_coming = max(max_coming, coming)
            assert coming <= 2, rows  # never more pending jobs than the backlog
            assert sum(1 for w in rows if w["state"] in ("pending", "held", "starting", "running")) <= 3
            assert time.monotonic() < deadline
            time.sleep(0.2)
        r.wait_for_tasks(keys, timeout=60)
        wait_until(lambda: r.running_worker_ids == [] and r.worker_ids_in("pending") == [], 120,
                   what="idle workers to be released")
    assert max_coming >= 1
    rows = r.worker_rows()
    assert {w["state"] for w in rows} == {"terminated"}, rows
    assert r.n_finished_tasks == 24 and r.n_failed_tasks == 0
    assert adapter.status()["state"] == "active"
    r.stop_monitor()


def test_adapt_pauses_after_failed_starts(batch, backend):
    r = batch(setup=["rushhpc_no_such_command_xyz"], startup_grace=5)
    adapter = r.adapt(queue_loop, minimum=0, maximum=2, idle_timeout=2, interval=0.5, max_failures=2, fun=_nap)
    r.push_tasks([{"x": 1}])
    wait_until(lambda: adapter.status()["state"] == "paused", 120, interval=0.5, what="adapt to pause")
    launched = adapter.status()["launched"]
    assert "failures in a row" in adapter.status()["reason"]
    time.sleep(2)
    assert adapter.status()["launched"] == launched and r.n_queued_tasks == 1
    r.stop_monitor()


def test_array_larger_than_the_site_limit_goes_in_chunks(batch, backend):
    r = batch(max_array_size=2)
    ids = r.start_workers(queue_loop, n_workers=5, fun=abs, stop_when_empty=True, timeout=1)
    launcher = r.launcher(backend.worker_type)
    assert launcher.submissions == 3  # 2 + 2 + 1
    assert len({info(r, w)["job_id"].split("_")[0].split("[")[0] for w in ids}) == 3
    r.wait_for_workers(worker_ids=ids, timeout=120)


@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
def test_accounting_against_sacct(batch, backend):
    r = batch(cpus_per_task=2)
    ids = r.start_workers(queue_loop, n_workers=2, fun=_nap, stop_when_empty=True, timeout=1)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    keys = r.push_tasks([{"x": i} for i in range(6)])
    r.wait_for_tasks(keys, timeout=60)
    wait_until(lambda: r.detect_lost_workers(poll_scheduler=True) is not None
               and {w["job_state"] for w in r.worker_rows()} == {"finished"}, 90, interval=0.5, what="jobs to end")
    # slurmdbd records a job's end asynchronously (seconds under load): until then sacct has no
    # End and accounting falls back to Redis times, which is its documented behaviour.
    def from_sacct():
        df, _ = r.accounting()
        ended = subprocess.run(["sacct", "-X", "-P", "-n", "-j", ",".join(df["job_id"]), "-o", "End"],
                               capture_output=True, text=True, timeout=30).stdout.split()
        return set(df["source"]) == {"scheduler"} and len(ended) == len(df) and "Unknown" not in ended
    wait_until(from_sacct, 60, interval=1, what="slurmdbd to record both jobs' ends")
    df, totals = r.accounting()
    assert set(df["source"]) == {"scheduler"} and set(df["cpus"]) == {2}
    for row in df.itertuples():
        out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", row.job_id, "-o", "ElapsedRaw,AllocCPUS"],
                             capture_output=True, text=True, timeout=30)
        elapsed, cpus = out.stdout.split()[0].split("|")
        assert abs(row.allocated_s - int(elapsed)) <= 1 and int(cpus) == row.cpus
        assert row.busy_s <= row.allocated_s
    assert abs(totals["core_hours"] - (df["allocated_s"] * 2).sum() / 3600) < 1e-6
    assert df["tasks"].sum() == 6

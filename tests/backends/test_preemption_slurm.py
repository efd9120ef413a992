"""Preemption and out of memory on the real SLURM test cluster: partitions `debug` (PriorityTier 1) and `urgent`
(PriorityTier 10), PreemptType=preempt/partition_prio, PreemptMode=REQUEUE (scripts/slurm-cluster.sh).
A job of `urgent` that needs a worker's node requeues the worker's job: the worker's running task
goes back to the queue without using a retry, and the requeued job brings the worker back under
its id. The rules themselves on a plain Redis: tests/faults/test_preemption_rules.py."""

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


def _sleep(s):
    time.sleep(s)
    return {"y": s}


def _task(r, key):
    return r.connector.hgetall(r.keys.task(key))


@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
def test_preempted_worker_requeues_its_task_uncounted_and_comes_back(batch, backend):
    r = batch(heartbeat_expire=20, extra_directives=["--nodelist=n1"], requeue=True)
    [wid] = r.start_workers(queue_loop, n_workers=1, fun=_sleep)
    r.wait_for_workers(worker_ids=[wid], timeout=90)
    [key] = r.push_tasks([{"s": 15}], max_retries=0)  # no retry allowed: only an uncounted requeue saves it
    wait_until(lambda: _task(r, key).get("state") == "running", 60, what="the task to start")
    job = info(r, wid)["job_id"]
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-w", "n1", "--exclusive",
                             "-J", f"rushhpc-{r.network_id}-urgent", "-o", "/dev/null", "--wrap", "sleep 4"],
                            capture_output=True, text=True, timeout=30)
    assert urgent.returncode == 0, urgent.stderr
    urgent_id = urgent.stdout.strip().split(";")[0]
    try:
        def preempted():
            r.detect_lost_workers(poll_scheduler=True)
            row = info(r, wid)
            return row["state"] == "lost" and row["reason"] == "preempted"
        wait_until(preempted, 90, interval=0.5, what="the worker to be lost as preempted")
        assert r.n_failed_tasks == 0  # the task was not failed, although it had no retry
        assert _task(r, key)["free"] == "1"
        assert not r.connector.exists(r.keys.released(wid))  # settled: preemption does not count

        def back():
            r.detect_lost_workers(poll_scheduler=True)
            return info(r, wid)["state"] == "running"
        wait_until(back, 240, interval=1, what="the requeued job to bring its worker back")
        h = r.connector.hgetall(r.keys.worker(wid))
        assert h["requeues"] == "1" and h["last_reason"] == "preempted" and h["job_id"] == job
        assert int(h["restart"]) >= 1
        r.wait_for_tasks([key], timeout=120)
        t = _task(r, key)
        assert t["state"] == "finished" and t["worker_id"] == wid and t["attempt"] == "2" and t["free"] == "1"
        assert r.n_failed_tasks == 0 and r.n_finished_tasks == 1
    finally:
        subprocess.run(["scancel", urgent_id], capture_output=True, timeout=30)
    r.stop_workers(type="terminate")
    wait_until(lambda: r.detect_lost_workers(poll_scheduler=True) is not None
               and info(r, wid)["state"] == "terminated", 90, interval=0.5, what="the worker to terminate")


def _hog(mb):
    block = bytearray(mb * 1024 * 1024)  # touched: resident, not only reserved
    time.sleep(30)
    return {"y": len(block)}


@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
def test_a_job_killed_for_its_memory_says_out_of_memory(batch, backend):
    """The test cluster has no cgroups: slurmstepd kills a step over its --mem (OverMemoryKill)
    and the job ends FAILED with signal 9; its stderr says why, and so does the worker's reason
    and the task's condition."""
    r = batch(heartbeat_expire=20, mem="400M")
    [wid] = r.start_workers(queue_loop, n_workers=1, fun=_hog)
    r.wait_for_workers(worker_ids=[wid], timeout=90)
    [key] = r.push_tasks([{"mb": 900}], max_retries=0)

    def lost():
        r.detect_lost_workers(poll_scheduler=True)
        return info(r, wid)["state"] == "lost"
    wait_until(lost, 120, interval=0.5, what="the worker to be killed for its memory")
    row = info(r, wid)
    assert row["reason"] == "out_of_memory", row.to_dict()
    wait_until(lambda: r.n_failed_tasks == 1, 60, interval=0.5, what="the task to fail")
    assert "ran out of memory" in r.fetch_failed_tasks()["condition"].item()

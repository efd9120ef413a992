"""Worker faults against a real Redis: SIGKILL mid-task, SIGSTOP past the heartbeat expiry, a killed
Redis connection, an unreachable Redis at start, a paused Redis. Each ends with the invariant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cloudpickle
from support import wait_until
from support.invariant import check, settle

from rushhpc import queue_loop

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.5, "heartbeat_expire": 3}


def _slow(x):
    time.sleep(0.3)
    return {"y": x}


def _pids(rush, wid):
    row = next(r for r in rush.worker_rows() if r["worker_id"] == wid)
    return row["pid"], row["heartbeat_pid"]


def test_worker_sigkilled_mid_task(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=_slow, **HB)
    rush.wait_for_workers(2, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(10)], max_retries=1)
    wait_until(lambda: rush.n_running_tasks == 2, 20, what="two running tasks")
    victim = ids[0]
    os.killpg(rush.launcher("local").processes[victim].pid, signal.SIGKILL)
    rush.wait_for_tasks(keys, timeout=60)  # detection runs while it waits
    row = next(r for r in rush.worker_rows() if r["worker_id"] == victim)
    assert row["state"] == "lost" and row["reason"] == "process_died"
    settle(rush)
    counts = check(rush, 10)
    assert counts == {"finished": 10}  # its task was requeued (one retry) and finished by the other worker


def test_worker_sigkilled_holding_prefetched_tasks(rush):
    """A worker killed while it holds prefetched tasks loses none of them: those it never started go
    back to the queue (no retry used up) and are finished by the other worker; only the one it was
    evaluating follows the retry policy (here none: it fails)."""
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=_slow, prefetch=4, **HB)
    rush.wait_for_workers(2, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(16)])  # max_retries 0
    victim = ids[0]

    def holds_prefetched() -> bool:
        tasks = rush.fetch_running_tasks()
        return bool(len(tasks)) and (tasks["worker_id"] == victim).sum() >= 2

    wait_until(holds_prefetched, 20, what="the victim to hold prefetched tasks")
    os.killpg(rush.launcher("local").processes[victim].pid, signal.SIGKILL)
    rush.wait_for_tasks(keys, timeout=90)
    settle(rush)
    counts = check(rush, 16)
    assert counts.get("failed", 0) <= 1 and counts.get("finished", 0) + counts.get("failed", 0) == 16, counts
    failed = rush.fetch_failed_tasks()
    assert all(victim in c for c in failed["condition"]), failed


def test_worker_stopped_past_expiry_then_resumed(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=_slow, **HB)
    rush.wait_for_workers(2, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(8)], max_retries=1)
    wait_until(lambda: rush.n_running_tasks == 2, 20, what="two running tasks")
    victim = ids[0]
    pids = _pids(rush, victim)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: victim in rush.detect_lost_workers() or victim in rush.lost_worker_ids, 20,
                   what="the frozen worker to be lost")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    rush.wait_for_tasks(keys, timeout=60)
    # the resumed worker's late result was discarded (first writer wins) and it stopped
    wait_until(lambda: rush.launcher("local").processes[victim].poll() is not None, 20,
               what="the resumed worker to stop")
    log = rush.read_log()
    mine = log[log["worker_id"] == victim]["msg"].tolist()
    assert any("discarded" in m for m in mine), mine  # logged to the network, by the worker
    settle(rush)
    assert check(rush, 8) == {"finished": 8}


def test_killed_redis_connections_are_reopened(rush, config):
    rush.start_local_workers(queue_loop, n_workers=2, fun=_slow, **HB)
    rush.wait_for_workers(2, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(12)])
    wait_until(lambda: rush.n_finished_tasks >= 2, 30, what="some results")
    # every heartbeat process has connected and beaten (it may still be starting when its worker registers)
    wait_until(lambda: rush.worker_info["heartbeat_alive"].all(), 30, what="both heartbeats to beat")
    admin = config.client()
    me = admin.client_id()
    killed = 0
    for c in admin.client_list():
        if int(c["id"]) != me:
            killed += admin.client_kill_filter(_id=int(c["id"]))
    assert killed >= 4  # each worker's connection and its heartbeat's, at least
    rush.wait_for_tasks(keys, timeout=60)
    assert rush.lost_worker_ids == [] and rush.n_failed_tasks == 0
    settle(rush)
    assert check(rush, 12) == {"finished": 12}


def test_worker_that_cannot_reach_redis_at_start(tmp_path):
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"url": "redis://:pw@127.0.0.1:1/0"}))
    creds.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "rushhpc", "worker", "--network", "n1", "--start-id", "s1",
                          "--credentials", str(creds)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot reach Redis at 127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr and ":pw@" not in out.stderr


def test_paused_redis_declares_no_worker_lost(rush, config):
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=_slow, **HB)
    rush.wait_for_workers(2, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(10)])
    wait_until(lambda: rush.n_finished_tasks >= 1, 30, what="a first result")
    config.client().execute_command("CLIENT", "PAUSE", 2000, "ALL")  # 4 heartbeat periods, under the expiry
    time.sleep(2.2)
    rush.wait_for_tasks(keys, timeout=60)
    assert rush.detect_lost_workers() == [] and set(rush.running_worker_ids) == set(ids)
    settle(rush)
    assert check(rush, 10) == {"finished": 10}


def test_heartbeat_process_killed_alone(rush):
    """The heartbeat dies, the worker lives on: once the expiry passes it is lost, its task is
    requeued, and the worker notices it is no longer running and stops; nothing is counted twice."""
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=_slow, **HB)
    rush.wait_for_workers(2, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(10)], max_retries=1)
    wait_until(lambda: rush.n_running_tasks == 2, 20, what="running tasks")
    victim = ids[0]
    os.kill(_pids(rush, victim)[1], signal.SIGKILL)
    rush.wait_for_tasks(keys, timeout=60)
    wait_until(lambda: victim in rush.lost_worker_ids or victim in rush.detect_lost_workers(), 20,
               what="the worker without heartbeat to be lost")
    wait_until(lambda: rush.launcher("local").processes[victim].poll() is not None, 30,
               what="the worker without heartbeat to stop")
    settle(rush)
    assert check(rush, 10) == {"finished": 10}

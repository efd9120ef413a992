"""Preemption and requeue on a plain Redis: how a stopping worker's running tasks are released
(`Release`), how the scheduler's verdict settles tasks a SIGTERMed batch worker released
uncounted, and how a requeued job brings its lost worker back under the same id.
The same on the real SLURM cluster: tests/backends/test_preemption_slurm.py."""

from __future__ import annotations

import pytest

import rushhpc
from rushhpc.core.records import JobStatus
from rushhpc.core.states import Release
from rushhpc.errors import RushConfigError
from rushhpc.manager.reconcile import decide


def _task(rush, key):
    return rush.connector.hgetall(rush.keys.task(key))


def _slurm_env(monkeypatch, job="4242", restart="0"):
    monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("SLURM_RESTART_COUNT", restart)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)


def test_hold_then_preempted_leaves_the_attempt_uncounted(rush, config):
    [key] = rush.push_tasks([{"x": 1}], max_retries=0)
    w1 = rushhpc.RushWorker(rush.network_id, config=config)
    assert w1.pop_task(timeout=1)["key"] == key
    rush.mark_workers("lost", [(w1.worker_id, "sigterm", "sigterm")], retry=Release.HOLD)
    assert rush.queued_tasks == [key]  # back in the queue although no retry was allowed
    assert rush.connector.smembers(rush.keys.released(w1.worker_id)) == {key}
    assert rush.settle_released(w1.worker_id, "preempted") == 0
    assert rush.queued_tasks == [key] and _task(rush, key)["free"] == "1"
    assert not rush.connector.exists(rush.keys.released(w1.worker_id))
    # its one counted attempt is still there: the next worker that loses it fails it
    w2 = rushhpc.RushWorker(rush.network_id, config=config)
    t = w2.pop_task(timeout=1)
    assert t["key"] == key and _task(rush, key)["attempt"] == "2"
    assert w1.finish_tasks([key], [{"y": "stale"}]) == [key]  # the preempted run is fenced off
    rush.mark_workers("lost", [(w2.worker_id, "heartbeat_expired", "lost for real")], retry=True)
    assert rush.fetch_failed_tasks()["condition"].tolist() == ["lost for real"]
    w1.close()
    w2.close()


def test_hold_then_time_limit_counts_the_attempt(rush, config):
    keys = rush.push_tasks([{"x": 1}, {"x": 2}], max_retries=0)
    w1 = rushhpc.RushWorker(rush.network_id, config=config)
    first = w1.pop_task(timeout=1)["key"]
    second = w1.pop_task(timeout=1)["key"]
    rush.mark_workers("lost", [(w1.worker_id, "sigterm", "sigterm")], retry=Release.HOLD)
    # another worker took one of them again before the verdict: it keeps running, counted
    w2 = rushhpc.RushWorker(rush.network_id, config=config)
    again = w2.pop_task(timeout=1)["key"]
    assert again in keys
    assert rush.settle_released(w1.worker_id, "timeout") == 1
    failed = rush.fetch_failed_tasks()
    assert failed["keys"].tolist() == [k for k in (first, second) if k != again]
    assert "timeout" in failed["condition"].iloc[0] and "no retry left" in failed["condition"].iloc[0]
    assert rush.queued_tasks == [] and rush.connector.sismember(rush.keys.running, again)
    rush.mark_workers("lost", [(w2.worker_id, "heartbeat_expired", "again")], retry=True)
    assert len(rush.fetch_failed_tasks()) == 2  # its counted attempt is used: no retry left
    w1.close()
    w2.close()


def test_free_release_requeues_without_a_retry(rush, config):
    [key] = rush.push_tasks([{"x": 1}], max_retries=0)
    w = rushhpc.RushWorker(rush.network_id, config=config)
    w.pop_task(timeout=1)
    rush.mark_workers("lost", [(w.worker_id, "preempted", "requeued")], retry=Release.FREE)
    assert rush.queued_tasks == [key] and _task(rush, key)["free"] == "1"
    assert not rush.connector.exists(rush.keys.released(w.worker_id))  # nothing left to settle
    w.close()


def test_a_requeued_job_brings_its_lost_worker_back(rush, config, monkeypatch):
    _slurm_env(monkeypatch, restart="0")
    w = rushhpc.RushWorker(rush.network_id, config=config, worker_id="w-req")
    rush.mark_workers("lost", [("w-req", "preempted", "requeued")], retry=Release.FREE)
    w.close()
    with pytest.raises(RushConfigError, match="already registered"):  # the same run twice: refused
        rushhpc.RushWorker(rush.network_id, config=config, worker_id="w-req").close()
    _slurm_env(monkeypatch, job="9999", restart="1")
    with pytest.raises(RushConfigError, match="already registered"):  # another job: refused
        rushhpc.RushWorker(rush.network_id, config=config, worker_id="w-req").close()
    _slurm_env(monkeypatch, restart="1")
    back = rushhpc.RushWorker(rush.network_id, config=config, worker_id="w-req")
    h = rush.connector.hgetall(rush.keys.worker("w-req"))
    assert h["state"] == "running" and h["requeues"] == "1" and h["last_reason"] == "preempted"
    assert "reason" not in h and "stopped_at" not in h and h["restart"] == "1"
    assert rush.worker_ids_in("running") == ["w-req"] and rush.worker_ids_in("lost") == []
    # a worker a manager killed does not come back, whatever the restart count
    rush.mark_workers("killed", [("w-req", "killed", "x")], retry=False)
    back.close()
    _slurm_env(monkeypatch, restart="2")
    with pytest.raises(RushConfigError, match="already registered"):
        rushhpc.RushWorker(rush.network_id, config=config, worker_id="w-req").close()


def test_rules_requeue():
    lost = {"state": "lost", "reason": "sigterm"}
    d = decide("w", {}, lost, False, JobStatus("pending", reason=""), 0, 60, 10)
    assert d.refine_reason == "preempted" and not d.done and not d.cancel_job
    back = {"state": "lost", "reason": "preempted"}
    assert not decide("w", {}, back, False, JobStatus("pending"), 0, 60, 10).refine_reason  # once
    d = decide("w", {}, back, False, JobStatus("running"), 100, 60, 10)
    assert not d.cancel_job and d.track["rerun_since"] == 100  # the requeued job runs: grace
    d = decide("w", {"rerun_since": 100}, back, False, JobStatus("running"), 200, 60, 10)
    assert d.cancel_job  # it did not come back within the grace
    d = decide("w", {"rerun_since": 100}, {"state": "running"}, True, JobStatus("running"), 120, 60, 10)
    assert d.track["rerun_since"] is None and not d.cancel_job  # back: a later requeue gets its own grace
    # the heartbeat expired (SIGKILL) and the job is queued again: preempted, tasks released uncounted
    d = decide("w", {}, {"state": "running"}, False, JobStatus("pending"), 0, 60, 10)
    assert d.lost_reason == "preempted"
    ended = decide("w", {}, {"state": "lost", "reason": "sigterm"}, False,
                   JobStatus("finished", reason="completed"), 0, 60, 10)
    assert ended.settle == "sigterm" and ended.done  # no better word: the attempts count


# ---------------------------------------------------------------- walltime
def test_a_task_longer_than_the_walltime_left_is_left_for_another_worker(rush, config):
    [long_key] = rush.push_tasks([{"x": 1}], expected_duration=3600, max_retries=0)
    short = rushhpc.RushWorker(rush.network_id, config=config, walltime=60, walltime_margin=0)
    assert short.pop_task(timeout=0) is None
    assert short.terminated and short.stop_reason.startswith("walltime:") and "3600 s" in short.stop_reason
    h = _task(rush, long_key)
    assert rush.queued_tasks == [long_key] and h["state"] == "queued" and h["free"] == "1"
    assert "worker_id" not in h and not rush.connector.sismember(rush.keys.running, long_key)
    # a fresh worker with time (or none set) takes it; the given-back attempt is not a retry used
    fresh = rushhpc.RushWorker(rush.network_id, config=config, walltime=7200, walltime_margin=0)
    t = fresh.pop_task(timeout=0)
    assert t["key"] == long_key and t["xs_extra"]["expected_duration"] == 3600.0
    fresh.finish_tasks([long_key], [{"y": 1}])
    assert rush.fetch_finished_tasks()["keys"].tolist() == [long_key]
    short.close()
    fresh.close()


def test_a_worker_learns_the_typical_duration_and_stops_before_running_out(rush, config):
    import time
    rush.push_tasks([{"x": i} for i in range(3)])
    w = rushhpc.RushWorker(rush.network_id, config=config)
    for _ in range(3):
        t = w.pop_task(timeout=0)
        time.sleep(0.3)
        w.finish_tasks([t["key"]], [{"y": 0}])
    w.close()
    # a worker started later reads the network's recent durations (about 0.3 s each) ...
    rush.push_tasks([{"x": 9}])
    late = rushhpc.RushWorker(rush.network_id, config=config, walltime=0.2, walltime_margin=0)
    assert 0.25 <= late.typical_duration() < 2
    # ... and with 0.2 s of walltime takes no task of that kind
    assert late.pop_task(timeout=0) is None and "a typical task" in late.stop_reason
    assert rush.n_queued_tasks == 1
    late.close()


def test_expected_duration_is_checked(rush):
    with pytest.raises(rushhpc.RushError, match="expected_duration"):
        rush.push_tasks([{"x": 1}, {"x": 2}], expected_duration=[1.0])
    with pytest.raises(rushhpc.RushError, match="expected_duration"):
        rush.push_tasks([{"x": 1}], expected_duration=-5)
    assert rush.n_queued_tasks == 0


def test_a_task_its_worker_created_is_never_requeued(rush, config):
    w = rushhpc.RushWorker(rush.network_id, config=config)
    [key] = w.push_running_tasks([{"x": 1}])
    assert _task(rush, key)["origin"] == "worker"
    rush.mark_workers("lost", [(w.worker_id, "preempted", "its job was preempted")], retry=Release.FREE)
    assert rush.queued_tasks == [] and rush.fetch_failed_tasks()["condition"].tolist() == ["its job was preempted"]
    w.close()


def test_the_reconciler_expects_what_workers_use_without_a_heartbeat_expire():
    # issue 18: the reconciler fell back to a bare 60 s expiry for a worker with none in its hash, while
    # workers use max(60, 3 x period): with heartbeat_period=30 a worker expires after 90 s, not 60
    from rushhpc.manager.reconcile import Reconciler

    def lookup(name):
        raise AssertionError("not polled")

    assert Reconciler(None, lookup, heartbeat_period=30).heartbeat_expire == 90  # type: ignore[arg-type]
    assert Reconciler(None, lookup).heartbeat_expire == 60  # type: ignore[arg-type]
    assert Reconciler(None, lookup, heartbeat_expire=20, heartbeat_period=30).heartbeat_expire == 20  # type: ignore[arg-type]

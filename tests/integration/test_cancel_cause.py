"""A task failed without being evaluated carries why, in its CANCEL_FIELD, written in the same
script as its state (issue 18): the queue emptied (`CancelCause.REMOVED`) or its worker killed
(`CancelCause.WORKER_KILLED`), or its worker received SIGTERM (`CancelCause.WORKER_SIGTERM`). A task of
a lost worker, or one whose evaluation failed, has none.
Readers (the sweep engine) go by this field, never by the wording of the message.

On a real Redis, the scripts run strict (``#!lua``, Redis 7): every key they touch is in the
slot of the keys they declare, as on a Redis Cluster.
"""

from __future__ import annotations

import uuid

import pytest

import rushhpc
from rushhpc.core.states import CANCEL_FIELD, CancelCause, LostReason, TaskState, WorkerState
from rushhpc.store.protocol import STRICT_ENV


@pytest.fixture
def strict_rush(config, monkeypatch):
    """A manager whose scripts carry the #!lua shebang (keys outside the declared slot are refused)."""
    monkeypatch.setenv(STRICT_ENV, "1")
    r = rushhpc.Rush("t-" + uuid.uuid4().hex[:10], config=config)
    assert all(r.protocol.script(n).script.startswith("#!lua") for n in ("empty_queue", "stop_workers", "fetch"))
    yield r
    r.reset()
    r.close()


def _stored_cause(rush: rushhpc.Rush, key: str) -> str | None:
    return rush.connector.hget(rush.keys.task(key), CANCEL_FIELD)


def test_empty_queue_stores_the_cause_with_the_failure(strict_rush):
    rush = strict_rush
    keys = rush.push_tasks([{"x": i} for i in range(3)])
    assert rush.empty_queue() == 3
    assert [_stored_cause(rush, k) for k in keys] == [CancelCause.REMOVED] * 3
    df = rush.fetch_failed_tasks()
    assert df[CANCEL_FIELD].tolist() == [CancelCause.REMOVED] * 3
    # the cause sits beside the condition, before the other meta columns, not among the parameters
    assert list(df.columns).index(CANCEL_FIELD) == list(df.columns).index("condition") + 1
    rows = rush.task_rows(states=(TaskState.FAILED,))
    assert {r[CANCEL_FIELD] for r in rows} == {CancelCause.REMOVED}


def test_a_killed_worker_s_task_carries_the_cause(strict_rush, config):
    rush = strict_rush
    w = rushhpc.RushWorker(rush.network_id, config=config)
    try:
        rush.push_tasks([{"x": 1}, {"x": 2}])
        task = w.pop_task(timeout=5)
        assert task is not None
        assert rush.stop_workers(type="kill", worker_ids=[w.worker_id]) == [w.worker_id]
        assert rush.killed_worker_ids == [w.worker_id]
        assert _stored_cause(rush, task["key"]) == CancelCause.WORKER_KILLED
        failed = rush.fetch_failed_tasks()
        assert failed["keys"].tolist() == [task["key"]] and failed[CANCEL_FIELD].tolist() == [CancelCause.WORKER_KILLED]
        # the task still queued is untouched: no cause, not failed
        queued = rush.fetch_queued_tasks()
        assert len(queued) == 1 and CANCEL_FIELD not in queued.columns
    finally:
        w.close()


def test_lost_workers_and_failed_evaluations_carry_no_cause(strict_rush, config):
    rush = strict_rush
    w1 = rushhpc.RushWorker(rush.network_id, config=config)
    w2 = rushhpc.RushWorker(rush.network_id, config=config)
    try:
        rush.push_tasks([{"x": 1}, {"x": 2}])
        t1, t2 = w1.pop_task(timeout=5), w2.pop_task(timeout=5)
        w1.fail_tasks(t1["key"], ["Removed from queue"])  # an evaluation's error that reads like a cancel
        assert rush.mark_workers(WorkerState.LOST, [(w2.worker_id, LostReason.HEARTBEAT_EXPIRED, "worker was killed")],
                                 retry=False) == [w2.worker_id]
        assert _stored_cause(rush, t1["key"]) is None and _stored_cause(rush, t2["key"]) is None
        failed = rush.fetch_failed_tasks()
        assert len(failed) == 2 and CANCEL_FIELD not in failed.columns
        assert all(CANCEL_FIELD not in r for r in rush.task_rows(states=(TaskState.FAILED,)))
    finally:
        w1.close()
        w2.close()


def test_the_sweep_reads_the_cause_not_the_message(strict_rush, config):
    """What a sweep's ingest reads (task_rows) tells a cancelled point from an evaluation that failed,
    whatever the messages say."""
    from rushhpc.sweeps.ingest import cancel_cause

    rush = strict_rush
    w = rushhpc.RushWorker(rush.network_id, config=config)
    try:
        rush.push_tasks([{"x": 1}])
        t = w.pop_task(timeout=5)
        w.fail_tasks(t["key"], ["worker was killed"])  # the objective's own words
        rush.push_tasks([{"x": 2}])
        rush.empty_queue()
        by_x = {r["x"]: r for r in rush.task_rows(states=(TaskState.FAILED,))}
        assert by_x[1]["condition"] == "worker was killed" and cancel_cause(by_x[1]) is None
        assert cancel_cause(by_x[2]) is CancelCause.REMOVED
    finally:
        w.close()


def _hold_one_task(rush, seconds: float = 60):
    import time

    rush.push_running_tasks([{"x": 1}])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_worker_that_received_sigterm_fails_its_task_as_stopped_not_evaluated(strict_rush):
    # a scancel of a whole allocation SIGTERMs the sweep's workers: their points must be done again on --resume
    import os
    import signal
    import sys

    import cloudpickle
    from support import wait_until

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rush = strict_rush
    ids = rush.start_local_workers(_hold_one_task, n_workers=1, heartbeat_period=0.5, heartbeat_expire=5)
    wait_until(lambda: rush.n_running_tasks == 1, 30, what="the worker's running task")
    os.kill(int(rush.worker_info.set_index("worker_id").loc[ids[0], "pid"]), signal.SIGTERM)
    wait_until(lambda: rush.n_failed_tasks == 1, 30, what="the task failed by the worker's SIGTERM")
    key = rush.fetch_failed_tasks()["keys"].iloc[0]
    assert _stored_cause(rush, key) == CancelCause.WORKER_SIGTERM

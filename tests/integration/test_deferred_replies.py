"""Deferred replies: a worker's task calls return before Redis answers; nothing is lost or doubled."""

from __future__ import annotations

import logging

import pytest

from rushhpc.worker.api import worker_over
from rushhpc.worker.session import WorkerSession


@pytest.fixture
def dsession(rush, config):
    """A worker's session with deferred replies: these tests look at its connection (``dsession.net.connector``)."""
    s = WorkerSession(rush.network_id, config=config, deferred_replies=True)
    yield s
    s.close()


@pytest.fixture
def dworker(dsession):
    return worker_over(dsession)


def test_deferred_finish_lands_before_the_next_command(rush, dworker, dsession):
    keys = dworker.push_running_tasks([{"x": 1}, {"x": 2}])
    assert len(dsession.net.connector._pending) == 1
    assert dworker.finish_tasks(keys, [{"y": 1}, {"y": 2}]) == []  # returned without waiting for its reply
    assert len(dsession.net.connector._pending) == 1  # the push's reply was read: one call unanswered at most
    assert dworker.n_finished_tasks == 2  # any command reads the outstanding replies first, in order
    assert not dsession.net.connector._pending
    assert sorted(rush.fetch_finished_tasks()["y"]) == [1, 2]


def test_deferred_discard_is_logged(rush, dworker, caplog, dsession):
    keys = dworker.push_running_tasks([{"x": 1}])
    dsession.net.connector.drain()
    rush.mark_workers("lost", [(dworker.worker_id, "heartbeat_expired", "lost")], retry=False)
    with caplog.at_level(logging.WARNING, logger="rushhpc.worker.api"):
        dworker.finish_tasks(keys, [{"y": 1}])
        dsession.net.connector.drain()
    assert "discarded" in caplog.text
    assert dworker.terminated  # the reply carried the worker's state
    assert rush.n_finished_tasks == 0 and rush.n_failed_tasks == 1


def test_connection_killed_before_the_reply_is_read(rush, dworker, dsession):
    """The replies are lost with the connection: the calls run again, and are idempotent."""
    keys = dworker.push_running_tasks([{"x": 1}])
    dworker.finish_tasks(keys, [{"y": 1}])
    host, port = dsession.net.connector.connection._sock.getsockname()
    rush.connector.client_kill(f"{host}:{port}")  # from another connection, as a network fault would
    assert dworker.n_finished_tasks == 1  # re-run after reconnecting: finished once, not twice
    assert rush.n_tasks == 1 and rush.fetch_finished_tasks()["keys"].tolist() == keys


def test_script_cache_flushed(rush, dworker, dsession):
    rush.connector.script_flush()
    keys = dworker.push_running_tasks([{"x": 1}])  # EVALSHA answers NOSCRIPT: run again with the source
    dworker.finish_tasks(keys, [{"y": 5}])
    dsession.net.connector.drain()
    assert rush.fetch_finished_tasks()["y"].tolist() == [5]


def test_pop_task_respects_terminate(rush, dworker):
    rush.push_tasks([{"x": 1}])
    rush.stop_workers(type="terminate", worker_ids=[dworker.worker_id])
    assert dworker.pop_task(timeout=0) is None and dworker.terminated
    assert rush.n_queued_tasks == 1  # not taken


def test_pop_task_skips_deleted_tasks(rush, dworker):
    rush.push_tasks([{"x": 1}])
    rush.connector.delete(rush.keys.task(rush.queued_tasks[0]))
    keys = rush.push_tasks([{"x": 2}])
    task = dworker.pop_task(timeout=0)
    assert task["key"] == keys[0] and task["xs"] == {"x": 2}

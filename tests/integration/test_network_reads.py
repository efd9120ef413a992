"""What the Hydra launcher, the manager's display and the dashboard read, read through the network view
(issue 18: no raw Redis outside store/ and network/ in these views): a poll of a few task fields, the stored
records of some tasks, the outputs of some tasks, the newest log record's id, the sweep's record, Redis's
clock; each of the dashboard's reads in one round trip (its /api endpoints are polled every second); and a
check that those modules issue no raw command."""

from __future__ import annotations

import ast
import json
import time
from contextlib import contextmanager
from typing import Iterator

import pytest
import redis.connection
from support import REPO

ROOT = REPO


def test_task_fields_poll_a_few_fields(rush, worker):
    keys = rush.push_tasks([{"x": 1}, {"x": 2}])
    task = worker.pop_task(timeout=1)
    rows = rush.network.tasks.task_fields([*keys, "no-such-key"], ["state", "worker_id"])
    by_key = dict(zip([*keys, "no-such-key"], rows))
    assert by_key[task["key"]] == ["running", worker.worker_id]
    other = next(k for k in keys if k != task["key"])
    assert by_key[other] == ["queued", None] and by_key["no-such-key"] == [None, None]
    assert rush.network.tasks.task_fields([], ["state"]) == []


def test_task_records_are_the_stored_records(rush):
    keys = rush.push_finished_tasks([{"x": 1.0}], [{"y": float("nan")}], yss_extra=[{"blob": "abc"}])
    (rec,) = rush.network.tasks.task_records([*keys, "no-such-key"])  # a task that is gone is left out
    assert rec["keys"] == keys[0] and rec["state"] == "finished"
    assert rec["ys_extra"] == {"blob": "abc"} and rec["xs"] == {"x": 1.0}  # parts as dicts, not flattened
    assert rec["ys"]["y"] != rec["ys"]["y"]  # NaN survives (orjson alone refuses the token)
    assert rush.network.tasks.task_records([]) == []


def test_server_time_is_redis_clock(rush):
    assert rush.network.server_time() == pytest.approx(time.time(), abs=5)  # same host: the same clock


@contextmanager
def round_trips(monkeypatch) -> Iterator[list[int]]:
    """Counts the requests sent to Redis in the block (a pipeline is one; health-check PINGs are not counted)."""
    sent = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent[0] += bool(check_health)
        return send(self, command, check_health=check_health)

    with monkeypatch.context() as m:
        m.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
        yield sent


def test_task_outputs_in_one_round_trip(rush, worker, monkeypatch):
    done = rush.push_finished_tasks([{"x": 1.0}, {"x": 2.0}], [{"y": 0.5, "loss": float("nan")}, {"acc": 1}])
    (queued,) = rush.push_tasks([{"x": 3}])
    with round_trips(monkeypatch) as sent:
        outs = rush.network.tasks.task_outputs([*done, queued, "no-such-key"])
    assert sent == [1]
    assert outs[0]["y"] == 0.5 and outs[0]["loss"] != outs[0]["loss"]  # decoded as stored: NaN survives
    assert outs[1:] == [{"acc": 1}, None, None]  # a queued task and a gone one have no outputs
    with round_trips(monkeypatch) as sent:
        assert rush.network.tasks.task_outputs([]) == []
    assert sent == [0]


def test_last_log_id_is_the_newest_record(rush, monkeypatch):
    tasks = rush.network.tasks
    assert tasks.last_log_id() is None
    for msg in ("first", "second"):
        rush.connector.xadd(rush.keys.log, {"worker_id": "w-1", "level": "INFO", "logger": "t", "msg": msg})
    with round_trips(monkeypatch) as sent:
        last = tasks.last_log_id()
    assert sent == [1]
    rows = tasks.log_rows()
    assert last == rows[-1]["id"] and rows[-1]["msg"] == "second"
    assert tasks.log_rows(after=last) == []  # what the dashboard asks next: nothing new


def test_sweep_record_reads_either_kind_in_one_round_trip(rush, monkeypatch):
    from rushhpc.core.records import SweepInfo

    net = rush.network
    assert net.sweep_record() is None and net.sweep_info() is None
    net.set_sweep_info(SweepInfo("s", "tpe", "loss", "maximize", evaluations=10))  # what `rushhpc sweep` writes
    with round_trips(monkeypatch) as sent:
        rec = net.sweep_record()
    assert sent == [1]
    assert rec is not None and (rec["metric"], rec["direction"], rec["evaluations"]) == ("loss", "maximize", 10)
    rush.connector.delete(rush.keys.sweep)
    # a JSON object in a string (what other tools may write): read as it is; sweep_info says there is none
    rush.connector.set(rush.keys.sweep, json.dumps({"objective": "mymod:f", "metric": "y"}))
    with round_trips(monkeypatch) as sent:
        assert net.sweep_record() == {"objective": "mymod:f", "metric": "y"}
        assert net.sweep_info() is None  # not a WRONGTYPE error
    assert sent == [2]
    for text in ("[1, 2]", "not json"):
        rush.connector.set(rush.keys.sweep, text)
        assert net.sweep_record() is None
    rush.connector.delete(rush.keys.sweep)
    rush.connector.rpush(rush.keys.sweep, "x")  # neither kind
    assert net.sweep_record() is None and net.sweep_info() is None
    rush.connector.delete(rush.keys.sweep)


def test_server_time_in_one_round_trip(rush, monkeypatch):
    with round_trips(monkeypatch) as sent:
        rush.network.server_time()
    assert sent == [1]


DASHBOARD = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rushhpc" / "ui" / "dashboard").glob("*.py"))


@pytest.mark.parametrize("path", ["rushhpc/manager/display.py", "hydra_plugins/rushhpc_launcher/_core.py",
                                  "hydra_plugins/rushhpc_launcher/_worker.py", *DASHBOARD])
def test_views_issue_no_raw_redis(path):
    """The display, the Hydra launcher and the dashboard read and act through Network / Rush methods only."""
    tree = ast.parse((ROOT / path).read_text())
    # the connection and key layout, and the raw commands these views once issued (importing redis for its
    # exception classes is fine)
    raw = {"connector", "protocol", "keys", "pipeline", "execute_command", "xrevrange", "xrange", "hget", "hmget",
           "hgetall", "scan_iter"}
    found = [f"{path}:{n.lineno} .{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in raw]
    assert not found, found

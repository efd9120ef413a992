"""What the Hydra launcher and the manager's display read, read through the network view (issue 18:
no raw Redis outside store/ and network/ in these views): a poll of a few task fields, the stored
records of some tasks, Redis's clock; and a check that those modules issue no raw command."""

from __future__ import annotations

import ast
import time

import pytest
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


@pytest.mark.parametrize("path", ["rushhpc/manager/display.py", "hydra_plugins/rushhpc_launcher/_core.py",
                                  "hydra_plugins/rushhpc_launcher/_worker.py"])
def test_views_issue_no_raw_redis(path):
    """The display and the Hydra launcher read and act through Network / Rush methods only."""
    raw = {"connector", "protocol", "keys", "pipeline"}
    found = [f"{path}:{n.lineno} .{n.attr}" for n in ast.walk(ast.parse((ROOT / path).read_text()))
             if isinstance(n, ast.Attribute) and n.attr in raw]
    assert not found, found

"""Conformance: rush's tests/testthat/test-RushWorker.R (and test-start_worker.R), written fresh for
rushhpc's RushWorker. Each test names the R test it mirrors; deliberate differences are in docs/from-r.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest
from support import wait_until
from support.conformance import network_keys

from rushhpc import RushConfigError, RushPayloadError, RushWorker
from rushhpc.network.view import Network
from rushhpc.store.keys import Keys


@pytest.fixture
def net(worker, config):
    """A view of the worker's network: what R's RushWorker inherits from Rush (workers, task key lists,
    pushing finished tasks) and rushhpc's RushWorker leaves to views and managers (docs/from-r.md)."""
    return Network.open(worker.network_id, config)


def _drop(config, network_id: str) -> None:
    client = config.client()
    for k in client.scan_iter(match=Keys(network_id).pattern):
        client.delete(k)


# test-RushWorker.R: "constructing a rush worker works"
def test_constructing_a_worker(config):
    nid = "conf-" + uuid.uuid4().hex[:10]  # no manager made this network
    try:
        w = RushWorker(nid, config=config)
        try:
            assert isinstance(w, RushWorker)
            assert w.network_id == nid
            assert isinstance(w.worker_id, str) and w.worker_id
            view = Network.open(nid, config)  # workers are read through a view: a worker offers its own API only
            assert view.worker_ids == [w.worker_id]
            assert view.running_worker_ids == [w.worker_id]
        finally:
            w.close()
    finally:
        _drop(config, nid)


# test-RushWorker.R: "active bindings work after construction"
def test_counters_after_construction(worker, net):
    assert net.n_workers == 1
    assert (worker.n_queued_tasks, worker.n_running_tasks, worker.n_finished_tasks, worker.n_failed_tasks) == (0, 0, 0, 0)
    assert net.queued_tasks == [] and net.running_tasks == []
    assert net.finished_tasks == [] and net.failed_tasks == []


# test-RushWorker.R: "a worker is registered"
def test_a_worker_is_registered(worker, net):
    info = net.worker_info
    assert len(info) == 1
    assert {"worker_id", "pid", "hostname", "heartbeat", "state"} <= set(info.columns)
    row = info.iloc[0]
    assert row["worker_id"] == worker.worker_id
    assert row["pid"] == os.getpid()
    assert row["state"] == "running"
    assert net.worker_ids == [worker.worker_id]


# test-RushWorker.R: "heartbeat process is started"
def test_heartbeat_process_is_started(rush, config):
    w = RushWorker(rush.network_id, config=config, heartbeat_period=1, heartbeat_expire=3)
    try:
        assert w.heartbeat_process is not None and w.heartbeat_process.poll() is None
        key = rush.keys.heartbeat(w.worker_id)
        wait_until(lambda: rush.connector.pttl(key) > 0, 10, what="the heartbeat key to carry an expiry")
    finally:
        w.close()


# test-RushWorker.R: "set_terminated cleans up the heartbeat key eagerly"
def test_set_terminated_removes_the_heartbeat_key(rush, config):
    w = RushWorker(rush.network_id, config=config, heartbeat_period=1, heartbeat_expire=3)
    try:
        key = rush.keys.heartbeat(w.worker_id)
        wait_until(lambda: rush.connector.exists(key), 10, what="the heartbeat key")
        w.set_terminated()
        assert not rush.connector.exists(key)
    finally:
        w.close()


# test-RushWorker.R: "heartbeat_period and heartbeat_expire are validated"
def test_heartbeat_settings_are_validated(rush, config):
    with pytest.raises(RushConfigError, match="heartbeat_period must be > 0"):
        RushWorker(rush.network_id, config=config, heartbeat_period=0)
    with pytest.raises(RushConfigError, match="heartbeat_expire must be > 0"):
        RushWorker(rush.network_id, config=config, heartbeat_period=1, heartbeat_expire=0)
    with pytest.raises(RushConfigError, match="must be larger than heartbeat_period"):
        RushWorker(rush.network_id, config=config, heartbeat_period=2, heartbeat_expire=1)
    # deliberate difference: fractions of a second are accepted (R requires whole seconds)
    w = RushWorker(rush.network_id, config=config, heartbeat_period=0.5, heartbeat_expire=1.5)
    w.close()
    assert rush.n_workers == 1  # a refused worker registered nothing


# test-RushWorker.R: "large heartbeat values are sent to Redis as integers, not scientific notation"
def test_a_large_heartbeat_expiry_reaches_redis(rush, config):
    w = RushWorker(rush.network_id, config=config, heartbeat_period=1, heartbeat_expire=1e5)
    try:
        key = rush.keys.heartbeat(w.worker_id)
        wait_until(lambda: rush.connector.ttl(key) > 99_000, 10, what="a TTL near 1e5 s")
    finally:
        w.close()


# test-RushWorker.R: "a worker is terminated"
def test_a_worker_is_terminated(worker, net):
    assert net.running_worker_ids == [worker.worker_id]
    worker.set_terminated()
    assert net.running_worker_ids == []
    assert net.terminated_worker_ids == [worker.worker_id]
    assert worker.terminated


# test-RushWorker.R: "reading and writing a hash works with flatten"
def test_a_task_reads_back_flat(worker, net):
    # rushhpc has no public write_hashes/read_hashes: the flat view of one task is fetch_task
    [key] = worker.push_running_tasks([{"x1": 1, "x2": 2}])
    task = worker.fetch_task(key)
    assert task["x1"] == 1 and task["x2"] == 2 and "y" not in task
    worker.finish_tasks([key], [{"y": 3}])
    task = worker.fetch_task(key)
    assert (task["x1"], task["x2"], task["y"]) == (1, 2, 3)
    [key2] = net.push_finished_tasks([{"x1": 1, "x2": 2}], [{}])  # an empty output adds no column
    assert {"x1", "x2"} <= set(worker.fetch_task(key2)) and "y" not in worker.fetch_task(key2)


# test-RushWorker.R: "reading and writing a hash works without flatten"
def test_a_task_hash_keeps_inputs_and_outputs_apart(worker, net):
    [key] = worker.push_running_tasks([{"x1": 1, "x2": 2}], xss_extra=[{"timeout": 1}])
    worker.finish_tasks([key], [{"y": 3}])
    raw = net.connector.hgetall(net.keys.task(key))
    import json

    assert json.loads(raw["xs"]) == {"x1": 1, "x2": 2}
    assert json.loads(raw["ys"]) == {"y": 3}
    assert json.loads(raw["xs_extra"]) == {"timeout": 1}
    assert raw["state"] == "finished" and raw["worker_id"] == worker.worker_id


# test-RushWorker.R: "reading and writing hashes works"
def test_several_tasks_read_back_in_order(worker, net):
    keys = worker.push_tasks([{"x1": 1, "x2": 2}, {"x1": 1, "x2": 3}], xss_extra=[{"timeout": 1}, {"timeout": 1}])
    rows = [worker.fetch_task(k) for k in keys]
    assert [(r["x1"], r["x2"], r["timeout"]) for r in rows] == [(1, 2, 1), (1, 3, 1)]
    keys = net.push_finished_tasks([{"x1": 1, "x2": 2}, {"x1": 1, "x2": 3}], [{"y": 3}, {"y": 4}])
    assert [worker.fetch_task(k)["y"] for k in keys] == [3, 4]


# test-RushWorker.R: "writing hashes to specific keys works"
def test_each_task_gets_its_own_fresh_key(worker):
    # deliberate difference: rushhpc chooses task keys (128 random bits); there is no keys= argument
    keys = worker.push_tasks([{"x1": 1, "x2": 2}, {"x1": 1, "x2": 3}])
    assert len(set(keys)) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", k) for k in keys)
    assert [worker.fetch_task(k)["x2"] for k in keys] == [2, 3]
    with pytest.raises(TypeError):
        worker.push_tasks([{"x1": 1}], keys=["mine"])


# test-RushWorker.R: "write_hashes enforces length-1-or-equal across fields"
def test_extras_of_another_length_are_refused(worker, net):
    before = network_keys(net)
    with pytest.raises(RushPayloadError, match="expected 3"):
        worker.push_tasks([{"x1": 1}, {"x1": 2}, {"x1": 3}], xss_extra=[{"y": 1}, {"y": 2}])
    with pytest.raises(RushPayloadError, match="expected 2"):
        net.push_finished_tasks([{"x1": 1}, {"x1": 2}], [{"y": 1}, {"y": 2}, {"y": 3}])
    assert network_keys(net) == before and worker.n_tasks == 0


# test-RushWorker.R: "writing list columns works"
def test_list_values_come_back_as_lists(rush, worker):
    keys = worker.push_running_tasks([{"x1": 1, "x2": 2}], xss_extra=[{"extra": ["A"]}])
    worker.finish_tasks(keys, [{"y": 3}])
    assert worker.fetch_finished_tasks()["extra"].tolist() == [["A"]]
    # deliberate difference: a worker offers no reset; the manager resets the data, workers go on
    assert not hasattr(worker, "reset")
    rush.reset(workers=False)
    worker.fetch_finished_tasks(reset_cache=True)  # the cache is per view: another view's reset does not reach it
    keys = worker.push_running_tasks([{"x1": 1, "x2": 2}], xss_extra=[{"extra": ["a", "b", "c"]}])
    worker.finish_tasks(keys, [{"y": 3}])
    assert worker.fetch_finished_tasks()["extra"].tolist() == [["a", "b", "c"]]
    rush.reset(workers=False)
    worker.fetch_finished_tasks(reset_cache=True)
    keys = worker.push_running_tasks([{"x1": 1, "x2": 2}, {"x1": 2, "x2": 2}],
                                     xss_extra=[{"extra": ["A"]}, {"extra": ["B"]}])
    worker.finish_tasks(keys, [{"y": 3}, {"y": 4}])
    assert worker.fetch_finished_tasks()["extra"].tolist() == [["A"], ["B"]]


def _counts(net):
    return net.n_tasks, net.n_queued_tasks, net.n_running_tasks, net.n_finished_tasks, net.n_failed_tasks


# test-RushWorker.R: "popping a task works"
def test_popping_a_task(worker, net):
    worker.push_tasks([{"x1": 1, "x2": 2}])
    task = worker.pop_task()
    assert {"key", "xs"} <= set(task) and task["xs"] == {"x1": 1, "x2": 2}
    assert _counts(worker) == (1, 0, 1, 0, 0)
    assert net.queued_tasks == [] and net.running_tasks == [task["key"]]
    assert net.finished_tasks == [] and net.failed_tasks == []
    assert worker.fetch_queued_tasks().empty and worker.fetch_finished_tasks().empty
    assert worker.fetch_failed_tasks().empty
    data = worker.fetch_running_tasks()
    assert {"x1", "x2", "worker_id", "keys"} <= set(data.columns) and len(data) == 1
    assert data["worker_id"].tolist() == [worker.worker_id]
    assert len(worker.fetch_tasks()) == 1


# test-RushWorker.R: "finishing a task works"
def test_finishing_a_task(worker, net):
    worker.push_tasks([{"x1": 1, "x2": 2}])
    task = worker.pop_task()
    assert worker.finish_tasks([task["key"]], [{"y": 3}]) == []
    assert _counts(worker) == (1, 0, 0, 1, 0)
    assert net.finished_tasks == [task["key"]] and net.running_tasks == []
    assert worker.fetch_queued_tasks().empty and worker.fetch_running_tasks().empty
    assert worker.fetch_failed_tasks().empty
    data = worker.fetch_finished_tasks()
    assert {"x1", "x2", "worker_id", "y", "keys"} <= set(data.columns) and len(data) == 1
    assert len(worker.fetch_tasks()) == 1


# test-RushWorker.R: "failing a tasks works"
def test_failing_a_task(worker, net):
    worker.push_tasks([{"x1": 1, "x2": 2}])
    task = worker.pop_task()
    worker.fail_tasks([task["key"]], conditions=[{"message": "error"}])
    assert _counts(worker) == (1, 0, 0, 0, 1)
    assert net.failed_tasks == [task["key"]] and net.finished_tasks == []
    data = worker.fetch_failed_tasks()
    assert {"x1", "x2", "worker_id", "condition", "keys"} <= set(data.columns) and len(data) == 1
    # deliberate difference: the condition column holds the message (R: a list with $message)
    assert data["condition"].tolist() == ["error"]
    assert len(worker.fetch_tasks()) == 1


# test-RushWorker.R: "popping a task works", "finishing a task works", "failing a tasks works"
# (their is_running_task / is_failed_task checks)
def test_task_state_checks(worker, net):
    [a, b] = worker.push_tasks([{"x1": 1, "x2": 2}, {"x1": 1, "x2": 3}])
    ta = worker.pop_task()
    assert net.is_running_task([ta["key"]]) == [True]
    worker.fail_tasks([ta["key"]], ["error"])
    tb = worker.pop_task()
    worker.finish_tasks([tb["key"]], [{"y": 4}])
    assert net.is_failed_task([a, b]) == [True, False]
    assert net.is_running_task([a, b]) == [False, False]


# test-RushWorker.R: "moving and fetching tasks works"
def test_moving_and_fetching_tasks(worker):
    worker.push_tasks([{"x1": 1, "x2": x2} for x2 in (2, 3, 4, 5)])

    def tables():
        t = {s: getattr(worker, f"fetch_{s}_tasks")() for s in ("queued", "running", "finished", "failed")}
        every = worker.fetch_tasks()
        assert len(every) == 4 and every["keys"].is_unique
        sets = {s: set(df["keys"]) for s, df in t.items()}
        assert all(df["keys"].is_unique for df in t.values())
        names = list(sets)
        for i, s in enumerate(names):
            for o in names[i + 1:]:
                assert not sets[s] & sets[o], (s, o)
        return {s: len(df) for s, df in t.items()}

    assert tables() == {"queued": 4, "running": 0, "finished": 0, "failed": 0}
    task = worker.pop_task()
    assert tables() == {"queued": 3, "running": 1, "finished": 0, "failed": 0}
    worker.pop_task()
    worker.finish_tasks([task["key"]], [{"y": 3}])
    assert tables() == {"queued": 2, "running": 1, "finished": 1, "failed": 0}
    task = worker.pop_task()
    worker.fail_tasks([task["key"]], [{"message": "error"}])
    assert tables() == {"queued": 1, "running": 1, "finished": 1, "failed": 1}


# test-RushWorker.R: "pushing an empty list of running tasks is a no-op"
def test_pushing_no_running_tasks_is_a_no_op(worker, net):
    before = net.connector.dbsize()
    assert worker.push_running_tasks([]) == []
    assert worker.n_tasks == 0
    assert net.connector.dbsize() == before


# test-RushWorker.R: "moving a running task to failed works"
def test_failing_running_tasks(worker, net):
    keys = worker.push_running_tasks([{"x1": 1, "x2": 2}])
    worker.fail_tasks(keys, conditions=[{"message": "error"}])
    assert worker.fetch_running_tasks().empty and len(worker.fetch_failed_tasks()) == 1
    assert net.failed_tasks == keys
    keys = worker.push_running_tasks([{"x1": 1, "x2": 4}, {"x1": 1, "x2": 5}])
    worker.fail_tasks(keys, conditions=[{"message": "error"}] * 2)
    assert worker.fetch_running_tasks().empty and len(worker.fetch_failed_tasks()) == 3


# test-RushWorker.R: "fail_tasks broadcasts a length-1 condition across all keys"
def test_one_condition_fails_every_key(worker):
    keys = worker.push_running_tasks([{"x1": 1, "x2": x2} for x2 in (2, 3, 4)])
    worker.fail_tasks(keys, conditions=[{"message": "boom"}])
    assert worker.fetch_failed_tasks()["condition"].tolist() == ["boom"] * 3


# test-RushWorker.R: "fail_tasks rejects conditions whose length is neither 1 nor length(keys)"
def test_conditions_of_another_length_are_refused(worker):
    keys = worker.push_running_tasks([{"x1": 1, "x2": x2} for x2 in (2, 3, 4)])
    with pytest.raises(RushPayloadError, match="conditions has 2 elements, expected 3"):
        worker.fail_tasks(keys, conditions=[{"message": "error"}] * 2)
    assert worker.n_running_tasks == 3 and worker.n_failed_tasks == 0


# test-RushWorker.R: "finish_tasks discards a task that is no longer running"
def test_finishing_a_failed_task_is_discarded(worker, net):
    keys = worker.push_running_tasks([{"x1": 1, "x2": 2}])
    worker.fail_tasks(keys)
    assert worker.finish_tasks(keys, [{"y": 3}]) == keys  # the discarded keys are returned
    assert worker.n_failed_tasks == 1 and worker.n_finished_tasks == 0
    assert net.failed_tasks == keys


# test-RushWorker.R: "fail_tasks discards a task that already finished"
def test_failing_a_finished_task_is_discarded(worker, net):
    keys = worker.push_running_tasks([{"x1": 1, "x2": 2}])
    worker.finish_tasks(keys, [{"y": 3}])
    assert worker.fail_tasks(keys, [{"message": "lost"}]) == keys
    assert worker.n_finished_tasks == 1 and worker.n_failed_tasks == 0
    assert net.failed_tasks == [] and len(worker.fetch_finished_tasks()) == 1


# test-RushWorker.R: "a task stolen from the pending list is not marked as running"
def test_a_task_taken_back_from_the_pending_list_is_not_claimed(rush, worker, net):
    [key] = worker.push_tasks([{"x1": 1, "x2": 2}])
    # the first half of a blocking pop: the task moves from the queue into the worker's pending list
    net.connector.lmove(rush.keys.queued, rush.keys.pending(worker.worker_id), "RIGHT", "LEFT")
    # the manager declares the worker lost: its pending task goes back to the queue (R: fails it)
    rush.mark_workers("lost", [(worker.worker_id, "test", f"worker {worker.worker_id} was lost")], retry=True)
    # the second half of the pop, the claim, must not take the task
    assert not rush.protocol.claim_task(worker.worker_id, key, "1")
    assert worker.n_running_tasks == 0
    assert rush.queued_tasks == [key]


# test-RushWorker.R: "fetch task with states works"
def test_fetch_tasks_with_state(worker, net):
    worker.push_tasks([{"x1": 1, "x2": 2}])
    assert worker.n_queued_tasks == 1
    assert net.fetch_tasks_with_state(states=["finished"]).empty
    assert net.fetch_tasks_with_state(states=["running", "finished"]).empty
    tab = net.fetch_tasks_with_state(states=["queued"])
    assert len(tab) == 1 and "state" in tab.columns
    task = worker.pop_task()
    assert net.fetch_tasks_with_state()["state"].tolist() == ["running"]
    worker.finish_tasks([task["key"]], [{"y": 3}])
    assert net.fetch_tasks_with_state()["state"].tolist() == ["finished"]
    worker.push_tasks([{"x1": 2, "x2": 2}])
    task2 = worker.pop_task()
    worker.fail_tasks([task2["key"]], [{"message": "error"}])
    assert net.fetch_tasks_with_state()["state"].tolist() == ["finished", "failed"]


# test-RushWorker.R: "latest results are fetched"
def test_fetch_new_tasks_returns_each_result_once(worker):
    def run(x2, y):
        worker.push_tasks([{"x1": 1, "x2": x2}])
        task = worker.pop_task()
        worker.finish_tasks([task["key"]], [{"y": y}])

    run(2, 3)
    assert worker.fetch_new_tasks()["y"].tolist() == [3]
    assert worker.fetch_new_tasks().empty
    run(3, 4)
    assert worker.fetch_new_tasks()["y"].tolist() == [4]
    assert worker.fetch_new_tasks().empty
    run(4, 5)
    run(5, 6)
    assert sorted(worker.fetch_new_tasks()["y"].tolist()) == [5, 6]
    assert worker.fetch_new_tasks().empty


# test-RushWorker.R: "pushing finished tasks works"
def test_pushing_finished_tasks(worker, net):
    net.push_finished_tasks([{"x1": 1, "x2": 2}], [{"y": 3}], xss_extra=[{"extra_input": "A"}],
                               yss_extra=[{"extra_output": "B"}])
    assert worker.n_finished_tasks == 1 and worker.n_tasks == 1
    data = worker.fetch_finished_tasks()
    assert data["extra_input"].tolist() == ["A"] and data["extra_output"].tolist() == ["B"]


# test-RushWorker.R: "pushing failed tasks works"
def test_pushing_failed_tasks(worker, net):
    net.push_failed_tasks([{"x1": 1, "x2": 2}], conditions=[{"message": "error"}])
    assert worker.n_failed_tasks == 1 and worker.n_tasks == 1
    tab = worker.fetch_failed_tasks()
    assert tab["condition"].tolist() == ["error"]


# test-RushWorker.R: "task in states works"
def test_tasks_with_state(worker, net):
    all4 = ["queued", "running", "finished", "failed"]
    keys = worker.push_tasks([{"x1": 1, "x2": 2}])
    got = net.tasks_with_state(all4)
    assert list(got) == all4
    assert got == {"queued": keys, "running": [], "finished": [], "failed": []}
    assert net.tasks_with_state(["running", "queued", "finished", "failed"])["queued"] == keys
    task = worker.pop_task()
    assert net.tasks_with_state(all4) == {"queued": [], "running": keys, "finished": [], "failed": []}
    worker.finish_tasks([task["key"]], [{"y": 3}])
    assert net.tasks_with_state(all4) == {"queued": [], "running": [], "finished": keys, "failed": []}
    worker.push_tasks([{"x1": 2, "x2": 2}])
    task2 = worker.pop_task()
    worker.fail_tasks([task2["key"]], [{"message": "error"}])
    assert net.tasks_with_state(all4) == {"queued": [], "running": [], "finished": keys, "failed": [task2["key"]]}
    assert net.tasks_with_state(["queued"]) == {"queued": []}
    assert net.tasks_with_state(["queued", "running"]) == {"queued": [], "running": []}
    assert net.tasks_with_state(["queued", "running", "finished"]) == {"queued": [], "running": [], "finished": keys}


# test-start_worker.R: "start_worker errors informatively when start arguments are missing"
def test_a_worker_process_without_start_arguments_says_so(rush):
    creds = rush.credentials_file()
    rush.signing_key()  # the key file exists, so that the missing start id is what fails
    out = subprocess.run(
        [sys.executable, "-m", "rushhpc", "worker", "--network", rush.network_id, "--start-id", "nosuchstart",
         "--credentials", str(creds)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "nosuchstart" in out.stderr and "Traceback" not in out.stderr
    assert rush.n_workers == 0

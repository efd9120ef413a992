"""Conformance: rush's tests/testthat/test-Rush.R, written fresh for rushhpc's manager (`Rush`).

rush starts workers through mirai daemons (start_workers) or processx (start_local_workers); here both are
local worker processes (worker_type "local"), and script workers are the printed command run as a real
subprocess. Each test names the R test it mirrors; deliberate differences are in docs/from-r.md."""

from __future__ import annotations

import datetime
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import cloudpickle
import pytest
import redis
from support import wait_until
from support.conformance import (
    HB,
    add,
    alive,
    big_stderr_loop,
    crash_loop,
    fail_small_loop,
    hold_task_loop,
    idle_loop,
    network_keys,
    planned_manager,
    propose_loop,
    script_workers,
)

import rushhpc
from rushhpc import Rush, RushConfigError, RushPayloadError, RushTimeoutError, RushWorkerError, queue_loop, rsh

# Workers cannot import a test module: its loops travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

START = 30  # seconds a worker may take to register on a busy 2-core machine


def _pids(rush) -> dict[str, int]:
    return {r["worker_id"]: r["pid"] for r in rush.worker_rows()}


def _collect_lost(rush, n: int, timeout: float = 20) -> list[str]:
    """Call detect_lost_workers until it has reported ``n`` workers in all."""
    lost: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lost) < n:
        lost += rush.detect_lost_workers()
        if time.monotonic() > deadline:
            raise AssertionError(f"only {lost} of {n} workers detected lost within {timeout} s")
        time.sleep(0.05)
    return lost


# ---------------------------------------------------------------------------------------- start workers

# test-Rush.R: "constructing a rush manager works"
def test_constructing_a_manager(config):
    rush = rsh(network="conf-construct", config=config)
    try:
        assert isinstance(rush, Rush)
        assert rush.network_id == "conf-construct"
        assert isinstance(rush.config, rushhpc.RedisConfig)
        assert isinstance(rush.connector, redis.Redis)
    finally:
        rush.reset()
        rush.close()


# test-Rush.R: "workers are started"
def test_workers_are_started(config):
    with planned_manager(config, worker_type="local", **HB) as rush:
        assert rush.worker_info.empty
        ids = rush.start_workers(queue_loop, n_workers=2, fun=add)
        rush.wait_for_workers(2, timeout=START)
        info = rush.worker_info
        assert len(info) == 2 and info["pid"].is_unique
        assert set(info["worker_id"]) == set(ids) == set(rush.worker_ids)
        assert set(info["state"]) == {"running"}
        assert all(alive(p) for p in info["pid"])


def _subprocess_loop(rush):
    # a worker loop that starts processes of its own (R: a worker that creates mirai daemons)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1) as pool:
        value = pool.submit(abs, -7).result(timeout=60)
    keys = rush.push_running_tasks([{"x": 1}])
    rush.finish_tasks(keys, [{"ok": value == 7}])


# test-Rush.R: "workers can create local daemons"
def test_workers_can_start_processes_of_their_own(rush):
    rush.start_local_workers(_subprocess_loop, n_workers=1, **HB)
    wait_until(lambda: rush.n_finished_tasks == 1, 60, what="the worker's task")
    assert rush.fetch_finished_tasks()["ok"].tolist() == [True]


def _import_loop(rush):
    import uuid  # what R's `packages = "uuid"` loads: a worker imports what its loop imports

    while not rush.terminated:
        task = rush.pop_task(timeout=0.2)
        if task:
            rush.finish_tasks([task["key"]], [{"y": len(uuid.uuid4().hex) + task["xs"]["x1"]}])


# test-Rush.R: "packages are available on the worker"
def test_modules_are_available_on_the_worker(rush):
    rush.start_local_workers(_import_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    assert rush.n_workers == 1
    keys = rush.push_tasks([{"x1": 1, "x2": 2}])
    rush.wait_for_tasks(keys, timeout=30)
    assert rush.fetch_finished_tasks()["y"].tolist() == [33]
    # deliberate difference: no packages= option; like any other keyword it goes to the loop, which has no such
    # argument: refused before a worker starts (issue 20 defect 5b)
    with pytest.raises(TypeError, match="unexpected keyword argument 'packages'"):
        rush.start_local_workers(queue_loop, n_workers=1, fun=add, packages="uuid", **HB)
    assert rush.n_workers == 1


# test-Rush.R: "wait for workers works with worker ids"
def test_wait_for_workers_by_ids(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    # deliberate difference: neither n nor worker_ids waits for every worker this network launched
    rush.wait_for_workers(timeout=START)
    rush.wait_for_workers(worker_ids=ids, timeout=START)
    assert rush.n_running_workers == 1
    with pytest.raises(RushTimeoutError):
        rush.wait_for_workers(worker_ids=["x"], timeout=1)


# test-Rush.R: "wait for workers works with n"
def test_wait_for_workers_by_number(rush):
    rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(n=1, timeout=START)
    assert rush.n_running_workers == 1
    with pytest.raises(RushTimeoutError):
        rush.wait_for_workers(n=2, timeout=1)


# test-Rush.R: "wait for workers works with both n and worker ids"
def test_wait_for_workers_by_number_and_ids(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(n=1, worker_ids=ids, timeout=START)
    assert rush.n_running_workers == 1
    with pytest.raises(RushTimeoutError):
        rush.wait_for_workers(n=1, worker_ids=["x"], timeout=1)


# test-Rush.R: "wait for workers works with both n and worker ids" (more workers than ids is refused)
def test_wait_for_more_workers_than_ids_is_refused(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=START)
    t0 = time.monotonic()
    with pytest.raises(RushConfigError):
        rush.wait_for_workers(n=2, worker_ids=ids, timeout=2)
    assert time.monotonic() - t0 < 1


# test-Rush.R: "wait for workers works with both n and worker ids" (n of the listed ids suffice)
def test_wait_for_n_of_the_listed_workers(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=START)
    rush.wait_for_workers(n=1, worker_ids=[*ids, "x"], timeout=1)
    assert rush.n_running_workers == 1


# test-Rush.R: "wait for workers with timeout zero checks once before failing"
def test_wait_for_workers_with_timeout_zero(rush):
    rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(n=1, timeout=START)
    rush.wait_for_workers(n=1, timeout=0)
    assert rush.n_running_workers == 1
    t0 = time.monotonic()
    with pytest.raises(RushTimeoutError):
        rush.wait_for_workers(n=2, timeout=0)
    assert time.monotonic() - t0 < 1


# ---------------------------------------------------------------------------------------- local workers

# test-Rush.R: "local workers are started"
def test_local_workers_are_started(rush):
    assert rush.worker_info.empty
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(1, timeout=START)
    info = rush.worker_info
    assert len(info) == 1
    assert {"worker_id", "pid", "hostname", "heartbeat", "state"} <= set(info.columns)
    assert info["worker_id"].tolist() == ids == rush.worker_ids
    assert info["state"].tolist() == ["running"] and alive(int(info["pid"].iloc[0]))


# test-Rush.R: "additional local workers are started"
def test_additional_local_workers_are_started(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(1, timeout=START)
    assert rush.n_workers == 1
    ids2 = rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(2, timeout=START)
    info = rush.worker_info
    assert len(info) == 2 and set(info["worker_id"]) == set(ids + ids2)
    assert info["pid"].is_unique and set(info["state"]) == {"running"}


# test-Rush.R: "local workers remove the arguments file after start"
def test_start_arguments_leave_no_file(rush):
    rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_workers(1, timeout=START)
    # the loop and its arguments travel through Redis ({net}:start:<id>), signed; no file holds them
    assert len([k for k in network_keys(rush) if ":start:" in k]) == 1
    files = {p.relative_to(rush.run_dir).as_posix() for p in rush.run_dir.rglob("*") if p.is_file()}
    assert {f for f in files if not f.startswith("workers/")} <= {"credentials.json", "signing.key"}


# test-Rush.R: "a local worker writing large output to stderr does not block"
def test_a_worker_writing_much_to_stderr_does_not_block(rush):
    rush.start_local_workers(big_stderr_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    wait_until(lambda: rush.n_finished_tasks == 1, 30, what="the task after 1 MB of stderr")


# ------------------------------------------------------------------------------ start workers with script

# test-Rush.R: "worker script contains the password but the log redacts it"
def test_worker_script_holds_no_password(rush, caplog):
    caplog.set_level(logging.DEBUG)
    script = rush.worker_script(queue_loop, fun=add)
    # deliberate difference: the password is in neither the command nor the log (a 0600 file holds it)
    assert rush.config.password and rush.config.password not in script
    assert rush.config.password not in caplog.text
    assert "--credentials" in script
    assert oct(rush.credentials_file().stat().st_mode & 0o777) == "0o600"


# test-Rush.R: "worker script quoting survives a POSIX shell"
def test_worker_script_quoting_survives_a_shell(rush):
    python = "/opt/pa$$w'\"rd `date` \\slash/python3"
    script = rush.worker_script(queue_loop, fun=add, python=python)
    # print each word exactly as the shell hands it to the program
    words = subprocess.run(["sh", "-c", "printf '%s\\n' " + script], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert words[0] == python
    assert words[words.index("--network") + 1] == rush.network_id


# test-Rush.R: "heartbeat process is started"
def test_a_script_worker_has_a_heartbeat(rush, tmp_path):
    script = rush.worker_script(queue_loop, fun=add, heartbeat_period=1, heartbeat_expire=3)
    with script_workers(script, 1, tmp_path):
        rush.wait_for_workers(1, timeout=START)
        wait_until(lambda: rush.worker_info["heartbeat_alive"].all(), 10, what="a live heartbeat")
        assert rush.worker_info["heartbeat"].tolist() == [True]
        rush.stop_workers(type="kill")


# ---------------------------------------------------------------------------------------- terminate workers

# test-Rush.R: "a worker is terminated"
def test_a_worker_is_terminated(config):
    with planned_manager(config, worker_type="local", **HB) as rush:
        rush.start_workers(queue_loop, n_workers=2, fun=add)
        rush.wait_for_workers(2, timeout=START)
        w1, w2 = rush.running_worker_ids
        pids = _pids(rush)
        assert rush.stop_workers(type="terminate", worker_ids=w1) == [w1]
        wait_until(lambda: w1 in rush.terminated_worker_ids and not alive(pids[w1]), 20, what=f"{w1} to end")
        assert alive(pids[w2])
        assert rush.running_worker_ids == [w2] and rush.terminated_worker_ids == [w1]
        rush.stop_workers(type="terminate", worker_ids=w2)
        wait_until(lambda: w2 in rush.terminated_worker_ids and not alive(pids[w2]), 20, what=f"{w2} to end")
        assert sorted(rush.terminated_worker_ids) == sorted([w1, w2]) and rush.running_worker_ids == []


# test-Rush.R: "reset workers works"
def test_reset_with_workers(rush):
    rush.start_local_workers(propose_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    wait_until(lambda: rush.n_finished_tasks > 0, 30, what="a finished task")
    pid = rush.worker_info["pid"].iloc[0]
    rush.reset(workers=True)
    assert rush.worker_info.empty
    assert rush.running_worker_ids == [] and rush.terminated_worker_ids == []
    assert rush.n_tasks == 0 and rush.finished_tasks == []
    wait_until(lambda: not alive(pid), 20, what="the worker process to end")


# test-Rush.R: "reset data works"
def test_reset_of_the_data_only(rush):
    rush.start_local_workers(propose_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    wait_until(lambda: rush.n_finished_tasks > 0, 30, what="a finished task")
    keys = rush.finished_tasks
    rush.reset(workers=False)
    assert not set(keys) & set(rush.finished_tasks)
    assert rush.n_running_workers == 1 and len(rush.worker_info) == 1


# test-Rush.R: "reset data clears pending tasks so no phantom failed task is resurrected"
def test_reset_of_the_data_clears_pending_tasks(rush):
    rush.push_tasks([{"x1": 1, "x2": 2}])
    rush.start_local_workers(idle_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    [wid] = rush.worker_ids
    # a worker that moved a task into its pending list but has not claimed it
    rush.connector.lmove(rush.keys.queued, rush.keys.pending(wid), "RIGHT", "LEFT")
    rush.reset(workers=False)
    assert rush.connector.llen(rush.keys.pending(wid)) == 0
    assert rush.n_running_workers == 1
    os.kill(_pids(rush)[wid], signal.SIGKILL)
    assert _collect_lost(rush, 1) == [wid]
    assert rush.failed_tasks == [] and rush.queued_tasks == [] and rush.n_tasks == 0


# test-Rush.R: "reset clears the log counter"
def test_reset_clears_what_print_log_has_seen(rush, capsys):
    from rushhpc.network.logs import install

    w = rushhpc.RushWorker(rush.network_id, config=rush.config)
    installed = install(rush.connector, rush.keys.log, w.worker_id, {"conformance.reset": "INFO"})
    lg = logging.getLogger("conformance.reset")
    try:
        lg.info("before reset")
        rush.print_log()
        assert "before reset" in capsys.readouterr().out
        rush.reset()
        lg.info("after reset")
        rush.print_log()
        out = capsys.readouterr().out
        assert "after reset" in out and "before reset" not in out
    finally:
        for logger, handler in installed:
            logger.removeHandler(handler)
        w.close()


# ---------------------------------------------------------------------------------------- kill workers

def _kill_two(rush):
    rush.wait_for_workers(2, timeout=START)
    w1, w2 = rush.running_worker_ids
    pids = _pids(rush)
    assert alive(pids[w1]) and alive(pids[w2])
    assert rush.stop_workers(type="kill", worker_ids=w1) == [w1]
    wait_until(lambda: not alive(pids[w1]), 20, what=f"{w1}'s process to end")
    # deliberate difference: a killed worker reads "killed" (R: terminated)
    assert rush.killed_worker_ids == [w1] and rush.running_worker_ids == [w2]
    assert alive(pids[w2])
    rush.stop_workers(type="kill", worker_ids=w2)
    wait_until(lambda: not alive(pids[w2]), 20, what=f"{w2}'s process to end")
    assert sorted(rush.killed_worker_ids) == sorted([w1, w2])


# test-Rush.R: "a worker is killed"
def test_a_worker_is_killed(config):
    with planned_manager(config, worker_type="local", **HB) as rush:
        rush.start_workers(propose_loop, n_workers=2)
        _kill_two(rush)


# test-Rush.R: "running tasks of killed workers are marked as failed"
def test_running_tasks_of_killed_workers_fail(rush):
    rush.start_local_workers(hold_task_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    rush.push_tasks([{"x1": 1, "x2": 2}])
    wait_until(lambda: rush.n_running_tasks == 1, 20, what="the task to run")
    rush.stop_workers(type="kill")
    assert rush.n_running_tasks == 0 and rush.n_failed_tasks == 1
    assert rush.fetch_failed_tasks()["condition"].tolist() == ["worker was killed"]


# test-Rush.R: "stop_workers warns about and ignores workers that are not running"
def test_stop_workers_with_workers_that_are_not_running(rush):
    rush.start_local_workers(queue_loop, n_workers=2, fun=add, **HB)
    rush.wait_for_workers(2, timeout=START)
    w1, w2 = rush.running_worker_ids
    # deliberate difference: an id the network never had is refused, naming its workers, and nothing is
    # stopped (R: a warning, and the running ones are stopped): a misspelt id must not pass for done
    with pytest.raises(RushConfigError, match="no worker ghost in network") as e:
        rush.stop_workers(type="kill", worker_ids=[w1, "ghost"])
    assert w1 in str(e.value) and sorted(rush.running_worker_ids) == sorted([w1, w2])
    with pytest.raises(RushConfigError, match="ghost"):
        rush.stop_workers(type="kill", worker_ids="ghost")
    # a worker of the network that is no longer running is passed over, as in rush
    assert rush.stop_workers(type="kill", worker_ids=w1) == [w1]
    assert rush.stop_workers(type="kill", worker_ids=[w1, w2]) == [w2]
    assert sorted(rush.killed_worker_ids) == sorted([w1, w2])


# test-Rush.R: "a local worker is killed"
def test_a_local_worker_is_killed(rush):
    rush.start_local_workers(queue_loop, n_workers=2, fun=add, **HB)
    _kill_two(rush)


# test-Rush.R: "worker is killed with a heartbeat process"
def test_a_script_worker_is_killed_through_its_heartbeat(rush, tmp_path):
    script = rush.worker_script(queue_loop, fun=add, heartbeat_period=1, heartbeat_expire=3)
    with script_workers(script, 1, tmp_path):
        rush.wait_for_workers(1, timeout=START)
        info = rush.worker_info.iloc[0]
        assert info["heartbeat"] and alive(int(info["pid"]))
        rush.stop_workers(type="kill")  # no process handle: the heartbeat process kills it
        wait_until(lambda: not alive(int(info["pid"])), 20, what="the script worker to die")
        assert rush.worker_info["state"].tolist() == ["killed"]
        assert rush.killed_worker_ids == [info["worker_id"]]


# ---------------------------------------------------------------------------------------- push tasks

def _all_done(rush, n: int) -> None:
    assert (rush.n_tasks, rush.n_queued_tasks, rush.n_running_tasks, rush.n_finished_tasks, rush.n_failed_tasks) \
        == (n, 0, 0, n, 0)
    assert rush.queued_tasks == [] and rush.running_tasks == [] and rush.failed_tasks == []
    assert len(rush.finished_tasks) == n
    assert rush.fetch_queued_tasks().empty and rush.fetch_running_tasks().empty and rush.fetch_failed_tasks().empty
    assert len(rush.fetch_tasks()) == n


# test-Rush.R: "pushing a task to the queue works"
def test_pushing_a_task(rush):
    keys = rush.push_tasks([{"x1": 1, "x2": 2}])
    assert rush.n_queued_tasks == 1
    rush.start_local_workers(queue_loop, n_workers=2, fun=add, **HB)
    rush.wait_for_workers(2, timeout=START)
    rush.wait_for_tasks(keys, timeout=30)
    _all_done(rush, 1)
    data = rush.fetch_finished_tasks()
    assert {"x1", "x2", "worker_id", "y", "keys"} <= set(data.columns) and len(data) == 1


# test-Rush.R: "pushing an empty list of tasks is a no-op"
def test_pushing_no_tasks_is_a_no_op(rush):
    before = rush.connector.dbsize()
    assert rush.push_tasks([]) == []
    assert rush.push_finished_tasks([], []) == []
    assert rush.push_failed_tasks([], conditions=[]) == []
    assert rush.n_tasks == 0 and rush.connector.dbsize() == before


# test-Rush.R: "pushing multiple tasks to the queue works"
def test_pushing_several_tasks(rush):
    keys = rush.push_tasks([{"x1": 1, "x2": 2}] * 10)
    assert rush.n_queued_tasks == 10
    rush.start_local_workers(queue_loop, n_workers=2, fun=add, **HB)
    rush.wait_for_workers(2, timeout=START)
    rush.wait_for_tasks(keys, timeout=30)
    _all_done(rush, 10)
    data = rush.fetch_finished_tasks()
    assert {"x1", "x2", "worker_id", "y", "keys"} <= set(data.columns) and len(data) == 10


# test-Rush.R: "pushing a task with extras to the queue works"
def test_pushing_a_task_with_extras(rush):
    keys = rush.push_tasks([{"x1": 1, "x2": 2}], [{"timestamp": time.time()}])
    assert rush.n_queued_tasks == 1
    rush.start_local_workers(queue_loop, n_workers=2, fun=add, **HB)
    rush.wait_for_workers(2, timeout=START)
    rush.wait_for_tasks(keys, timeout=30)
    _all_done(rush, 1)
    assert rush.finished_tasks == keys


# test-Rush.R: "pushing multiple tasks with extras to the queue works"
def test_pushing_several_tasks_with_extras(rush):
    stamp = datetime.datetime.now(datetime.timezone.utc)
    # deliberate difference: task data is JSON, so a datetime comes back as its ISO 8601 text
    keys = rush.push_tasks([{"x1": 1, "x2": 2}] * 10, [{"timestamp": stamp}] * 10)
    assert rush.n_queued_tasks == 10
    rush.start_local_workers(queue_loop, n_workers=2, fun=add, **HB)
    rush.wait_for_workers(2, timeout=START)
    rush.wait_for_tasks(keys, timeout=30)
    _all_done(rush, 10)
    assert sorted(rush.finished_tasks) == sorted(keys)
    data = rush.fetch_finished_tasks()
    assert {"x1", "x2", "timestamp", "keys"} <= set(data.columns) and len(data) == 10
    assert datetime.datetime.fromisoformat(data["timestamp"].iloc[0]) == stamp


# test-Rush.R: "pushing multiple tasks with extras to the queue works" (one extra for every task)
def test_one_extra_is_recycled_to_every_task(rush):
    rush.push_tasks([{"x1": 1, "x2": 2}] * 3, [{"tag": "shared"}])
    assert rush.fetch_queued_tasks()["tag"].tolist() == ["shared"] * 3


# test-Rush.R: "fetching tasks with vector parameters works"
def test_vector_parameters_round_trip(rush):
    rush.push_finished_tasks([{"x1": [1, 2, 3], "x2": [4, 5, 6]}, {"x1": [7, 8, 9], "x2": [10, 11, 12]}],
                             [{"y": 1}, {"y": 2}])
    data = rush.fetch_finished_tasks()
    assert len(data) == 2 and data["x1"].tolist() == [[1, 2, 3], [7, 8, 9]]
    assert len(rush.fetch_tasks()) == 2


# test-Rush.R: "fetching tasks with missing hashes works"
def test_fetching_skips_tasks_whose_hash_is_gone(rush):
    keys = rush.push_tasks([{"x1": 1, "x2": 2}, {"x1": 3, "x2": 4}, {"x1": 5, "x2": 6}])
    rush.connector.delete(rush.keys.task(keys[1]))
    assert set(rush.fetch_queued_tasks()["keys"]) == {keys[0], keys[2]}
    assert set(rush.fetch_tasks()["keys"]) == {keys[0], keys[2]}
    for k in keys:
        rush.connector.delete(rush.keys.task(k))
    assert rush.fetch_queued_tasks().empty and rush.fetch_tasks().empty


# test-Rush.R: "empty queue works"
def test_empty_queue(rush):
    rush.start_local_workers(idle_loop, n_workers=1, **HB)  # a worker that never pops
    keys = rush.push_tasks([{"x1": 1, "x2": 2}])
    assert rush.n_queued_tasks == len(keys)
    assert rush.empty_queue() == 1
    assert rush.fetch_queued_tasks().empty and len(rush.fetch_failed_tasks()) == 1
    keys = rush.push_tasks([{"x1": 2, "x2": 2}, {"x1": 3, "x2": 2}])
    assert rush.n_queued_tasks == len(keys)
    rush.empty_queue()
    assert rush.fetch_queued_tasks().empty and len(rush.fetch_failed_tasks()) == 3
    assert set(rush.fetch_failed_tasks()["condition"]) == {"Removed from queue"}


# test-Rush.R: "empty queue on an empty queue does not leak a hash"
def test_emptying_an_empty_queue_writes_nothing(rush):
    before = network_keys(rush)
    assert rush.empty_queue() == 0
    assert network_keys(rush) == before


# ---------------------------------------------------------------------------------------- lost workers

def _two_crashed(rush, lost):
    assert sorted(lost) == sorted(rush.lost_worker_ids) and len(lost) == 2
    data = rush.fetch_failed_tasks()
    assert len(data) == 2
    # deliberate difference: the worker is "lost", and the condition names it and the cause
    assert all("was lost" in c or "lost" in c for c in data["condition"])


# test-Rush.R: "segfaults on mirai workers are detected"
def test_crashed_workers_are_detected(config):
    with planned_manager(config, worker_type="local", **HB) as rush:
        rush.start_workers(crash_loop, n_workers=2)
        _two_crashed(rush, _collect_lost(rush, 2, 30))


# test-Rush.R: "segfaults on processx workers are detected"
def test_crashed_local_workers_are_detected(rush):
    rush.start_local_workers(crash_loop, n_workers=2, **HB)
    lost = _collect_lost(rush, 2, 30)
    _two_crashed(rush, lost)
    assert all("process ended" in c for c in rush.fetch_failed_tasks()["condition"])


# test-Rush.R: "a segfault on a single worker is detected via heartbeat"
def test_a_crashed_script_worker_is_found_by_its_heartbeat(rush, tmp_path):
    script = rush.worker_script(crash_loop, heartbeat_period=0.5, heartbeat_expire=2)
    with script_workers(script, 1, tmp_path):
        rush.wait_for_workers(1, timeout=START)
        assert rush.terminated_worker_ids == [] and rush.lost_worker_ids == []
        lost = _collect_lost(rush, 1, 30)
        assert rush.lost_worker_ids == lost
        assert len(rush.fetch_failed_tasks()) == 1
        assert "heartbeat" in rush.fetch_failed_tasks()["condition"].iloc[0]


# test-Rush.R: "a task lost in the pending state is recovered"
def test_a_pending_task_of_a_lost_worker_goes_back_to_the_queue(rush):
    [key] = rush.push_tasks([{"x1": 1, "x2": 2}])
    assert rush.queued_tasks == [key]
    rush.start_local_workers(idle_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    [wid] = rush.worker_ids
    # a worker that moved the task into its pending list and died before claiming it
    rush.connector.lmove(rush.keys.queued, rush.keys.pending(wid), "RIGHT", "LEFT")
    assert rush.running_tasks == []
    os.kill(_pids(rush)[wid], signal.SIGKILL)
    _collect_lost(rush, 1)
    # deliberate difference: never started, so it is queued again, no retry used (R fails it)
    assert rush.queued_tasks == [key] and rush.running_tasks == [] and rush.failed_tasks == []
    assert rush.connector.llen(rush.keys.pending(wid)) == 0


# test-Rush.R: "detect_lost_workers only returns workers it actually detected as lost"
def test_a_worker_that_ended_cleanly_is_not_reported_lost(rush):
    rush.start_local_workers(idle_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    [wid] = rush.worker_ids
    pid = _pids(rush)[wid]
    rush.stop_workers(type="terminate")
    wait_until(lambda: not alive(pid) and wid in rush.terminated_worker_ids, 20, what="a clean end")
    assert rush.detect_lost_workers() == []
    assert rush.lost_worker_ids == [] and rush.terminated_worker_ids == [wid]


# test-Rush.R: "segfaults on multiple workers are detected via the heartbeat"
def test_crashed_script_workers_are_found_by_their_heartbeats(rush, tmp_path):
    script = rush.worker_script(crash_loop, heartbeat_period=0.5, heartbeat_expire=2)
    with script_workers(script, 2, tmp_path):
        rush.wait_for_workers(2, timeout=START)
        assert rush.lost_worker_ids == []
        _two_crashed(rush, _collect_lost(rush, 2, 30))


# test-Rush.R: "wait for tasks works when a task gets lost"
def test_wait_for_tasks_ends_when_no_worker_is_left(rush):
    rush.start_local_workers(crash_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    keys = rush.push_tasks([{"x1": 1, "x2": 2}, {"x1": 0, "x2": 2}])
    t0 = time.monotonic()
    try:
        rush.wait_for_tasks(keys, timeout=8)
    except RushWorkerError:
        pass  # naming the lost worker is as good as returning
    assert time.monotonic() - t0 < 6


# ---------------------------------------------------------------------------------------- logging

def _log_loop(rush):
    import logging

    lg = logging.getLogger("rushhpc.conformance")
    while not rush.terminated:
        task = rush.pop_task(timeout=0.2)
        if task:
            lg.debug("evaluating %s", task["xs"])
            rush.finish_tasks([task["key"]], [{"y": task["xs"]["x1"] + task["xs"]["x2"]}])


# test-Rush.R: "saving lgr logs works"
def test_worker_logs_are_saved(rush):
    rush.start_local_workers(_log_loop, n_workers=1, log_thresholds={"rushhpc.conformance": "DEBUG"}, **HB)
    rush.wait_for_workers(1, timeout=START)
    keys = rush.push_tasks([{"x1": 2, "x2": 2}])
    rush.wait_for_tasks(keys, timeout=30)
    wait_until(lambda: len(rush.read_log()) >= 1, 20, what="a log record")
    log = rush.read_log()
    assert {"worker_id", "timestamp", "logger", "msg"} <= set(log.columns)
    assert str(log["timestamp"].dtype).startswith("datetime64")
    keys = rush.push_tasks([{"x1": 1, "x2": 2}, {"x1": 0, "x2": 2}, {"x1": 1, "x2": 2}])
    rush.wait_for_tasks(keys, timeout=30)
    wait_until(lambda: len(rush.read_log()) >= 4, 20, what="four log records")


# test-Rush.R: "saving lgr logs works" (read_log(time_difference = TRUE))
def test_read_log_with_time_differences(rush, worker):
    from rushhpc.network.logs import install

    installed = install(rush.connector, rush.keys.log, worker.worker_id, {"conformance.td": "INFO"})
    try:
        logging.getLogger("conformance.td").info("one")
        logging.getLogger("conformance.td").info("two")
    finally:
        for lg, h in installed:
            lg.removeHandler(h)
    log = rush.read_log(time_difference=True)
    assert "time_difference" in log.columns


# test-Rush.R: "saving logs with redis appender works"
def test_log_columns(rush):
    rush.start_local_workers(_log_loop, n_workers=1, log_thresholds={"rushhpc.conformance": "DEBUG"}, **HB)
    rush.wait_for_workers(1, timeout=START)
    rush.wait_for_tasks(rush.push_tasks([{"x1": 1, "x2": 1}]), timeout=30)
    wait_until(lambda: len(rush.read_log()) >= 1, 20, what="a log record")
    # deliberate difference: no caller column (R: the calling function)
    assert list(rush.read_log().columns) == ["worker_id", "level", "timestamp", "logger", "msg"]


def _print_loop(rush):
    import sys

    print(f"output of {rush.worker_id}", flush=True)
    print(f"message of {rush.worker_id}", file=sys.stderr, flush=True)


# test-Rush.R: "error and output logs work"
def test_worker_stdout_and_stderr_are_kept(rush):
    [wid] = rush.start_local_workers(_print_loop, n_workers=1, **HB)
    wait_until(lambda: wid in rush.terminated_worker_ids, START, what="the worker to end")
    folder = rush.run_dir / "workers"
    # deliberate difference: always kept, one file each per worker (R: only with message_log / output_log)
    assert f"output of {wid}" in (folder / f"{wid}.out").read_text()
    assert f"message of {wid}" in (folder / f"{wid}.err").read_text()


# ---------------------------------------------------------------------------------------- misc

# test-Rush.R: "caching results works"
def test_finished_tasks_are_cached(rush):
    rush.start_local_workers(queue_loop, n_workers=2, fun=add, **HB)
    rush.wait_for_workers(2, timeout=START)
    rush.wait_for_tasks(rush.push_tasks([{"x1": 1, "x2": 2}] * 10), timeout=30)
    first = rush.fetch_finished_tasks()
    assert len(first) == 10
    assert rush.fetch_finished_tasks()["keys"].tolist() == first["keys"].tolist()
    rush.wait_for_tasks(rush.push_tasks([{"x1": 1, "x2": 2}] * 10), timeout=30)
    data = rush.fetch_finished_tasks()
    assert len(data) == 20 and data["keys"].tolist()[:10] == first["keys"].tolist()


# test-Rush.R: "caching results with missing hashes works"
def test_the_cache_skips_tasks_whose_hash_is_gone(rush):
    keys = rush.push_finished_tasks([{"x1": 1, "x2": 2}, {"x1": 3, "x2": 4}, {"x1": 5, "x2": 6}],
                                    [{"y": 3}, {"y": 7}, {"y": 11}])
    assert len(rush.fetch_finished_tasks()) == 3
    keys2 = rush.push_finished_tasks([{"x1": 7, "x2": 8}, {"x1": 9, "x2": 10}], [{"y": 15}, {"y": 19}])
    rush.connector.delete(rush.keys.task(keys2[0]))
    data = rush.fetch_finished_tasks()
    assert sorted(data["keys"]) == sorted([*keys, keys2[1]])
    assert sorted(rush.fetch_finished_tasks()["keys"]) == sorted([*keys, keys2[1]])  # no duplicates
    rush.push_finished_tasks([{"x1": 11, "x2": 12}], [{"y": 23}])
    assert len(rush.fetch_finished_tasks()) == 5
    rush.reset_cache()
    assert len(rush.fetch_finished_tasks()) == 5


# test-Rush.R: "fetching new tasks with missing hashes works"
def test_fetch_new_tasks_skips_tasks_whose_hash_is_gone(rush):
    rush.push_finished_tasks([{"x1": 1, "x2": 2}], [{"y": 3}])
    assert len(rush.fetch_new_tasks()) == 1
    keys2 = rush.push_finished_tasks([{"x1": 3, "x2": 4}, {"x1": 5, "x2": 6}], [{"y": 7}, {"y": 11}])
    rush.connector.delete(rush.keys.task(keys2[0]))
    assert rush.fetch_new_tasks()["keys"].tolist() == [keys2[1]]
    assert rush.fetch_new_tasks(timeout=0.2).empty
    keys3 = rush.push_finished_tasks([{"x1": 7, "x2": 8}], [{"y": 15}])
    assert rush.fetch_new_tasks(timeout=1)["keys"].tolist() == keys3


# test-Rush.R: "reconnecting rush instance works"
def test_reconnecting_a_manager(rush):
    old = rush.connector
    rush.reconnect()
    assert rush.connector is not old and rush.n_tasks == 0
    # deliberate difference: a manager is not pickled (R: saveRDS); a new one attaches by id
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle says, it must not pass silently
        pickle.dumps(rush)
    again = Rush.attach(rush.network_id, config=rush.config)
    try:
        assert again.network_id == rush.network_id and again.n_tasks == 0
    finally:
        again.close()


def _length_loop(rush, large_vector):
    keys = rush.push_running_tasks([{"x1": 1, "x2": len(large_vector)}])
    rush.finish_tasks(keys, [{"y": 0}])


# test-Rush.R: "large objects limit works"
def test_large_start_arguments_need_a_large_objects_path(config, tmp_path):
    large = list(range(200_000))
    with planned_manager(config, n_workers=1, max_object_size=100_000, **HB) as rush:
        with pytest.raises(RushPayloadError, match="large_objects_path"):
            rush.start_workers(_length_loop, large_vector=large)
        assert rush.n_workers == 0
    with planned_manager(config, n_workers=1, max_object_size=100_000, large_objects_path=tmp_path / "large",
                         **HB) as rush:
        rush.start_workers(_length_loop, large_vector=large)
        rush.wait_for_workers(1, timeout=START)
        wait_until(lambda: rush.n_tasks > 0, 30, what="the worker's task")
        assert rush.fetch_tasks()["x2"].tolist() == [200_000]


# test-Rush.R: "worker_loop environment is stripped before serialization"
def test_a_loop_does_not_carry_its_enclosing_data(rush):
    def make():
        large_data = os.urandom(4_000_000)  # noqa: F841 - beside the loop, not used by it

        def loop(rush):
            rush.push_running_tasks([{"x1": 1, "x2": 2}])

        return loop

    rush.worker_script(make())  # stores the start arguments, starts nothing
    [key] = [k for k in network_keys(rush) if ":start:" in k]
    assert rush.connector.strlen(key) < 1_000_000


# test-Rush.R: "simple errors are pushed as failed tasks"
def test_failed_tasks_from_a_loop(rush):
    rush.start_local_workers(fail_small_loop, n_workers=1, **HB)
    rush.wait_for_workers(1, timeout=START)
    keys = rush.push_tasks([{"x1": 1, "x2": 2}, {"x1": 0, "x2": 2}])
    rush.wait_for_tasks(keys, timeout=30)
    assert (rush.n_tasks, rush.n_queued_tasks, rush.n_running_tasks, rush.n_finished_tasks, rush.n_failed_tasks) \
        == (2, 0, 0, 1, 1)
    assert len(rush.tasks_with_state()["finished"]) == 1 and len(rush.failed_tasks) == 1
    assert rush.queued_tasks == [] and rush.running_tasks == []
    assert rush.fetch_queued_tasks().empty and rush.fetch_running_tasks().empty and len(rush.fetch_tasks()) == 2
    data = rush.fetch_finished_tasks()
    assert {"x1", "x2", "worker_id", "y", "keys"} <= set(data.columns) and len(data) == 1
    data = rush.fetch_failed_tasks()
    assert {"x1", "x2", "worker_id", "condition", "keys"} <= set(data.columns) and len(data) == 1
    assert data["condition"].tolist() == ["Test error"]


"""Issue 20 ("Trust"), the core's defects: each test names the defect it covers and failed on 253e4df."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
import uuid

import cloudpickle
import pytest
from support import wait_until

import rushhpc
from rushhpc import Network, RushConfigError, RushTimeoutError, RushWorker, RushWorkerError, queue_loop
from rushhpc.core.spec import WorkerSpec
from rushhpc.errors import RushNetworkLostError, RushPayloadError
from rushhpc.worker.main import run_worker

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.5, "heartbeat_expire": 2}


def raising_loop(rush):
    raise ValueError("the loop broke at once")


def absolute(x):
    return abs(x)


def short_loop(rush):
    """Registers, runs one task of its own and returns (the worker ends terminated, exit code 0)."""
    keys = rush.push_running_tasks([{"x": 1}])
    rush.finish_tasks(keys, [{"y": 1}])


# ---------------------------------------------------------------- defect 2
def test_hand_built_worker_creates_its_network(config):
    # issue 20 defect 2: RushWorker(network_id, config=url) on a network no manager made yet works, like RushWorker$new
    nid = "hand-" + uuid.uuid4().hex[:8]
    w = RushWorker(nid, config=config)
    try:
        keys = w.push_running_tasks([{"x": 2}])
        w.finish_tasks(keys, [{"y": 4}])
        net = Network.open(nid, config)  # a network like any other: listed, opened, fetched
        assert net.fetch_finished_tasks()["y"].tolist() == [4]
        assert net.running_worker_ids == [w.worker_id]
    finally:
        w.close()
        Network(nid, config).delete()


def test_launched_worker_of_a_reset_network_is_still_refused(rush, config):
    # issue 20 defect 2 (the other half): a *launched* worker (run_worker) whose network was reset is refused
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    start_id = rush.record(ids[0]).start_id
    creds, key = str(rush.credentials_file()), str(rush.signing_key_file())
    rush.connector.delete(rush.keys.meta)  # the network is gone, its start blob still readable
    spec = WorkerSpec(rush.network_id, start_id, credentials=creds, signing_key=key, launcher="local")
    with pytest.raises(RushConfigError, match="does not exist"):
        run_worker(spec)
    assert not rush.exists()
    rush.create()


# ---------------------------------------------------------------- defect 3
def test_reuse_after_reset_does_not_blame_the_old_workers(rush):
    # issue 20 defect 3: terminate, reset, start again: wait_for_workers must not name a worker of the first batch
    first = rush.start_local_workers(queue_loop, n_workers=2, fun=absolute, **HB)
    rush.wait_for_workers(worker_ids=first, timeout=60)
    assert sorted(rush.stop_workers(type="terminate")) == sorted(first)
    wait_until(lambda: sorted(rush.terminated_worker_ids) == sorted(first), 60, what="first batch to terminate")
    rush.reset()  # at once: their processes are still ending
    second = rush.start_local_workers(queue_loop, n_workers=2, fun=abs, **HB)
    rush.wait_for_workers(2, timeout=60)
    assert set(rush.running_worker_ids) == set(second)


# ---------------------------------------------------------------- defect 5a
def test_a_manager_works_after_its_own_reset(rush):
    # issue 20 defect 5a: after its own reset the manager works again, and a wait that times out says timeout
    rush.push_tasks([{"x": 0}])
    rush.reset()
    keys = rush.push_tasks([{"x": 1}])
    with pytest.raises(RushTimeoutError, match="still not finished after 2 s"):
        rush.wait_for_tasks(keys, timeout=2)
    assert rush.exists() and rush.n_queued_tasks == 1


def test_waiting_for_tasks_this_manager_reset_names_the_reset(rush):
    # issue 20 defect 5a: tasks deleted by this manager's own reset() are not blamed on a Redis restart
    keys = rush.push_tasks([{"x": 1}])
    rush.reset()
    with pytest.raises(RushNetworkLostError, match=r"this manager's reset\(\)") as e:
        rush.wait_for_tasks(keys, timeout=2)
    assert "restarted" not in str(e.value)
    assert rush.detect_lost_workers() == []  # nothing to detect on a network this manager deleted


def test_another_managers_reset_is_still_reported(rush, config):
    # issue 20 defect 5a: the old diagnosis stays for a reset this manager did not do
    keys = rush.push_tasks([{"x": 1}])
    rushhpc.Rush.attach(rush.network_id, config=config).reset()
    with pytest.raises(RushNetworkLostError, match="reset by another manager"):
        rush.wait_for_tasks(keys, timeout=5)


# ---------------------------------------------------------------- defect 5b
def test_a_misspelt_loop_argument_is_refused_before_any_worker_starts(rush):
    # issue 20 defect 5b: start_local_workers(queue_loop, fnu=abs) fails at once, naming the argument
    with pytest.raises(TypeError, match=r"queue_loop\(\) got an unexpected keyword argument 'fnu'") as e:
        rush.start_local_workers(queue_loop, n_workers=1, fnu=abs)
    assert "fun" in str(e.value)  # names what the loop takes
    with pytest.raises(TypeError, match="missing a required argument: 'fun'"):
        rush.start_local_workers(queue_loop, n_workers=1)
    assert rush.n_workers == 0 and rush.records() == {}
    assert list(rush.connector.scan_iter(match=rush.keys.start("*"))) == []


def test_waits_raise_at_once_when_every_worker_failed(rush):
    # issue 20 defect 5b: a loop that raises at once: the waits raise RushWorkerError naming the failure, no timeout
    ids = rush.start_local_workers(raising_loop, n_workers=2, **HB)
    keys = rush.push_tasks([{"x": 1}])
    t0 = time.monotonic()
    with pytest.raises(RushWorkerError, match="the loop broke at once"):
        rush.wait_for_tasks(keys, timeout=120)
    assert time.monotonic() - t0 < 60
    wait_until(lambda: sorted(rush.failed_worker_ids) == sorted(ids), 60, what="both workers to fail")
    t0 = time.monotonic()
    with pytest.raises(RushWorkerError, match=r"failed.*ValueError: the loop broke at once"):
        rush.wait_for_workers(2, timeout=120)
    with pytest.raises(RushWorkerError, match="the loop broke at once"):
        rush.wait_for_workers(worker_ids=ids, timeout=120)
    assert time.monotonic() - t0 < 10


def crash_loop(rush):
    os._exit(9)  # the process ends without a word: the worker is lost, not failed


def test_wait_for_tasks_raises_when_every_worker_crashed(rush):
    # issue 20 defect 5b (its sibling, rush's "wait for tasks works when a task gets lost"): crashed workers too
    ids = rush.start_local_workers(crash_loop, n_workers=1, **HB)
    keys = rush.push_tasks([{"x": 1}], max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(RushWorkerError, match=rf"lost, the first {ids[0]} \(lost\)"):
        rush.wait_for_tasks(keys, timeout=120)
    assert time.monotonic() - t0 < 60


def test_a_monitor_that_replaces_lost_workers_keeps_the_wait_going(rush):
    # issue 20 defect 5b: no error while the monitor's replacements can still run the tasks
    rush.start_local_workers(crash_loop, n_workers=1, **HB)
    rush.start_monitor(interval=0.2, keep_workers=True, restart_budget=2)
    keys = rush.push_tasks([{"x": 1}])
    with pytest.raises(RushWorkerError, match="lost"):  # the budget spent, the last crash ends the wait
        rush.wait_for_tasks(keys, timeout=120)
    assert len(rush.monitor.replacements) == 2 and len(rush.lost_worker_ids) == 3
    rush.stop_monitor()


# ---------------------------------------------------------------- defect 5c
def test_stopping_an_unknown_worker_id_is_an_error(rush):
    # issue 20 defect 5c: stop_workers(worker_ids="w-doesnotexist") names the known ids instead of returning []
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    with pytest.raises(RushConfigError, match="no worker w-doesnotexist in network") as e:
        rush.stop_workers(worker_ids="w-doesnotexist")
    assert ids[0] in str(e.value) and "worker_info" in str(e.value)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    assert rush.stop_workers(worker_ids=ids) == ids  # known ids still work


# ---------------------------------------------------------------- defect 5d
def test_non_finite_floats_round_trip(rush, worker):
    # issue 20 defect 5d: NaN and the infinities come back as themselves, not as null/None
    xs = {"a": float("nan"), "b": float("inf"), "c": -math.inf, "d": [1.5, float("nan")], "e": 2.0}
    keys = rush.push_tasks([xs, {"a": 1.0, "b": 2.0, "c": 3.0, "d": [], "e": None}])
    task = worker.pop_task(timeout=1)
    assert task["key"] == keys[0]
    got = task["xs"]
    assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == -math.inf and math.isnan(got["d"][1])
    worker.finish_tasks([task["key"]], [{"y": float("-inf"), "z": float("nan")}])
    row = rush.fetch_task(keys[0])
    assert row["y"] == -math.inf and math.isnan(row["z"]) and row["b"] == math.inf
    df = rush.fetch_finished_tasks()
    assert df["y"].tolist() == [-math.inf] and df["b"].tolist() == [math.inf]
    # readable by any JSON reader that knows Python's tokens, and still plain JSON without them
    stored = rush.connector.hget(rush.keys.task(keys[0]), "xs")
    assert "Infinity" in stored and "NaN" in stored
    assert rush.connector.hget(rush.keys.task(keys[1]), "xs") == '{"a":1.0,"b":2.0,"c":3.0,"d":[],"e":null}'


def test_a_set_in_task_data_is_refused_naming_the_key(rush):
    # issue 20 defect 5d: a set is not silently stored as a list: a TypeError naming the key and the fix
    with pytest.raises(TypeError, match=r"xs\['tags'\] is a set.*sorted\(") as e:
        rush.push_tasks([{"x": 1, "tags": {"a", "b"}}])
    assert isinstance(e.value, RushPayloadError)
    with pytest.raises(TypeError, match=r"ys\['info'\]\['seen'\] is a frozenset"):
        rush.push_finished_tasks([{"x": 1}], [{"y": 1, "info": {"seen": frozenset([1])}}])
    assert rush.n_tasks == 0
    keys = rush.push_tasks([{"x": (1, 2)}])  # tuples are sequences: stored as lists, documented
    assert rush.fetch_task(keys[0])["x"] == [1, 2]


# ---------------------------------------------------------------- defect 7
def test_reset_removes_the_run_directory(rush):
    # issue 20 defect 7: reset() removes what the network made in ~/.rushhpc/runs/<network>/
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    run_dir = rush.run_dir
    assert (run_dir / "credentials.json").exists() and (run_dir / "signing.key").exists()
    assert (run_dir / "workers" / f"{ids[0]}.err").exists()
    rush.reset()
    assert not run_dir.exists()
    # the manager works again after the reset: new key and credentials files
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=absolute, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    keys = rush.push_tasks([{"x": -3}])
    rush.wait_for_tasks(keys, timeout=60)
    assert rush.fetch_finished_tasks()["y"].tolist() == [3]


def test_reset_keeps_worker_logs_when_asked(rush):
    # issue 20 defect 7: worker logs stay only when asked (reset(keep_logs=True)); secrets go in any case
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    run_dir = rush.run_dir
    rush.reset(keep_logs=True)
    assert (run_dir / "workers" / f"{ids[0]}.err").exists()
    assert not (run_dir / "credentials.json").exists() and not (run_dir / "signing.key").exists()


def test_reset_leaves_files_it_did_not_make(rush, tmp_path):
    # issue 20 defect 7: only rushhpc's own files go; a user's file in the run directory stays
    rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    mine = rush.run_dir / "notes.txt"
    mine.write_text("keep me")
    rush.reset()
    assert mine.read_text() == "keep me"
    assert sorted(p.name for p in rush.run_dir.iterdir()) == ["notes.txt"]


def test_the_end_of_an_embedded_redis_removes_its_run_directories(tmp_path):
    # issue 20 defect 7: a session on the private embedded Redis leaves no run folder (credentials of a dead server)
    runs = tmp_path / "runs"
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent("""
        import sys
        import rushhpc
        from rushhpc import queue_loop
        from rushhpc.server import embedded
        rush = rushhpc.rsh()
        ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs, heartbeat_period=0.5, heartbeat_expire=2)
        rush.wait_for_workers(worker_ids=ids, timeout=60)
        keys = rush.push_tasks([{"x": -2}])
        rush.wait_for_tasks(keys, timeout=60)
        print(rush.run_dir, embedded._SERVER.dir, flush=True)
        # no reset: the process ends, and with it the embedded Redis
    """))
    env = {**os.environ, "RUSHHPC_RUN_DIR": str(runs)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    run_dir, server_dir = out.stdout.split()
    assert run_dir.startswith(str(runs))
    assert not os.path.exists(run_dir), os.listdir(run_dir)
    assert not os.path.exists(server_dir)


# ---------------------------------------------------------------- conformance gaps (rush's behaviour)
def test_fetch_new_tasks_after_a_deleted_hash_caches_no_duplicate(rush):
    # issue 20 conformance (rush's "caching results with missing hashes"): the cache's offset counts list entries
    # read, not rows kept, so fetch_new_tasks after a deleted hash read the entry after it again into the cache
    [k1] = rush.push_finished_tasks([{"x": 1}], [{"y": 1}])
    assert rush.fetch_new_tasks()["keys"].tolist() == [k1]
    k2 = rush.push_finished_tasks([{"x": 2}, {"x": 3}], [{"y": 2}, {"y": 3}])
    rush.connector.delete(rush.keys.task(k2[0]))
    assert rush.fetch_new_tasks()["keys"].tolist() == [k2[1]]
    [k3] = rush.push_finished_tasks([{"x": 4}], [{"y": 4}])
    assert rush.fetch_new_tasks()["keys"].tolist() == [k3]
    assert rush.fetch_finished_tasks()["keys"].tolist() == [k1, k2[1], k3]
    assert rush.fetch_new_tasks().empty


def test_a_single_extra_is_recycled_and_other_lengths_name_both(rush, worker):
    # issue 20 conformance (rush's write_hashes broadcast): a one-element extra goes to every task; other lengths fail
    rush.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}, {"y": 2}], yss_extra=[{"note": "design"}])
    assert rush.fetch_finished_tasks()["note"].tolist() == ["design"] * 2
    rush.push_tasks([{"x": 1}, {"x": 2}], [{"tag": "a"}], expected_duration=60)
    queued = rush.fetch_queued_tasks()
    assert queued["tag"].tolist() == ["a", "a"] and queued["expected_duration"].tolist() == [60.0, 60.0]
    with pytest.raises(RushPayloadError, match=r"xss_extra has 2 elements, expected 3 \(one per task\) or 1"):
        rush.push_tasks([{"x": 1}] * 3, [{"tag": "a"}, {"tag": "b"}])
    keys = worker.push_running_tasks([{"x": 1}, {"x": 2}], [{"src": "worker"}])
    worker.finish_tasks(keys, [{"y": 1}, {"y": 2}], [{"note": "same"}])
    assert rush.fetch_finished_tasks()[["src", "note"]].values.tolist()[-2:] == [["worker", "same"]] * 2
    # results are one per task: a single result for several tasks is refused (a deliberate difference)
    keys = worker.push_running_tasks([{"x": 1}, {"x": 2}])
    with pytest.raises(RushPayloadError, match=r"yss has 1 elements, expected 2 \(one per task\);"):
        worker.finish_tasks(keys, [{"y": 0}])


def test_task_state_checks_on_the_manager(rush, worker):
    # issue 20 conformance (rush's is_running_task / is_failed_task): on the manager too; an unknown key is False
    keys = rush.push_tasks([{"x": 1}, {"x": 2}])
    task = worker.pop_task()
    assert rush.is_running_task([*keys, "no-such-key"]) == [k == task["key"] for k in keys] + [False]
    assert rush.is_running_task([]) == [] and rush.is_failed_task([]) == []
    worker.fail_tasks(task["key"], ["boom"])
    assert rush.is_failed_task(keys) == [k == task["key"] for k in keys]
    assert rush.is_running_task(task["key"]) == [False]


def test_read_log_time_differences_per_worker(rush, config):
    # issue 20 conformance (rush's read_log(time_difference = TRUE)): seconds since the same worker's previous record
    import logging

    from rushhpc.network.logs import install

    workers = [RushWorker(rush.network_id, config=config) for _ in range(2)]
    installed = []
    try:
        for w in workers:
            installed += install(rush.connector, rush.keys.log, w.worker_id, {f"trust.{w.worker_id}": "INFO"})
        for i in range(3):
            for w in workers:
                logging.getLogger(f"trust.{w.worker_id}").info("record %d", i)
            time.sleep(0.02)
        log = rush.read_log(time_difference=True)
        assert list(log.columns) == ["worker_id", "level", "timestamp", "logger", "msg", "time_difference"]
        for w in workers:
            mine = log[log["worker_id"] == w.worker_id]
            assert mine["time_difference"].iloc[0] == 0.0 and (mine["time_difference"].iloc[1:] >= 0.015).all()
        only = rush.read_log(worker_ids=workers[0].worker_id)
        assert set(only["worker_id"]) == {workers[0].worker_id} and len(only) == 3
        assert "time_difference" not in only.columns
        assert list(rush.read_log(worker_ids=["nobody"], time_difference=True).columns)[-1] == "time_difference"
    finally:
        for lg, h in installed:
            lg.removeHandler(h)
        for w in workers:
            w.close()


def test_wait_for_more_workers_than_ids_names_both_numbers(rush):
    # issue 20 conformance (rush's "wait for workers works with both n and worker ids"): refused at once, not a timeout
    t0 = time.monotonic()
    with pytest.raises(RushConfigError, match=r"n=3.*exceeds the 2 worker id\(s\)"):
        rush.wait_for_workers(n=3, worker_ids=["a", "b"], timeout=5)
    assert time.monotonic() - t0 < 1


def test_wait_for_n_of_the_listed_workers_survives_a_failed_one(rush):
    # issue 20 conformance (rush's n with worker_ids): n of the listed workers suffice, so one listed worker that
    # failed raises only when it leaves fewer than n that can still come
    [good] = rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    [bad] = rush.start_local_workers(raising_loop, n_workers=1, **HB)
    rush.wait_for_workers(n=1, worker_ids=[good, bad], timeout=60)
    wait_until(lambda: bad in rush.failed_worker_ids, 60, what="the raising worker to fail")
    rush.wait_for_workers(n=1, worker_ids=[good, bad], timeout=5)
    t0 = time.monotonic()
    with pytest.raises(RushWorkerError, match="the loop broke at once"):
        rush.wait_for_workers(n=2, worker_ids=[good, bad], timeout=30)
    assert time.monotonic() - t0 < 10

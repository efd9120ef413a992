"""Worker processes: local launch, heartbeats, stop, kill, lost-worker detection, script workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest
from conftest import wait_until

import rushhpc
from rushhpc import RushConfigError, RushPayloadError, RushWorkerError, queue_loop, rush_plan

# Workers cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.5, "heartbeat_expire": 2}


def branin(x1: float, x2: float) -> float:
    import math

    return (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def random_search_loop(rush, n_tasks: int = 40, delay: float = 0.01):
    """The rush vignette's loop: propose, evaluate, report, until enough tasks are finished."""
    import random

    while not rush.terminated and rush.n_finished_tasks < n_tasks:
        xs = {"x1": random.uniform(-5, 10), "x2": random.uniform(0, 15)}
        keys = rush.push_running_tasks([xs])
        time.sleep(delay)
        rush.finish_tasks(keys, [{"y": branin(**xs)}])


def sleepy_loop(rush, seconds: float = 60):
    """Holds one running task until terminated (checks every 50 ms)."""
    keys = rush.push_running_tasks([{"x": 1}])
    deadline = time.monotonic() + seconds
    while not rush.terminated and time.monotonic() < deadline:
        time.sleep(0.05)
    if rush.terminated:
        rush.finish_tasks(keys, [{"y": 1}])


def busy_loop(rush, seconds: float = 120):
    """A long evaluation that never looks at rush.terminated (only a real kill stops it)."""
    rush.push_running_tasks([{"x": 1}])
    time.sleep(seconds)


def suicide_loop(rush):
    rush.push_running_tasks([{"x": 1}])
    os.kill(os.getpid(), signal.SIGKILL)


def raising_loop(rush):
    rush.push_running_tasks([{"x": 1}])
    raise ValueError("the model diverged")


def logging_loop(rush):
    import logging

    logging.getLogger("rushhpc.user").info("hello from %s", rush.worker_id)
    logging.getLogger("rushhpc.user").debug("not sent")
    logging.getLogger("other").warning("not captured")


def test_vignette_random_search_two_workers(rush):
    ids = rush.start_local_workers(random_search_loop, n_workers=2, n_tasks=60, **HB)
    assert len(ids) == 2
    rush.wait_for_workers(2, timeout=30)
    info = rush.worker_info
    assert set(info["worker_id"]) == set(ids)
    assert info["heartbeat"].all() and info["pid"].notna().all() and info["heartbeat_pid"].notna().all()
    wait_until(lambda: set(rush.terminated_worker_ids) == set(ids), 60, what="both workers to end")
    df = rush.fetch_finished_tasks()
    assert len(df) >= 60
    assert set(df["worker_id"]) == set(ids)  # both workers contributed
    assert {"x1", "x2", "y", "keys", "worker_id"} <= set(df.columns)
    assert rush.n_running_tasks == 0 and rush.n_failed_tasks == 0
    assert rush.worker_info["reason"].tolist() == ["loop returned"] * 2


def test_queue_loop_with_local_workers(rush):
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x * x}, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(50)])
    rush.wait_for_tasks(keys, timeout=30)
    df = rush.fetch_finished_tasks()
    assert sorted(df["y"]) == sorted(i * i for i in range(50))
    # terminate: each worker ends after its current task
    assert sorted(rush.stop_workers(type="terminate")) == sorted(ids)
    wait_until(lambda: sorted(rush.terminated_worker_ids) == sorted(ids), 20, what="terminated workers")
    procs = rush._launchers["local"].processes
    wait_until(lambda: all(p.poll() is not None for p in procs.values()), 10, what="processes to exit")
    assert all(p.returncode == 0 for p in procs.values())


def test_failing_objective_fails_task_not_worker(rush):
    def fun(x):
        if x == 2:
            raise RuntimeError("x=2 is invalid")
        return {"y": x}

    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=fun, **HB)
    keys = rush.push_tasks([{"x": i} for i in range(4)])
    rush.wait_for_tasks(keys, timeout=30)
    failed = rush.fetch_failed_tasks()
    assert len(failed) == 1 and "x=2 is invalid" in failed["condition"].item()
    assert rush.n_finished_tasks == 3 and rush.running_worker_ids == ids


def test_stop_one_worker_by_id(rush):
    ids = rush.start_local_workers(sleepy_loop, n_workers=2, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: rush.n_running_tasks == 2, 20, what="two running tasks")
    assert rush.stop_workers(type="kill", worker_ids=[ids[0]]) == [ids[0]]
    # marked and its task failed before stop_workers returned
    assert rush.killed_worker_ids == [ids[0]] and rush.running_worker_ids == [ids[1]]
    failed = rush.fetch_failed_tasks()
    assert failed["condition"].tolist() == ["worker was killed"] and failed["worker_id"].tolist() == [ids[0]]
    proc = rush._launchers["local"].processes[ids[0]]
    assert proc.poll() is not None
    assert rush._launchers["local"].processes[ids[1]].poll() is None
    # the heartbeat of the killed worker is gone too
    hb_pid = None
    info = rush.worker_info.set_index("worker_id")
    hb_pid = int(info.loc[ids[0], "heartbeat_pid"])
    wait_until(lambda: not _pid_running(hb_pid), 10, what="heartbeat process to exit")


def _pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_that_dies_is_found_by_detect_lost_workers(rush):
    ids = rush.start_local_workers(suicide_loop, n_workers=1, **HB)
    proc = rush._launchers["local"].processes[ids[0]]
    wait_until(lambda: proc.poll() is not None, 30, what="worker to kill itself")
    assert rush.detect_lost_workers() == ids
    assert rush.lost_worker_ids == ids
    failed = rush.fetch_failed_tasks()
    assert len(failed) == 1 and "lost" in failed["condition"].item()
    assert rush.worker_info["reason"].item() == "process_died"
    assert rush.detect_lost_workers() == []  # the verdict is given once


def test_heartbeat_expiry_detects_frozen_worker(rush):
    """SIGSTOP the worker and its heartbeat: only the heartbeat key's expiry tells."""
    ids = rush.start_local_workers(sleepy_loop, n_workers=1, heartbeat_period=0.3, heartbeat_expire=1.5)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: rush.n_running_tasks == 1, 20, what="running task")
    info = rush.worker_info.iloc[0]
    pids = [int(info["pid"]), int(info["heartbeat_pid"])]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        lost = wait_until(lambda: rush.detect_lost_workers(), 10, interval=0.2, what="heartbeat to expire")
        assert lost == ids
        assert rush.worker_info["reason"].item() == "heartbeat_expired"
        assert rush.n_failed_tasks == 1
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    # resumed, the worker finds it was declared lost and exits; its late result is discarded
    proc = rush._launchers["local"].processes[ids[0]]
    wait_until(lambda: proc.poll() is not None, 10, what="resumed lost worker to exit")
    assert rush.n_finished_tasks == 0 and rush.lost_worker_ids == ids


def test_loop_that_raises_fails_the_worker(rush):
    ids = rush.start_local_workers(raising_loop, n_workers=1, **HB)
    wait_until(lambda: rush.failed_worker_ids == ids, 30, what="worker to fail")
    info = rush.worker_info.iloc[0]
    assert info["state"] == "failed" and "the model diverged" in info["reason"]
    failed = rush.fetch_failed_tasks()
    assert len(failed) == 1 and "ValueError: the model diverged" in failed["condition"].item()
    proc = rush._launchers["local"].processes[ids[0]]
    wait_until(lambda: proc.poll() is not None, 10, what="process exit")
    assert proc.returncode == 1
    assert "ValueError" in rush._launchers["local"].stderr_tail(ids[0])


def test_script_worker_killed_through_heartbeat(rush, tmp_path):
    cmd = rush.worker_script(busy_loop, heartbeat_period=0.3, heartbeat_expire=3)
    assert rush.config.password not in cmd
    assert "--credentials" in cmd
    creds = rush.run_dir / "credentials.json"
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    proc = subprocess.Popen(cmd, shell=True, start_new_session=True, stderr=open(tmp_path / "err", "w"))
    try:
        rush.wait_for_workers(1, timeout=30)
        wid = rush.worker_ids[0]
        info = rush.worker_info.iloc[0]
        assert info["launcher"] == "script" and info["hostname"] and info["pid"] > 0
        wait_until(lambda: rush.n_running_tasks == 1, 20, what="running task")
        assert rush.stop_workers(type="kill") == [wid]  # no process handle: the kill list
        proc.wait(15)
        assert proc.returncode == -signal.SIGKILL or proc.returncode == 128 + signal.SIGKILL
        assert rush.killed_worker_ids == [wid]
        assert rush.fetch_failed_tasks()["condition"].tolist() == ["worker was killed"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_worker_script_quoting_and_env_credentials(rush, tmp_path, monkeypatch):
    cmd = rush.worker_script(queue_loop, fun=abs, python="/opt/my python/bin/python3", credentials="env")
    assert cmd.startswith("'/opt/my python/bin/python3' -m rushhpc worker")
    assert "--credentials" not in cmd and rush.config.password not in cmd
    # runs with the URL from the environment
    cmd = rush.worker_script(queue_loop, fun=lambda x: {"y": abs(x)}, credentials="env", heartbeat_period=0.5, heartbeat_expire=3)
    env = dict(os.environ, RUSHHPC_REDIS_URL=rush.config.url())
    proc = subprocess.Popen(cmd, shell=True, env=env, start_new_session=True)
    try:
        rush.wait_for_workers(1, timeout=30)
        keys = rush.push_tasks([{"x": -3}])
        rush.wait_for_tasks(keys, timeout=20)
        assert rush.fetch_finished_tasks()["y"].tolist() == [3]
        rush.stop_workers(type="terminate")
        proc.wait(15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_worker_without_credentials_is_a_clear_error(rush):
    out = subprocess.run(
        [sys.executable, "-m", "rushhpc", "worker", "--network", rush.network_id, "--start-id", "x"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "RUSHHPC_REDIS_URL" in out.stderr and "Traceback" not in out.stderr


def test_log_capture(rush):
    rush.start_local_workers(logging_loop, n_workers=1, log_thresholds={"rushhpc": "INFO"}, **HB)
    wait_until(lambda: rush.terminated_worker_ids, 30, what="worker end")
    df = rush.read_log()
    assert df["msg"].str.startswith("hello from w-").sum() == 1
    assert not df["msg"].str.contains("not sent|not captured").any()
    assert df["level"].tolist() == ["INFO"] and df["logger"].tolist() == ["rushhpc.user"]


def test_print_log_prints_only_new(rush, worker, capsys):
    import logging

    from rushhpc.logs import install

    installed = install(rush.connector, rush.keys.log, worker.worker_id, {"rushhpc.t": "INFO"})
    try:
        logging.getLogger("rushhpc.t").info("first")
        rush.print_log()
        logging.getLogger("rushhpc.t").info("second")
        rush.print_log()
    finally:
        for lg, h in installed:
            lg.removeHandler(h)
    out = capsys.readouterr().out
    assert out.count("first") == 1 and out.count("second") == 1


def test_too_large_config(rush, tmp_path):
    big = b"x" * 200_000
    rush_plan(max_object_size=100_000)
    r = rushhpc.rsh(rush.network_id, config=rush.config)
    with pytest.raises(RushPayloadError, match="large_objects_path"):
        r.start_local_workers(queue_loop, n_workers=1, fun=len, data=big)
    assert r.n_workers == 0

    def loop(rush, data):
        rush.push_running_tasks([{"n": 1}])
        rush.finish_tasks(rush.running_tasks, [{"len": len(data)}])

    rush_plan(max_object_size=100_000, large_objects_path=tmp_path / "large")
    r = rushhpc.rsh(rush.network_id, config=rush.config)
    r.start_local_workers(loop, n_workers=1, data=big, **HB)
    wait_until(lambda: r.n_finished_tasks == 1, 30, what="worker to read the large object")
    assert r.fetch_finished_tasks()["len"].tolist() == [200_000]
    files = list((tmp_path / "large").iterdir())
    assert len(files) == 1 and oct(files[0].stat().st_mode & 0o777) == "0o600"
    r.close()


def test_unpicklable_argument_is_a_clear_error(rush):
    import threading

    with pytest.raises(RushPayloadError, match="cannot be pickled|inside the worker loop"):
        rush.start_local_workers(queue_loop, n_workers=1, fun=abs, lock=threading.Lock())
    assert rush.n_workers == 0


def test_missing_start_arguments(rush):
    with pytest.raises(RushConfigError, match="n_workers"):
        rush.start_local_workers(queue_loop, fun=abs)
    with pytest.raises(TypeError):
        rush.start_local_workers(n_workers=1)  # no worker loop
    with pytest.raises(RushConfigError, match="heartbeat_expire"):
        rush.start_local_workers(queue_loop, n_workers=1, fun=abs, heartbeat_period=10, heartbeat_expire=5)


def test_start_workers_uses_plan(rush):
    rush_plan(n_workers=2, config=rush.config, heartbeat_period=0.5, heartbeat_expire=2)
    r = rushhpc.rsh(rush.network_id)
    ids = r.start_workers(queue_loop, fun=abs)
    r.wait_for_workers(worker_ids=ids, timeout=30)
    assert len(ids) == 2 and set(r.running_worker_ids) == set(ids)
    assert r.worker_info["heartbeat"].all()
    r.close()


def test_wait_for_workers_times_out_with_a_clear_error(rush):
    rush_plan(config=rush.config)
    r = rushhpc.rsh(rush.network_id)
    ids = r.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    r.wait_for_workers(worker_ids=ids, timeout=60)  # a loaded machine may take seconds to start one
    with pytest.raises(rushhpc.RushTimeoutError, match="only 1 of 2 workers registered"):
        r.wait_for_workers(worker_ids=ids + ["w-doesnotexist"], timeout=2)
    r.close()


def test_worker_that_dies_before_registering_is_reported(rush, tmp_path, monkeypatch):
    missing = tmp_path / "no-such-dir" / "credentials.json"
    monkeypatch.setattr(rush, "credentials_file", lambda: missing)  # the worker cannot find Redis
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs, **HB)
    with pytest.raises(RushWorkerError, match="exited with code 2 before registering") as e:
        rush.wait_for_workers(worker_ids=ids, timeout=30)
    assert "cannot read the credentials file" in str(e.value)  # the tail of its stderr


def test_local_workers_die_with_their_manager(rush, tmp_path):
    script = tmp_path / "manager.py"
    script.write_text(textwrap.dedent(f"""
        import time, rushhpc
        from rushhpc import queue_loop
        r = rushhpc.rsh({rush.network_id!r}, config={rush.config.url()!r})
        r.start_local_workers(queue_loop, n_workers=2, fun=abs, heartbeat_period=0.5, heartbeat_expire=3)
        r.wait_for_workers(2, timeout=30)
        print("ready", flush=True)
        time.sleep(600)
    """))
    mgr = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert mgr.stdout.readline().strip() == "ready"
        pids = [int(p) for p in rush.worker_info["pid"]] + [int(p) for p in rush.worker_info["heartbeat_pid"]]
        assert all(_pid_running(p) for p in pids)
        mgr.kill()  # SIGKILL: no atexit, no cleanup code runs
        mgr.wait(10)
        wait_until(lambda: not any(_pid_running(p) for p in pids), 20, what="orphaned workers to exit")
    finally:
        if mgr.poll() is None:
            mgr.kill()


def test_reset_kills_workers_and_leaves_nothing(rush):
    ids = rush.start_local_workers(sleepy_loop, n_workers=2, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    procs = list(rush._launchers["local"].processes.values())
    rush.reset()
    assert all(p.poll() is not None for p in procs)
    assert list(rush.connector.scan_iter(match=rush.keys.pattern)) == []
    assert rush.n_workers == 0


def test_monitor_detects_and_replaces_lost_workers(rush):
    rush.start_local_workers(queue_loop, n_workers=1, fun=lambda x: {"y": x}, **HB)
    rush.wait_for_workers(1, timeout=30)
    victim = rush.worker_ids[0]
    rush.start_monitor(interval=0.2, keep_workers=True, restart_budget=1)
    os.kill(int(rush.worker_info["pid"].iloc[0]), signal.SIGKILL)
    wait_until(lambda: rush.lost_worker_ids == [victim], 20, what="monitor to find the lost worker")
    wait_until(lambda: len(rush.running_worker_ids) == 1, 30, what="a replacement worker")
    replacement = rush.running_worker_ids[0]
    assert replacement != victim and rush._monitor.replacements == [replacement]
    keys = rush.push_tasks([{"x": 7}])
    rush.wait_for_tasks(keys, timeout=20)
    assert rush.fetch_finished_tasks()["worker_id"].tolist() == [replacement]
    # the budget is spent: a second loss is detected but not replaced
    os.kill(int(rush.worker_info.set_index("worker_id").loc[replacement, "pid"]), signal.SIGKILL)
    wait_until(lambda: replacement in rush.lost_worker_ids, 20, what="second loss")
    assert rush.n_running_workers == 0
    rush.stop_monitor()
    assert rush._monitor is None


def test_stale_credentials_file_is_replaced(rush):
    """A credentials file left by an earlier run (another Redis) must not mislead new workers."""
    rush.run_dir.mkdir(parents=True, exist_ok=True)
    (rush.run_dir / "credentials.json").write_text('{"url": "redis://127.0.0.1:1/0"}')
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=lambda x: {"y": x}, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    assert oct((rush.run_dir / "credentials.json").stat().st_mode & 0o777) == "0o600"


def test_a_closed_manager_is_not_closed_again_at_exit(config):
    """The exit hook closes only managers still open: closing one again would ask a Redis that a
    script may have stopped by then (and wait for it through the retries)."""
    import uuid

    from rushhpc import rush as rush_mod

    r = rushhpc.Rush("t-" + uuid.uuid4().hex[:10], config=config)
    try:
        assert r in set(rush_mod._MANAGERS)
        r.close()
        assert r not in set(rush_mod._MANAGERS)
        ids = r.start_local_workers(queue_loop, n_workers=1, fun=lambda: {"y": 0})
        assert r in set(rush_mod._MANAGERS)  # it owns workers again: the exit hook kills them
        r.wait_for_workers(worker_ids=ids, timeout=60)
    finally:
        r.reset()
        r.close()


def test_a_launch_beyond_maxclients_is_refused_with_a_clear_message(rush):
    """The real server's maxclients, lowered for the test: the launch is refused before any
    worker starts, naming the limit and what to do."""
    before = rush.connector.config_get("maxclients")["maxclients"]
    connected = int(rush.connector.info("clients")["connected_clients"])
    rush.connector.config_set("maxclients", str(connected + 20))
    try:
        with pytest.raises(RushConfigError, match="maxclients") as e:
            rush.start_local_workers(rushhpc.queue_loop, n_workers=50, fun=lambda: {"y": 0})
        assert "150 more Redis connections" in str(e.value)
        assert rush.worker_ids == [] and rush.check_client_capacity(1) >= 0
    finally:
        rush.connector.config_set("maxclients", before)

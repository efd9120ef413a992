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
from support import wait_until

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
    procs = rush.launcher("local").processes
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
    proc = rush.launcher("local").processes[ids[0]]
    assert proc.poll() is not None
    assert rush.launcher("local").processes[ids[1]].poll() is None
    # the heartbeat of the killed worker is gone too
    hb_pid = None
    info = rush.worker_info.set_index("worker_id")
    hb_pid = int(info.loc[ids[0], "heartbeat_pid"])
    wait_until(lambda: not pid_running(hb_pid), 10, what="heartbeat process to exit")


def pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_that_dies_is_found_by_detect_lost_workers(rush):
    ids = rush.start_local_workers(suicide_loop, n_workers=1, **HB)
    proc = rush.launcher("local").processes[ids[0]]
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
    proc = rush.launcher("local").processes[ids[0]]
    wait_until(lambda: proc.poll() is not None, 10, what="resumed lost worker to exit")
    assert rush.n_finished_tasks == 0 and rush.lost_worker_ids == ids


def test_loop_that_raises_fails_the_worker(rush):
    ids = rush.start_local_workers(raising_loop, n_workers=1, **HB)
    wait_until(lambda: rush.failed_worker_ids == ids, 30, what="worker to fail")
    info = rush.worker_info.iloc[0]
    assert info["state"] == "failed" and "the model diverged" in info["reason"]
    failed = rush.fetch_failed_tasks()
    assert len(failed) == 1 and "ValueError: the model diverged" in failed["condition"].item()
    proc = rush.launcher("local").processes[ids[0]]
    wait_until(lambda: proc.poll() is not None, 10, what="process exit")
    assert proc.returncode == 1
    assert "ValueError" in rush.launcher("local").stderr_tail(ids[0])


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

    from rushhpc.network.logs import install

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

    def loop(rush, data):
        keys = rush.push_running_tasks([{"n": 1}])
        rush.finish_tasks(keys, [{"len": len(data)}])  # a worker has no key lists: it knows its own tasks

    rush_plan(max_object_size=100_000)
    r = rushhpc.rsh(rush.network_id, config=rush.config)
    with pytest.raises(RushPayloadError, match="large_objects_path"):
        # a loop that takes data=: arguments a loop does not take are refused first (issue 20 defect 5b)
        r.start_local_workers(loop, n_workers=1, data=big)
    assert r.n_workers == 0

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

    def locked_loop(rush, lock):  # takes lock=: arguments a loop does not take are refused first (issue 20 defect 5b)
        pass

    with pytest.raises(RushPayloadError, match="cannot be pickled|inside the worker loop"):
        rush.start_local_workers(locked_loop, n_workers=1, lock=threading.Lock())
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
    monkeypatch.setattr(rush.network, "credentials_file", lambda: missing)  # the worker cannot find Redis
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
        assert all(pid_running(p) for p in pids)
        mgr.kill()  # SIGKILL: no atexit, no cleanup code runs
        mgr.wait(10)
        wait_until(lambda: not any(pid_running(p) for p in pids), 20, what="orphaned workers to exit")
    finally:
        if mgr.poll() is None:
            mgr.kill()


def test_reset_kills_workers_and_leaves_nothing(rush):
    ids = rush.start_local_workers(sleepy_loop, n_workers=2, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    procs = list(rush.launcher("local").processes.values())
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
    assert replacement != victim and rush.monitor.replacements == [replacement]
    keys = rush.push_tasks([{"x": 7}])
    rush.wait_for_tasks(keys, timeout=20)
    assert rush.fetch_finished_tasks()["worker_id"].tolist() == [replacement]
    # the budget is spent: a second loss is detected but not replaced
    os.kill(int(rush.worker_info.set_index("worker_id").loc[replacement, "pid"]), signal.SIGKILL)
    wait_until(lambda: replacement in rush.lost_worker_ids, 20, what="second loss")
    assert rush.n_running_workers == 0
    rush.stop_monitor()
    assert rush.monitor is None


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

    from rushhpc.manager import rush as rush_mod

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


# ------------------------------------------------------------------ the heartbeat process (rushhpc/worker/beat.py)
def _modules_of(argv: list[str]) -> set[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_heartbeat_imports_only_the_standard_library():
    """Issue 12: no redis-py (asyncio through it), psutil, jinja2, yaml, nor a rushhpc module that
    would import them; no ssl without TLS. Checked as the heartbeat process starts it, and as a module."""
    from rushhpc.worker.heartbeat import beat_command

    argv = beat_command()
    assert argv[1:3] == ["-I", "-S"] and argv[-1].endswith("import beat; sys.exit(beat.main())")
    mods = _modules_of(argv[:-1] + [argv[-1].replace("sys.exit(beat.main())", "print(' '.join(sys.modules))")])
    assert "beat" in mods
    # issue 18: the worker states from core/states.py (loaded from its folder: it imports only enum) and
    # the heartbeat's defaults from defaults.py (constants): both standard library only
    assert {m for m in mods if m.split(".")[0] not in sys.stdlib_module_names} == {"__main__", "beat", "processes",
                                                                                  "defaults", "states"}
    assert not mods & {"ssl", "_ssl", "typing", "asyncio", "subprocess", "ctypes"}
    mods = _modules_of([sys.executable, "-c", "import sys, rushhpc.worker.beat; print(' '.join(sys.modules))"])
    expected = {"rushhpc", "rushhpc._version", "rushhpc.processes", "rushhpc.worker", "rushhpc.worker.beat",
                "rushhpc.defaults", "rushhpc.core", "rushhpc.core.states"}
    assert {m for m in mods if m.startswith("rushhpc")} == expected
    assert not {m for m in mods if m.split(".")[0] in ("redis", "psutil", "jinja2", "yaml", "pandas", "orjson",
                                                         "cloudpickle", "asyncio", "ssl")}


def test_heartbeat_process_is_under_15_mib(rush):
    """Issue 12: one heartbeat process per worker, each under 15 MiB resident (redis-py and
    psutil took it to ~34 MiB). The worker's own size is printed, not asserted."""
    from support.heartbeats import vm_rss_mib

    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=lambda x: {"y": x}, heartbeat_period=0.3,
                                   heartbeat_expire=5)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: rush.worker_info["heartbeat_alive"].all(), 20, what="a beat")
    info = rush.worker_info.iloc[0]
    hb, worker = int(info["heartbeat_pid"]), int(info["pid"])
    time.sleep(1.0)  # a few beats: each BLPOP returns after a period
    rss = vm_rss_mib(hb)
    print(f"resident: heartbeat {rss:.1f} MiB, worker {vm_rss_mib(worker):.1f} MiB")
    assert rss < 15, f"heartbeat RSS {rss:.1f} MiB"
    maps = open(f"/proc/{hb}/maps").read()
    assert "psutil" not in maps and "_ssl" not in maps and "libssl" not in maps
    rush.stop_workers(type="kill", worker_ids=ids)  # through the heartbeat's BLPOP
    proc = rush.launcher("local").processes[ids[0]]
    wait_until(lambda: proc.poll() is not None, 20, what="the killed worker to end")


def test_heartbeat_selects_its_database_and_loads_its_script_again(redis_server, tmp_path):
    """A database other than 0 (SELECT), a script cache flushed under it (NOSCRIPT: SCRIPT LOAD and
    the same beat again, no error), a kill request."""
    import dataclasses
    import uuid

    from support.heartbeats import StandIn

    cfg = dataclasses.replace(redis_server.config, db=3)
    s = StandIn(cfg, "hb-" + uuid.uuid4().hex[:8], "w-1", tmp_path)
    c = cfg.client()
    try:
        wait_until(lambda: c.exists(s.heartbeat_key), 15, what="a beat in database 3")
        assert not redis_server.config.client().exists(s.heartbeat_key)
        c.script_flush()
        c.delete(s.heartbeat_key)
        wait_until(lambda: c.exists(s.heartbeat_key), 15, what="a beat after SCRIPT FLUSH")
        assert "Redis error" not in s.log(), s.log()
        c.rpush(s.kill_key, "kill")
        wait_until(lambda: s.proc.poll() is not None, 15, what="the kill request")
        assert s.proc.returncode == -signal.SIGKILL and "kill request" in s.log()
    finally:
        s.stop()
        c.delete(s.heartbeat_key, s.keys.worker(s.worker_id), s.kill_key)
        c.close()


def test_beat_kill_tree_and_liveness_read_proc():
    """The heartbeat's process handling without psutil: a worker's children and grandchildren are
    SIGKILLed with it (but not ``skip``); a zombie is not alive."""
    import psutil

    from rushhpc.worker import beat

    tree = subprocess.Popen(["sh", "-c", "sleep 60 & (sleep 60 & sleep 61; true) & sleep 62; true"])
    try:
        wait_until(lambda: len(psutil.Process(tree.pid).children(recursive=True)) >= 4, 10, what="the tree")
        family = psutil.Process(tree.pid).children(recursive=True)
        spared = family[0]
        assert beat.alive(tree.pid) and beat.alive(spared.pid) and beat.alive(None)
        beat.kill_tree(tree.pid, skip=spared.pid)
        assert tree.wait(10) == -signal.SIGKILL
        gone, alive = psutil.wait_procs([p for p in family if p.pid != spared.pid], timeout=10)
        assert alive == [] and spared.is_running() and spared.status() != psutil.STATUS_ZOMBIE
        assert not beat.alive(tree.pid)  # reaped
        zombie = subprocess.Popen(["true"])
        wait_until(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, 10, what="a zombie")
        assert not beat.alive(zombie.pid)
        zombie.wait()
    finally:
        for p in psutil.Process(tree.pid).children(recursive=True) if tree.poll() is None else []:
            p.kill()
        if tree.poll() is None:
            tree.kill()
        tree.wait()
    spared.kill()


def test_beat_reads_redirections_and_replies():
    from rushhpc.worker import beat

    assert beat._address("127.0.0.1:7001", "h") == ("127.0.0.1", 7001)
    assert beat._address(":7001", "10.0.0.5") == ("10.0.0.5", 7001)  # Redis 7: the same host
    assert beat._address("::1:7001", "h") == ("::1", 7001)
    assert beat._seconds(0.5) == "0.5" and beat._seconds(10) == "10" and beat._seconds(1e6) == "1000000"

    class Sock:
        def __init__(self, data: bytes):
            self.data = data

        def recv(self, n: int) -> bytes:
            chunk, self.data = self.data[:3], self.data[3:]  # a few bytes at a time
            return chunk

        def sendall(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    conn = beat.Conn("h", 1, {}, 1.0)
    conn.sock = Sock(b"*2\r\n$5\r\nkill:\r\n$4\r\nkill\r\n*-1\r\n:7\r\n$-1\r\n+OK\r\n*2\r\n-MOVED 1 h:2\r\n:1\r\n$2\r\nok\r\n")
    assert conn.call("BLPOP") == ["kill:", "kill"]
    assert conn.call("BLPOP") is None and conn.call("X") == 7 and conn.call("GET") is None and conn.call("PING") == "OK"
    with pytest.raises(beat.RedisError, match="MOVED 1 h:2"):
        conn.call("X")
    assert conn.call("GET") == "ok"  # the array with an error inside was read whole: still in step
    with pytest.raises(OSError, match="closed by the server"):
        conn.call("GET")
    assert conn.sock is None


def test_a_worker_process_loads_none_of_the_other_commands():
    """`rushhpc worker` (one per core of a node) parses its command without importing the other
    commands' modules: each costs every worker memory (issue 12: worker + heartbeat under 45 MiB)."""
    code = ("import sys, runpy; sys.argv = ['rushhpc', 'worker', '--help']\n"
            "try:\n    runpy.run_module('rushhpc', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = ('yaml', 'psutil', 'jinja2', 'pandas', 'statistics', 'rushhpc.server.service', 'rushhpc.sweeps',\n"
            "         'rushhpc.ui.dashboard', 'rushhpc.manager.rush', 'rushhpc.launchers.slurm.launcher')\n"
            "print(sorted(m for m in sys.modules if m in heavy or m.startswith(tuple(h + '.' for h in heavy))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: rushhpc worker" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout.splitlines()[-1]

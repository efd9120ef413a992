"""Issue 20 ("Trust"), the sweep side: each test names the defect it covers. Real command line,
real workers, real Redis (the embedded one, as a user's first sweep has it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port, wait_until
from support.sweeps import calls, journal, run, sweep_cmd, write_sweep

import rushhpc
from rushhpc.sweeps import SweepConfigError
from rushhpc.sweeps import lock as lockmod
from rushhpc.sweeps.lock import OutputLock, SweepLockedError

OUT = "results/out"  # not under runs/: the tests' RUSHHPC_RUN_DIR is tmp_path/runs


def write_lock(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"host": socket.gethostname(), "pid": 1, "pid_started": 0.0, "started_at": time.time() - 100,
           "heartbeat": time.time(), "token": "0123456789abcdef", "command": "rushhpc sweep sweep.yaml"}
    rec.update(fields)
    (folder / ".lock").write_text(json.dumps(rec) + "\n")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---------------------------------------------------------------------------- defect 4: the output folder's lock
# issue 20 defect 4: a second `rushhpc sweep` into the folder of a running sweep (with or without --resume) is refused
def test_second_sweep_into_a_running_sweeps_folder_is_refused(tmp_path):
    write_sweep(tmp_path, objective="functions.py:slow_branin", budget={"evaluations": 400}, workers={"n": 1},
                output=OUT)
    log = tmp_path / "calls.log"
    env = {**os.environ, "SWEEP_CALL_LOG": str(log), "SWEEP_SLEEP": "0.2"}
    o = tmp_path / OUT
    first = subprocess.Popen(sweep_cmd("sweep.yaml", "progress=plain"), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until(lambda: len(journal(o)) >= 2, timeout=90, what="the first sweep's first results")
        for args in (("sweep.yaml", "--resume"), ("sweep.yaml",)):
            second = run(tmp_path, *args, env={"SWEEP_CALL_LOG": str(log)})
            assert second.returncode == 2, second.stdout + second.stderr
            err = second.stderr.strip()
            assert len(err.splitlines()) == 1, err
            assert "is in use by another sweep" in err and f"host {socket.gethostname()}, pid {first.pid}" in err, err
            assert f"kill -INT {first.pid}" in err and "--resume" in err, err
        rec = json.loads((o / ".lock").read_text())
        assert rec["pid"] == first.pid and rec["host"] == socket.gethostname()
        state = json.loads((o / "state.json").read_text())
        assert len(state["networks"]) == 1  # the refused runs started no network
    finally:
        first.send_signal(signal.SIGTERM)
        _, err1 = first.communicate(timeout=180)
    assert first.returncode == 143, err1
    assert not (o / ".lock").exists()  # removed on SIGTERM
    evals = [r["eval"] for r in journal(o)]
    assert len(evals) == len(set(evals))
    points = [json.dumps(c, sort_keys=True) for c in calls(log)]
    assert len(points) == len(set(points))  # no point evaluated twice


# issue 20 defect 4: the lock of a dead process on this host is taken over, and removed at the sweep's end
def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    write_sweep(tmp_path, budget={"evaluations": 6}, output=OUT)
    write_lock(tmp_path / OUT, pid=dead_pid())
    out = run(tmp_path, "sweep.yaml", "--resume", "progress=plain")
    assert out.returncode == 0, out.stderr
    assert "took over the lock" in out.stderr
    assert not (tmp_path / OUT / ".lock").exists()
    assert len(journal(tmp_path / OUT)) == 6


# issue 20 defect 4: another host's record decides by its heartbeat: fresh refuses, stale is taken over
def test_lock_of_another_host_follows_its_heartbeat(tmp_path):
    write_sweep(tmp_path, budget={"evaluations": 4}, output=OUT)
    write_lock(tmp_path / OUT, host="node-elsewhere", pid=4242, heartbeat=time.time() - 2)
    out = run(tmp_path, "sweep.yaml", "--resume")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "host node-elsewhere, pid 4242" in out.stderr and "ssh node-elsewhere kill -INT 4242" in out.stderr
    assert not (tmp_path / OUT / "journal.jsonl").exists()

    write_lock(tmp_path / OUT, host="node-elsewhere", pid=4242, heartbeat=time.time() - 10 * lockmod.STALE_AFTER)
    out = run(tmp_path, "sweep.yaml", "--resume", "progress=plain")
    assert out.returncode == 0, out.stderr
    assert "took over the lock" in out.stderr and "node-elsewhere" in out.stderr
    assert not (tmp_path / OUT / ".lock").exists() and len(journal(tmp_path / OUT)) == 4


# issue 20 defect 4: the holder refreshes its heartbeat; a second holder in the same process is refused too
def test_lock_heartbeat_and_release(tmp_path, monkeypatch):
    monkeypatch.setattr(lockmod, "HEARTBEAT_PERIOD", 0.2)
    folder = tmp_path / "out"
    lock = OutputLock(folder, source="s.yaml")
    lock.acquire()
    try:
        first = json.loads((folder / ".lock").read_text())
        assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
        wait_until(lambda: json.loads((folder / ".lock").read_text())["heartbeat"] > first["heartbeat"], timeout=10,
                   what="a heartbeat")
        with pytest.raises(SweepLockedError, match=f"pid {os.getpid()}.*it holds the lock"):
            OutputLock(folder, source="s.yaml").acquire()
    finally:
        lock.release()
    assert not (folder / ".lock").exists() and not folder.exists()  # nothing else was written: the folder goes too


# ---------------------------------------------------------------------------- defect 5e: every evaluation failed
# issue 20 defect 5e: a sweep whose evaluations all failed exits 3 (not 0, "completed") and names the first error
def test_sweep_whose_evaluations_all_failed_exits_3(tmp_path):
    write_sweep(tmp_path, objective="functions.py:always_fails", budget={"evaluations": 5}, output=OUT)
    out = run(tmp_path, "sweep.yaml", "progress=plain")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "failed (all 5 evaluations failed; the first: RuntimeError: broken objective)" in out.stdout
    assert "fix the objective" in out.stdout and "--resume" not in out.stdout
    summary = json.loads((tmp_path / OUT / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["exit_code"] == 3
    assert summary["counts"]["failed"] == 5 and summary["counts"]["finished"] == 0

    # some failed, some finished: the budget was completed, exit 0 as before
    write_sweep(tmp_path, objective="functions.py:fails_right", budget={"evaluations": 12}, output="results/half")
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = journal(tmp_path / "results" / "half")
    assert {r["state"] for r in rows} == {"finished", "failed"}


# issue 20 defect 5e: from Python, the table's attrs say it (status "failed", exit_code 3, the first error)
def test_python_sweep_whose_evaluations_all_failed(tmp_path, monkeypatch):
    def broken(x):  # local: sent to the workers by value
        raise ValueError(f"x={x} is no good")

    monkeypatch.chdir(tmp_path)
    df = rushhpc.sweep({"objective": broken, "space": {"x": {"type": "int", "low": 0, "high": 9}},
                        "budget": {"evaluations": 4}, "workers": {"n": 1}, "output": "results/py", "progress": "none"})
    assert len(df) == 4 and set(df["state"]) == {"failed"}
    assert df.attrs["status"] == "failed" and df.attrs["exit_code"] == 3
    assert "all 4 evaluations failed; the first: ValueError: x=" in df.attrs["reason"]


# ---------------------------------------------------------------------------- defect 5f: Redis errors in a sweep's words
# issue 20 defect 5f: an unreachable Redis in a sweep names the redis: key and `redis: embedded`, not Python's advice
def test_unreachable_redis_is_worded_for_the_sweep_file(tmp_path, monkeypatch):
    url = f"redis://127.0.0.1:{free_port()}/0"
    write_sweep(tmp_path, redis={"url": url}, output=OUT)
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("rushhpc: error: sweep.yaml: redis: cannot reach Redis"), out.stderr
    assert "`redis: embedded`" in out.stderr and "leave the config unset" not in out.stderr.lower()
    assert not (tmp_path / OUT).exists()  # nothing was written

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepConfigError, match=r"sweep.yaml: redis: cannot reach Redis.*`redis: embedded`") as e:
        rushhpc.sweep("sweep.yaml")
    assert "leave the config unset" not in str(e.value).lower()


# ---------------------------------------------------------------------------- defect 6: stopping a sweep's worker
def _stderr_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


# issue 20 defect 6: `rushhpc stop W` on a live sweep's worker shrinks the sweep (not replaced); a lost one is replaced
def test_rushhpc_stop_shrinks_a_running_sweep(tmp_path, redis_server):
    pw = tmp_path / "redis.pw"
    pw.write_text(redis_server.password + "\n")
    pw.chmod(0o600)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    write_sweep(tmp_path, objective="functions.py:slow_branin", budget={"evaluations": 2000}, workers={"n": 3},
                redis={"url": url, "password_file": str(pw)}, output=OUT)
    o = tmp_path / OUT
    err_file = tmp_path / "sweep.err"
    env = {**os.environ, "SWEEP_SLEEP": "0.2"}
    with open(err_file, "w") as err:
        sweep = subprocess.Popen(sweep_cmd("sweep.yaml", "progress=plain", "progress_interval=1"), cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    net_cli = ["--redis", url, "--password-file", str(pw)]

    def stop(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rushhpc", "stop", *args, *net_cli], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    try:
        wait_until(lambda: (o / "state.json").exists() and json.loads((o / "state.json").read_text())["networks"],
                   timeout=60, what="the sweep's network")
        net = json.loads((o / "state.json").read_text())["networks"][-1]["id"]
        rush = rushhpc.Rush.attach(net, config=redis_server.config)

        def running() -> list[str]:
            return sorted(w for w, s in rush.worker_states().items() if s == "running")

        wait_until(lambda: len(running()) == 3 and len(journal(o)) >= 3, timeout=90, what="3 running workers")
        # a worker that is lost (its process killed from outside) is still replaced
        victim = running()[0]
        os.kill(int(rush.worker_info.set_index("worker_id").loc[victim, "pid"]), signal.SIGKILL)
        wait_until(lambda: len(rush.worker_states()) == 4 and len(running()) == 3, timeout=60,
                   what="a replacement for the lost worker")

        # `rushhpc stop W` (terminate): the worker finishes its evaluation and ends; the sweep goes on with 2
        w1 = running()[0]
        out = stop(w1, "-n", net)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: _stderr_has(err_file, f"worker(s) {w1} stopped by a stop request, not replaced"),
                   timeout=60, what="the sweep to see the stop")
        n = len(journal(o))
        wait_until(lambda: len(journal(o)) >= n + 10, timeout=60, what="more results with 2 workers")
        assert len(rush.worker_states()) == 4 and len(running()) == 2, rush.worker_states()

        # `rushhpc stop W --kill`: the same; its cut evaluation is done again by another worker
        w2 = running()[0]
        out = stop(w2, "--kill", "-n", net)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: _stderr_has(err_file, f"worker(s) {w2} stopped by a stop request"), timeout=60,
                   what="the sweep to see the kill")
        n = len(journal(o))
        wait_until(lambda: len(journal(o)) >= n + 5, timeout=60, what="more results with 1 worker")
        assert len(rush.worker_states()) == 4 and len(running()) == 1, rush.worker_states()

        # the last one: the sweep ends as interrupted (resumable)
        out = stop(running()[0], "-n", net)
        assert out.returncode == 0, out.stderr
        sout, _ = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)
            sweep.communicate(timeout=120)
    assert sweep.returncode == 130, sout + err_file.read_text()
    assert "every worker was stopped by a stop request" in sout and "--resume" in sout
    evals = [r["eval"] for r in journal(o)]
    assert len(evals) == len(set(evals))  # the killed worker's evaluation was not recorded twice


# ---------------------------------------------------------------------------- defect 7: leftovers and noise
# issue 20 defect 7: a sweep's end removes what it made in the run dir (~/.rushhpc/runs/<network>: credentials,
# signing key, worker logs); the output folder is the user's and stays
def test_sweep_leaves_no_run_dir_behind(tmp_path):
    runs = Path(os.environ["RUSHHPC_RUN_DIR"])  # tmp_path/runs: the autouse fixture _isolated
    write_sweep(tmp_path, budget={"evaluations": 6}, output=OUT)
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    out = run(tmp_path, "sweep.yaml", "--resume", "budget.evaluations=10")  # a resumed run cleans up too
    assert out.returncode == 0, out.stderr
    nets = [n["id"] for n in json.loads((tmp_path / OUT / "state.json").read_text())["networks"]]
    assert len(nets) == 2
    left = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    assert not [n for n in nets if n in left], f"run dirs left in {runs}: {left}"
    assert len(journal(tmp_path / OUT)) == 10 and (tmp_path / OUT / "results.csv").exists()


# issue 20 defect 7: with tqdm installed and bars on (a terminal; RUSHHPC_PROGRESS=1 here), the sweep prints no
# manager "workers" bar above its own display
def test_sweep_shows_no_manager_progress_bar(tmp_path):
    pytest.importorskip("tqdm")
    write_sweep(tmp_path, budget={"evaluations": 4}, output=OUT)
    out = run(tmp_path, "sweep.yaml", "progress=plain", env={"RUSHHPC_PROGRESS": "1"})
    assert out.returncode == 0, out.stderr
    assert "started 2 local worker(s)" in out.stderr
    assert "worker/s" not in out.stderr and "workers:" not in out.stderr, out.stderr

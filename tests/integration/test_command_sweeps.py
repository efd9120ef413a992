"""Command objectives through the real CLI (issue 17): programs outside the package, real workers, real Redis.

``sim`` is a shell script (a compiled-looking program), ``train.py`` a Python script. Each writes its
pid (and a forked child's) to a log, so every test can check that no process is left behind.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import wait_until

SIM = """#!/bin/sh
# sim -T TEMP --out DIR [--fail CODE]: writes DIR/result.json, logs energy on stdout
while [ $# -gt 0 ]; do
  case "$1" in
    -T) T="$2"; shift 2;; --out) OUT="$2"; shift 2;; --fail) FAIL="$2"; shift 2;;
    *) echo "sim: unknown argument $1" >&2; exit 64;;
  esac
done
echo "$$" >> "$PIDS"
echo "sim: starting at T=$T" >&2
if [ -n "$FAIL" ]; then echo "sim: diverged at T=$T" >&2; exit "$FAIL"; fi
E=$(awk "BEGIN { print ($T - 300) * ($T - 300) / 100 }")
echo "step 100 energy: $E"
printf '{"energy": %s, "node": "%s"}\\n' "$E" "$(hostname)" > "$OUT/result.json"
"""

TRAIN = """
import json, os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
pid = os.fork()
if pid == 0:  # a data loader child that would outlive a careless runner
    time.sleep(float(args.get("--sleep", 0)) + 300)
    os._exit(0)
with open(os.environ["PIDS"], "a") as f:
    f.write(f"{os.getpid()}\\n{pid}\\n")
time.sleep(float(args.get("--sleep", 0)))
print("epoch 1 done")
print(json.dumps({"loss": (float(args["--lr"]) - 0.1) ** 2, "argv": sys.argv[1:], "cwd": os.getcwd(),
                  "trial": os.environ["RUSHHPC_TRIAL_DIR"], "eval": int(os.environ["RUSHHPC_EVAL"]),
                  "threads": os.environ.get("OMP_NUM_THREADS")}))
"""


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    sim = folder / "sim"
    sim.write_text(SIM)
    sim.chmod(sim.stat().st_mode | stat.S_IXUSR)
    (folder / "train.py").write_text(TRAIN)
    return folder


def write(folder: Path, **fields) -> Path:
    doc = {"space": {"lr": {"type": "float", "low": 0.01, "high": 0.3}}, "metric": "loss", "strategy": "random",
           "budget": {"evaluations": 6}, "workers": {"n": 2, "launcher": "local"}, "redis": "embedded",
           "output": "runs/out", "seed": 3}
    doc.update(fields)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def env_with_pids(folder: Path) -> dict:
    e = dict(os.environ)
    e["PIDS"] = str(folder / "pids.log")
    return e


def sweep(folder: Path, *args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rushhpc", "sweep", str(folder / "sweep.yaml"), *args],
                          cwd=cwd or folder, capture_output=True, text=True, timeout=timeout, env=env_with_pids(folder))


def rows(folder: Path, out: str = "runs/out") -> list[dict]:
    with open(folder / out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def assert_no_program_left(folder: Path, timeout: float = 10) -> None:
    pids = [int(p) for p in (folder / "pids.log").read_text().split()]
    assert pids
    wait_until(lambda: not any(alive(p) for p in pids), timeout, what=f"every program process to end: {pids}")


def test_python_script_result_on_stdout_env_and_trial_folders(project, tmp_path):
    write(project, objective={"command": "python3 train.py --lr {lr} --sleep 0", "env": {"OMP_NUM_THREADS": "2"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = sweep(project, cwd=elsewhere)  # run from another folder: the program still runs in the sweep file's
    assert out.returncode == 0, out.stderr
    rs = rows(elsewhere)  # the output folder is relative to where the sweep runs
    assert len(rs) == 6 and all(r["state"] == "finished" for r in rs)
    trials = elsewhere / "runs" / "out" / "trials"
    for r in rs:
        trial = trials / r["eval"]
        assert (trial / "stdout.txt").read_text().startswith("epoch 1 done\n")
        line = json.loads((trial / "stdout.txt").read_text().splitlines()[-1])
        assert line["cwd"] == str(project) and line["trial"] == str(trial) and line["eval"] == int(r["eval"])
        assert line["threads"] == "2" and line["argv"][0] == "--lr" and float(line["argv"][1]) == float(r["lr"])
        assert float(r["loss"]) == pytest.approx((float(r["lr"]) - 0.1) ** 2)
    assert_no_program_left(project)


def test_shell_program_with_a_result_file_and_a_regex(project):
    write(project, objective={"command": "./sim -T {T} --out {trial_dir}", "result": "result.json"},
          space={"T": {"type": "float", "low": 250, "high": 350}}, metric="energy")
    out = sweep(project)
    assert out.returncode == 0, out.stderr
    rs = rows(project)
    assert len(rs) == 6 and all(float(r["energy"]) == pytest.approx((float(r["T"]) - 300) ** 2 / 100, rel=1e-4) for r in rs)
    write(project, objective={"command": ["./sim", "-T", "{T}", "--out", "{trial_dir}"],
                              "result": {"regex": r"step (?P<steps>\d+) energy: (?P<energy>\S+)"}},
          space={"T": {"type": "float", "low": 250, "high": 350}}, metric="energy", output="runs/regex")
    out = sweep(project)
    assert out.returncode == 0, out.stderr
    with open(project / "runs" / "regex" / "results.csv", newline="") as f:
        rs = list(csv.DictReader(f))
    assert len(rs) == 6 and all(float(r["steps"]) == 100 for r in rs)


def test_failing_exits_and_timeouts_are_recorded_with_code_and_stderr(project):
    write(project, objective={"command": "./sim -T {T} --out {trial_dir} --fail {code}"},
          space={"T": {"type": "fixed", "value": 300}, "code": {"type": "int", "low": 3, "high": 4}},
          metric="energy", strategy="grid", budget={"evaluations": 2})
    out = sweep(project)
    assert out.returncode == 3, out.stdout + out.stderr  # every evaluation failed: the sweep says so
    rs = rows(project)
    assert {r["error"] for r in rs} == {f"ProgramFailed: ./sim failed (exit code {c}): sim: diverged at T=300" for c in (3, 4)}
    write(project, objective={"command": "python3 train.py --lr {lr} --sleep {s}", "grace": 2},
          space={"lr": {"type": "fixed", "value": 0.1}, "s": {"type": "categorical", "choices": [0, 30]}},
          strategy="grid", budget={"evaluations": 2}, timeout=2, output="runs/out")
    t0 = time.monotonic()
    out = sweep(project, "--resume")
    assert out.returncode in (0, 2), out.stderr
    if out.returncode == 2:  # a changed space is refused on --resume: start afresh in another folder
        out = sweep(project, "output=runs/t")
    assert time.monotonic() - t0 < 60
    path = project / "runs" / ("t" if (project / "runs" / "t").exists() else "out") / "results.csv"
    with open(path, newline="") as f:
        rs = {r["s"]: r for r in csv.DictReader(f)}
    assert rs["0"]["state"] == "finished"
    assert rs["30"]["state"] == "failed" and rs["30"]["error"].startswith("EvaluationTimeout: the program ran longer than")
    assert_no_program_left(project)


def test_bad_command_objectives_are_refused_before_anything_starts(project):
    write(project, objective={"command": "python3 train.py --lr {lr} --depth {depth}"})
    out = sweep(project)
    assert out.returncode == 2 and "objective.command: unknown placeholder {depth}" in out.stderr, out.stderr
    write(project, objective={"command": "./no-such-sim {lr}"})
    out = sweep(project)
    assert out.returncode == 2 and "objective.command: ./no-such-sim not found" in out.stderr, out.stderr
    write(project, objective={"command": "python3 train.py {lr}", "result": {"regex": "loss (.*)"}})
    out = sweep(project)
    assert out.returncode == 2 and "objective.result.regex: name the groups" in out.stderr, out.stderr
    assert not (project / "runs" / "out" / "trials").exists()


def test_inactive_parameters_leave_out_their_flag(project):
    write(project, objective={"command": "python3 train.py --lr {lr} --depth {depth}"},
          space={"lr": {"type": "categorical", "choices": [0.1, 0.2]},
                 "depth": {"type": "int", "low": 1, "high": 2, "when": {"lr": [0.2]}}},
          strategy="grid", budget={"evaluations": 10})
    out = sweep(project)
    assert out.returncode == 0, out.stderr
    for r in rows(project):
        argv = json.loads((project / "runs" / "out" / "trials" / r["eval"] / "stdout.txt").read_text().splitlines()[-1])["argv"]
        assert ("--depth" in argv) == (float(r["lr"]) == 0.2), argv


def test_a_sigkilled_worker_takes_its_program_with_it_and_its_point_is_retried(project):
    write(project, objective={"command": "python3 train.py --lr {lr} --sleep 3"}, retries=1,
          budget={"evaluations": 3}, workers={"n": 1, "launcher": "local", "restarts": 1})
    proc = subprocess.Popen([sys.executable, "-m", "rushhpc", "sweep", "sweep.yaml"], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_with_pids(project))
    try:
        pids_log = project / "pids.log"
        wait_until(lambda: pids_log.exists() and len(pids_log.read_text().split()) >= 2, 60, what="a program running")
        program = int(pids_log.read_text().split()[0])
        worker = int(Path(f"/proc/{program}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
        os.kill(worker, signal.SIGKILL)
        first = [int(p) for p in pids_log.read_text().split()[:2]]
        wait_until(lambda: not any(alive(p) for p in first), 10, what="the dead worker's program and its child to end")
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    rs = rows(project)
    assert len(rs) == 3 and all(r["state"] == "finished" for r in rs), rs
    assert_no_program_left(project)


def test_ctrl_c_twice_leaves_no_program_running(project):
    write(project, objective={"command": "python3 train.py --lr {lr} --sleep 30"}, budget={"evaluations": 4})
    proc = subprocess.Popen([sys.executable, "-m", "rushhpc", "sweep", "sweep.yaml"], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_with_pids(project))
    try:
        pids_log = project / "pids.log"
        wait_until(lambda: pids_log.exists() and len(pids_log.read_text().split()) >= 4, 60, what="two programs running")
        proc.send_signal(signal.SIGINT)  # the first lets running evaluations finish ...
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # ... the second stops them
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert_no_program_left(project)


def test_the_python_api_takes_a_command_objective(project, monkeypatch):
    import rushhpc
    from rushhpc.server.embedded import stop_embedded_redis

    monkeypatch.chdir(project)
    monkeypatch.setenv("PIDS", str(project / "pids.log"))
    try:
        df = rushhpc.sweep({"objective": {"command": [sys.executable, "train.py", "--lr", "{lr}"]}, "metric": "loss",
                            "space": {"lr": {"type": "float", "low": 0.01, "high": 0.3}}, "budget": {"evaluations": 4},
                            "workers": {"n": 2}, "redis": "embedded", "output": str(project / "runs" / "api")})
    finally:
        stop_embedded_redis()  # the process-wide private Redis the sweep started: not left to later tests
    assert len(df) == 4 and df["state"].eq("finished").all()
    assert_no_program_left(project)

"""``rushhpc sweep`` end to end: the real command line in a subprocess, real workers, real Redis."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
from support import wait_until
from support.sweeps import BRANIN_SPACE, HERE, calls, journal, run, sweep_cmd, write_sweep


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def point_key(p: dict) -> tuple:
    return tuple(sorted((k, float(v)) for k, v in p.items()))


# ---------------------------------------------------------------------------- strategies
def test_random_minimal_file_embedded_redis(tmp_path):
    cfg = write_sweep(tmp_path)
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    o = tmp_path / "runs" / "out"
    rows = results(o)
    assert len(rows) == 20 and [int(r["eval"]) for r in rows] == list(range(20))
    assert list(rows[0]) == ["eval", "x1", "x2", "y", "state", "error", "worker_id", "node", "started_at",
                             "finished_at", "runtime", "attempts", "key"]
    assert all(r["state"] == "finished" and r["error"] == "" for r in rows)
    assert all(-5 <= float(r["x1"]) <= 10 and 0 <= float(r["x2"]) <= 15 for r in rows)
    assert len({r["worker_id"] for r in rows}) == 2  # both workers took points
    best = json.loads((o / "best.json").read_text())
    assert best["value"] == min(float(r["y"]) for r in rows) and set(best["params"]) == {"x1", "x2"}
    resolved = yaml.safe_load((o / "config.yaml").read_text())
    assert resolved["objective"] == f"{tmp_path / 'functions.py'}:branin"  # resolved against the YAML's folder
    assert resolved["budget"] == {"evaluations": 20, "walltime": None, "target": None}
    assert (o / "results.parquet").exists()
    summary = json.loads((o / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    assert "completed (budget of 20 evaluations reached)" in out.stdout and "best y = " in out.stdout
    assert "evaluations" in out.stderr  # plain progress lines (not a terminal)
    assert cfg.exists()


def test_grid_evaluates_each_point_once_with_conditions(tmp_path):
    space = {
        "model": {"type": "categorical", "choices": ["tree", "svm"]},
        "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True, "resolution": 3},
        "depth": {"type": "int", "low": 1, "high": 9, "when": {"model": "tree"}},
        "kernel": {"type": "categorical", "choices": ["rbf", "linear"], "when": {"model": "svm"}},
    }
    write_sweep(tmp_path, objective="functions.py:conditional", space=space, budget=None,
                strategy={"name": "grid", "resolution": 4})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    rows = results(tmp_path / "runs" / "out")
    # tree: 3 lr x 4 depths, svm: 3 lr x 2 kernels; inactive parameters merge the rest
    assert len(rows) == 3 * 4 + 3 * 2
    keys = {(r["model"], r["lr"], r["depth"], r["kernel"]) for r in rows}
    assert len(keys) == len(rows)
    assert sorted(round(float(lr), 9) for lr in {r["lr"] for r in rows}) == [0.001, 0.01, 0.1]
    assert {r["depth"] for r in rows if r["model"] == "tree"} == {"1", "4", "6", "9"}
    assert all(r["depth"] == "" for r in rows if r["model"] == "svm")
    assert all(r["kernel"] == "" for r in rows if r["model"] == "tree")
    assert all(r["state"] == "finished" for r in rows)
    assert "all 18 points of the grid evaluated" in out.stdout


def test_sobol_points_are_the_design(tmp_path):
    write_sweep(tmp_path, strategy="sobol", budget={"evaluations": 16}, seed=7)
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    rows = results(tmp_path / "runs" / "out")
    from rushhpc.sweeps.config import load_config
    from rushhpc.sweeps.space import Space
    from rushhpc.sweeps.strategies import make_design

    cfg = load_config(tmp_path / "runs" / "out" / "config.yaml")
    expected = make_design(Space(cfg.space), cfg.data["strategy"], 7, 16).points(0, 16)
    got = {int(r["eval"]): {"x1": float(r["x1"]), "x2": float(r["x2"])} for r in rows}
    assert got == dict(enumerate(expected))
    # space filling: every quarter of x1's range holds 4 of the 16 points
    quarters = sorted(int((p["x1"] + 5) / 15 * 4) for p in got.values())
    assert [quarters.count(q) for q in range(4)] == [4, 4, 4, 4]


def test_tpe_model_based(tmp_path):
    pytest.importorskip("optuna")
    write_sweep(tmp_path, objective="functions.py:quadratic", strategy={"name": "tpe", "n_startup_trials": 6},
                space={"x": {"type": "float", "low": 0, "high": 1}}, budget={"evaluations": 40})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    rows = results(tmp_path / "runs" / "out")
    # the budget's slots are taken atomically with the tasks' creation: exactly the budget
    assert len(rows) == 40
    assert [int(r["eval"]) for r in rows] == list(range(len(rows)))
    assert all(r["state"] == "finished" for r in rows)
    assert len({r["worker_id"] for r in rows}) == 2
    xs = [float(r["x"]) for r in sorted(rows, key=lambda r: r["started_at"])]
    dist = [abs(x - 0.3) for x in xs]
    # after the random start the samplers, fitted on the results in Redis, propose near the minimum:
    # uniform points are 0.29 from it on average (the mean of 20 is below 0.2 with probability < 2%)
    assert sum(dist[-20:]) / 20 < 0.2, xs


def test_tpe_budget_is_exact_with_several_workers(tmp_path):
    """Four workers with an objective that costs nothing race for the last slots of the budget
    (they all check it at about the same instant): exactly the budget is evaluated, not up to
    budget + workers - 1."""
    pytest.importorskip("optuna")
    write_sweep(tmp_path, objective="functions.py:quadratic", strategy={"name": "tpe", "n_startup_trials": 4},
                space={"x": {"type": "float", "low": 0, "high": 1}}, budget={"evaluations": 23},
                workers={"n": 4, "launcher": "local"})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    o = tmp_path / "runs" / "out"
    rows = results(o)
    assert len(rows) == 23 and all(r["state"] == "finished" for r in rows)
    assert [int(r["eval"]) for r in rows] == list(range(23))
    assert len(journal(o)) == 23
    summary = json.loads((o / "summary.json").read_text())
    assert summary["counts"]["evaluations"] == summary["counts"]["finished"] == 23
    assert summary["counts"]["cancelled"] == 0


# ---------------------------------------------------------------------------- overrides, seed
def test_overrides_by_dotted_path(tmp_path):
    write_sweep(tmp_path)
    out = run(tmp_path, "sweep.yaml", "budget.evaluations=7", "workers.n=1", "space.x1.high=0",
              "+space.tag={type: fixed, value: hello}", "seed=3", "output=runs/over")
    assert out.returncode != 0 and "takes no parameter 'tag'" in out.stderr  # branin(x1, x2) has no tag
    out = run(tmp_path, "sweep.yaml", "budget.evaluations=7", "workers.n=1", "space.x1.high=0", "seed=3",
              "output=runs/over", "strategy=grid", "strategy.resolution=3", "~space.x2",
              "objective=functions.py:colliding", "+space.y=[1, 2]", "+space.state={type: fixed, value: s}",
              "+space.value=0.5", "+space.objective=[a]", "~space.x1")
    assert out.returncode == 0, out.stderr
    o = tmp_path / "runs" / "over"
    resolved = yaml.safe_load((o / "config.yaml").read_text())
    assert resolved["budget"]["evaluations"] == 7 and resolved["workers"]["n"] == 1 and resolved["seed"] == 3
    assert resolved["strategy"] == {"name": "grid", "resolution": 3, "shuffle": False}
    assert list(resolved["space"]) == ["y", "state", "value", "objective"]
    rows = results(o)
    assert len(rows) == 2  # the grid: y in [1, 2]; everything else fixed
    cols = list(rows[0])
    # parameters keep their names; meta and outputs that collide get prefixes
    assert cols[:5] == ["eval", "y", "state", "value", "objective"]
    assert {"out_y", "out_state", "loss", "out_objective", "sweep_state", "error", "out_error"} <= set(cols)
    assert sorted(r["y"] for r in rows) == ["1", "2"] and sorted(r["out_y"] for r in rows) == ["2", "4"]
    assert all(r["state"] == "s" and r["sweep_state"] == "finished" and r["out_state"] == "ok" for r in rows)
    summary = json.loads((o / "summary.json").read_text())
    assert summary["columns"]["outputs"]["y"] == "out_y" and summary["columns"]["meta"]["state"] == "sweep_state"


@pytest.mark.parametrize("strategy", ["random", "sobol"])
def test_same_seed_same_points_whatever_the_workers(tmp_path, strategy):
    write_sweep(tmp_path, objective="functions.py:slow_branin", strategy=strategy, budget={"evaluations": 12})
    a = run(tmp_path, "sweep.yaml", "workers.n=1", "output=runs/one", env={"SWEEP_SLEEP": "0"})
    b = run(tmp_path, "sweep.yaml", "workers.n=3", "output=runs/three", env={"SWEEP_SLEEP": "0.05"})
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra, rb = results(tmp_path / "runs" / "one"), results(tmp_path / "runs" / "three")
    pa = {r["eval"]: (r["x1"], r["x2"]) for r in ra}
    pb = {r["eval"]: (r["x1"], r["x2"]) for r in rb}
    assert pa == pb and len(pa) == 12
    assert len({r["worker_id"] for r in rb}) > 1  # (another seed, other points: test_sweep_units)


# ---------------------------------------------------------------------------- failures
def test_failing_evaluations_are_recorded_and_the_sweep_completes(tmp_path):
    write_sweep(tmp_path, objective="functions.py:fails_right", budget={"evaluations": 16})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr  # the budget was completed
    rows = results(tmp_path / "runs" / "out")
    assert len(rows) == 16
    bad = [r for r in rows if r["state"] == "failed"]
    good = [r for r in rows if r["state"] == "finished"]
    assert bad and good
    assert all(float(r["x1"]) > 2.5 for r in bad) and all(float(r["x1"]) <= 2.5 for r in good)
    assert all(r["error"].startswith("ValueError: x1=") and "out of range" in r["error"] and r["y"] == "" for r in bad)
    assert all(r["worker_id"].startswith("w-") and r["started_at"] and float(r["runtime"]) >= 0 for r in bad)
    tb = [j for j in journal(tmp_path / "runs" / "out") if j["state"] == "failed"][0]["traceback"]
    assert "Traceback" in tb and "fails_right" in tb
    assert f"{len(bad)} failed" in out.stdout


def test_max_failures_stops_the_sweep_with_exit_1(tmp_path):
    write_sweep(tmp_path, objective="functions.py:always_fails", budget={"evaluations": 50}, max_failures=3,
                workers={"n": 1})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 1, out.stdout + out.stderr
    rows = results(tmp_path / "runs" / "out")
    assert 4 <= len(rows) < 50 and all(r["error"] == "RuntimeError: broken objective" for r in rows)
    assert "more than max_failures=3" in out.stdout
    assert "no finished evaluation" in out.stdout and not (tmp_path / "runs" / "out" / "best.json").exists()


def test_timeout_and_retries(tmp_path):
    write_sweep(tmp_path, objective="functions.py:sleeps_when_high", timeout="1s", budget={"evaluations": 8},
                space={"x1": {"type": "categorical", "choices": [0, 6]}, "x2": {"type": "fixed", "value": 2.0}},
                strategy="grid")
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    rows = {r["x1"]: r for r in results(tmp_path / "runs" / "out")}
    assert rows["0"]["state"] == "finished"
    assert rows["6"]["state"] == "failed" and "took longer than the timeout of 1 s" in rows["6"]["error"]

    log = tmp_path / "calls.log"
    out = run(tmp_path, "sweep.yaml", "objective=functions.py:flaky", "retries=1", "~timeout", "output=runs/flaky",
              "budget.evaluations=6", "strategy=random", "space.x1={type: float, low: 0, high: 1}",
              env={"SWEEP_CALL_LOG": str(log)})
    assert out.returncode == 0, out.stderr
    rows = results(tmp_path / "runs" / "flaky")
    assert len(rows) == 6 and all(r["state"] == "finished" and r["attempts"] == "2" for r in rows)
    assert len(calls(log)) == 12


def test_a_dead_worker_is_replaced_and_its_point_retried(tmp_path):
    log = tmp_path / "calls.log"
    write_sweep(tmp_path, objective="functions.py:crashes_once", budget={"evaluations": 12}, retries=1,
                workers={"n": 2, "restarts": 1})
    out = run(tmp_path, "sweep.yaml", env={"SWEEP_CALL_LOG": str(log)})
    assert out.returncode == 0, out.stdout + out.stderr
    rows = results(tmp_path / "runs" / "out")
    assert len(rows) == 12 and all(r["state"] == "finished" for r in rows)
    assert "starting 1 replacement(s)" in out.stderr and "exit code 3" in out.stderr, out.stderr
    crash = [c for c in calls(log) if "crash" in c]
    assert len(crash) == 1
    # the point whose worker died was requeued (retries: 1) and finished by another worker
    again = [r for r in rows if (float(r["x1"]), float(r["x2"])) == (crash[0]["x1"], crash[0]["x2"])]
    assert len(again) == 1 and again[0]["state"] == "finished"


# ---------------------------------------------------------------------------- resume, interrupt
def _redis_yaml(tmp_path, redis_server) -> dict:
    pw = tmp_path / "redis.pw"
    pw.write_text(redis_server.password + "\n")
    pw.chmod(0o600)
    return {"url": f"redis://127.0.0.1:{redis_server.port}/0", "password_file": str(pw)}


def _start(tmp_path, *args, env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.Popen(sweep_cmd(*args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=e)


def _sigkill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the sweep process only (what a crash does); then end, by pid, what it leaves
    behind: its embedded redis-server (local workers and heartbeats end by themselves)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()
    for c in children:
        try:
            if "redis-server" in " ".join(c.cmdline()) or c.name().startswith("redis"):
                c.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=15)
    for c in alive:
        c.kill()
    assert not alive, f"left behind after the sweep was killed: {[c.pid for c in alive]}"


@pytest.mark.parametrize("redis_kind", ["url", "embedded"])
def test_resume_after_sigkill_does_not_reevaluate_finished_points(tmp_path, redis_server, redis_kind):
    redis = _redis_yaml(tmp_path, redis_server) if redis_kind == "url" else "embedded"
    write_sweep(tmp_path, objective="functions.py:slow_branin", budget={"evaluations": 24}, redis=redis,
                workers={"n": 2, "heartbeat_period": 1, "heartbeat_expire": 3})
    log = tmp_path / "calls.log"
    env = {"SWEEP_CALL_LOG": str(log), "SWEEP_SLEEP": "0.15"}
    proc = _start(tmp_path, "sweep.yaml", env=env)
    o = tmp_path / "runs" / "out"
    wait_until(lambda: len(journal(o)) >= 8 or proc.poll() is not None, 60, what="8 results in the journal")
    assert proc.poll() is None, proc.stderr.read()
    _sigkill_tree(proc)
    before = journal(o)
    assert 8 <= len(before) < 24
    if redis_kind == "url":
        # as if the manager had died before writing its last results: Redis still has them
        lines = (o / "journal.jsonl").read_text().splitlines(keepends=True)
        (o / "journal.jsonl").write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:10])

    out = run(tmp_path, "sweep.yaml", "--resume", env=env)
    assert out.returncode == 0, out.stderr
    rows = results(o)
    assert sorted(int(r["eval"]) for r in rows) == list(range(24))
    counts: dict[tuple, int] = {}
    for c in calls(log):
        counts[point_key(c)] = counts.get(point_key(c), 0) + 1
    for j in before:  # a point finished before the crash is never evaluated again
        assert counts[point_key(j["params"])] == 1, j
    # at most the evaluations running at the crash (2 workers) and, with Redis gone, those
    # finished after the journal's last line, run twice
    extra = sum(counts.values()) - 24
    assert 0 <= extra <= (2 if redis_kind == "url" else 4)
    # the same points as an uninterrupted sweep with this seed
    fresh = run(tmp_path, "sweep.yaml", "output=runs/fresh", env={"SWEEP_SLEEP": "0"})
    assert fresh.returncode == 0, fresh.stderr
    assert {(r["x1"], r["x2"]) for r in rows} == {(r["x1"], r["x2"]) for r in results(tmp_path / "runs" / "fresh")}
    assert "resuming: " in out.stderr
    if redis_kind == "url":
        assert "evaluations read from network" in out.stderr


def test_ctrl_c_stops_gracefully_and_keeps_every_result(tmp_path):
    write_sweep(tmp_path, objective="functions.py:slow_branin", budget={"evaluations": 200})
    log = tmp_path / "calls.log"
    proc = _start(tmp_path, "sweep.yaml", env={"SWEEP_CALL_LOG": str(log), "SWEEP_SLEEP": "0.3"})
    o = tmp_path / "runs" / "out"
    wait_until(lambda: len(journal(o)) >= 4 or proc.poll() is not None, 60, what="4 results")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = results(o)
    assert 4 <= len(rows) < 200 and all(r["state"] == "finished" for r in rows)
    # every evaluation that had started was let finish and is in the results
    assert {point_key(c) for c in calls(log)} == {point_key({"x1": r["x1"], "x2": r["x2"]}) for r in rows}
    assert "interrupted" in stdout and json.loads((o / "summary.json").read_text())["status"] == "interrupted"
    out = run(tmp_path, "sweep.yaml", "--resume", "budget.evaluations=10", env={"SWEEP_SLEEP": "0"})
    assert out.returncode == 0, out.stderr
    assert len(results(o)) == max(10, len(rows))


def test_sigterm_then_ctrl_c_kills_running_evaluations_which_resume_redoes(tmp_path):
    write_sweep(tmp_path, objective="functions.py:slow_branin", budget={"evaluations": 6})
    log, err = tmp_path / "calls.log", tmp_path / "stderr.txt"
    e = dict(os.environ, SWEEP_CALL_LOG=str(log), SWEEP_SLEEP="60")
    with open(err, "w") as ferr:
        proc = subprocess.Popen(sweep_cmd("sweep.yaml"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=ferr,
                                text=True, env=e)
        wait_until(lambda: len(calls(log)) == 2, 60, what="both workers evaluating")
        proc.terminate()  # SIGTERM, as scancel sends: a graceful stop ...
        wait_until(lambda: "stopping (SIGTERM): waiting for 2 running" in err.read_text(), 30, what="the stop")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)  # ... cut short: the 60 s evaluations are killed
        stdout, _ = proc.communicate(timeout=30)
    why = err.read_text() + stdout
    assert time.monotonic() - t0 < 20, why
    assert proc.returncode == 143, why
    o = tmp_path / "runs" / "out"
    summary = json.loads((o / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["reason"] == "SIGTERM", summary
    # not evaluations: the 2 killed and the 4 points queued ahead for them (defaults.SWEEP_LOOKAHEAD_MIN >= 6)
    assert summary["counts"]["evaluations"] == 0 and summary["counts"]["cancelled"] == 6, summary
    assert "continue with: rushhpc sweep" in stdout
    out = run(tmp_path, "sweep.yaml", "--resume", env={"SWEEP_CALL_LOG": str(log), "SWEEP_SLEEP": "0"})
    assert out.returncode == 0, out.stderr
    rows = results(o)
    assert [int(r["eval"]) for r in rows] == list(range(6)) and all(r["state"] == "finished" for r in rows)
    killed = {point_key(c) for c in calls(log)[:2]}
    assert killed <= {point_key({"x1": r["x1"], "x2": r["x2"]}) for r in rows}  # evaluated again, recorded once


def test_existing_output_needs_resume_and_resume_keeps_the_space(tmp_path):
    write_sweep(tmp_path, budget={"evaluations": 4})
    assert run(tmp_path, "sweep.yaml").returncode == 0
    again = run(tmp_path, "sweep.yaml")
    assert again.returncode == 2 and "already holds a sweep; pass --resume" in again.stderr
    changed = run(tmp_path, "sweep.yaml", "--resume", "seed=5")
    assert changed.returncode == 2 and "sweep.yaml: seed: differs from the sweep being resumed" in changed.stderr
    more = run(tmp_path, "sweep.yaml", "--resume", "budget.evaluations=6")
    assert more.returncode == 0, more.stderr
    assert len(results(tmp_path / "runs" / "out")) == 6
    from_copy = run(tmp_path, "runs/out/config.yaml", "--resume")  # the resolved copy works from anywhere
    assert from_copy.returncode == 0 and "budget of 6 evaluations reached" in from_copy.stdout


def test_redis_url_with_password_file(tmp_path, redis_server):
    write_sweep(tmp_path, redis=_redis_yaml(tmp_path, redis_server), budget={"evaluations": 6}, name="urlsweep")
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    assert f"127.0.0.1:{redis_server.port}" in out.stderr
    assert len(results(tmp_path / "runs" / "out")) == 6
    assert redis_server.password not in (tmp_path / "runs" / "out" / "config.yaml").read_text()
    # the network is deleted at the end: the journal has everything
    left = list(redis_server.config.client().scan_iter(match="*urlsweep-*"))
    assert left == []


def test_adapting_workers_follow_the_queue(tmp_path):
    """workers.adapt: the monitor starts workers as the queue demands (never more than max),
    every evaluation is done, and the workers are released at the end."""
    write_sweep(tmp_path, objective="functions.py:slow_branin", budget={"evaluations": 12},
                workers={"launcher": "local", "adapt": {"min": 0, "max": 3, "idle_timeout": "2s"}})
    out = run(tmp_path, "sweep.yaml", "workers.adapt.max=2", timeout=180)
    assert out.returncode == 0, out.stderr
    assert "adapting between 0 and 2 local worker(s)" in out.stdout + out.stderr
    rows = results(tmp_path / "runs" / "out")
    assert len(rows) == 12 and {r["state"] for r in rows} == {"finished"}
    assert 1 <= len({r["worker_id"] for r in rows}) <= 2  # the override's max, not the file's


# ---------------------------------------------------------------------------- validation
def x1(**spec) -> dict:
    """A space whose x1 is ``spec`` (x2 fixed)."""
    return {"space": {"x1": spec, "x2": 1}}


FLOAT01 = {"type": "float", "low": 0, "high": 1}
VALIDATION_CASES = [
    ({"budgett": {"evaluations": 3}}, [], "sweep.yaml: budgett: unknown key; the sweep file takes objective"),
    ({"budget": {"evals": 3}}, [], "sweep.yaml: budget.evals: unknown key; budget takes evaluations, walltime, target"),
    ({"budget": {"evaluations": -3}}, [], "sweep.yaml: budget.evaluations: expected a positive integer or null, got -3"),
    ({"workers": {"n": "two"}}, [], "sweep.yaml: workers.n: expected a positive integer, got 'two'"),
    ({"budget": {"walltime": "soon"}}, [], "sweep.yaml: budget.walltime: 'soon' is not a duration"),
    ({"objective": "nosuchmod_xyz:f"}, [], "sweep.yaml: objective: cannot import nosuchmod_xyz:f: ModuleNotFoundError"),
    ({"objective": "missing.py:f"}, [], "sweep.yaml: objective: file missing.py not found"),
    ({"objective": "functions.py:nosuch"}, [], "sweep.yaml: objective: cannot import"),
    ({"objective": "functions.py:NOT_CALLABLE"}, [], "NOT_CALLABLE is a int, not a function"),
    ({"objective": "functions"}, [], "sweep.yaml: objective: expected module:function, path/to/file.py:function, or a program"),
    ({"space": {}}, [], "sweep.yaml: space: is empty"),
    (x1(type="float", low=3, high=1), [], "sweep.yaml: space.x1.high: expected high > low (3)"),
    (x1(**FLOAT01, log=True), [], "sweep.yaml: space.x1.low: expected low > 0 for a log-scaled parameter"),
    (x1(type="floaty", low=0, high=1), [], "sweep.yaml: space.x1.type: expected one of float, int, categorical, fixed"),
    (x1(type="float", low=0), [], "sweep.yaml: space.x1.high: missing"),
    (x1(**FLOAT01, choices=[1]), [], "sweep.yaml: space.x1.choices: unknown key"),
    ({"space": {"x1": FLOAT01, "x2": {"type": "fixed", "value": 1, "when": {"k": 1}}}}, [],
     "sweep.yaml: space.x2.when.k: refers to no parameter"),
    ({"strategy": "bayes"}, [], "sweep.yaml: strategy: expected one of random, grid, sobol, halton, lhs, tpe, optuna"),
    ({"direction": "down"}, [], "sweep.yaml: direction: expected one of minimize, maximize"),
    ({"budget": None}, [], "sweep.yaml: budget: needs evaluations or walltime"),
    ({"redis": {"url": "redis://:secret@host:6379"}}, [], "sweep.yaml: redis.url: the URL holds a password"),
    ({"redis": {"url": "redis://h:6379", "password_file": "/nonexistent/pw"}}, [],
     "sweep.yaml: redis.password_file: no such file"),
    ({"space": {"x1": FLOAT01}}, [], "sweep.yaml: space: the objective branin(x1, x2) needs x2"),
    ({}, ["budget.evals=30"],
     "sweep.yaml: override 'budget.evals=30': budget.evals does not exist; budget takes evaluations, walltime, target"),
    ({}, ["space.x9.low=1"], "sweep.yaml: override 'space.x9.low=1': space.x9 does not exist; parameters are x1, x2"),
    ({}, ["seed.x=1"], "sweep.yaml: override 'seed.x=1': seed is 1, not a mapping"),
    ({}, ["workerz=3"], "sweep.yaml: override 'workerz=3': workerz does not exist"),
    ({}, ["workers.n"], "sweep.yaml: override 'workers.n': expected KEY=VALUE"),
    ({}, ["workers={n: 2"], "sweep.yaml: override 'workers={n: 2': the value is not valid YAML"),
    ({}, ["workers.n=0"], "sweep.yaml: workers.n: expected a positive integer, got 0"),
    ({"workers": {"n": 2, "adapt": {"max": 4}}}, [], "sweep.yaml: workers.n: give either workers.n"),
    ({"workers": {"adapt": {"min": 1}}}, [], "sweep.yaml: workers.adapt.max: expected the largest number"),
    ({"workers": {"adapt": {"min": 5, "max": 2}}}, [], "sweep.yaml: workers.adapt.min: expected at most"),
    ({"workers": {"adapt": {"max": 2, "ceiling": 3}}}, [], "sweep.yaml: workers.adapt.ceiling: unknown key"),
    ({"strategy": "tpe", "workers": {"adapt": {"max": 2}}}, [],
     "sweep.yaml: workers.adapt: adapting follows the queue of a design strategy"),
    ({"workers": {"adapt": {"max": 2}}}, ["workers.adapt.idle=3"],
     "sweep.yaml: override 'workers.adapt.idle=3': workers.adapt.idle does not exist"),
]


@pytest.mark.parametrize("fields, args, expected", VALIDATION_CASES)
def test_validation_errors_name_file_and_key(tmp_path, fields, args, expected):
    write_sweep(tmp_path, **fields)
    out = run(tmp_path, "sweep.yaml", *args, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert expected in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rushhpc: error: ") and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_validation_of_yaml_syntax_and_check_mode(tmp_path):
    (tmp_path / "bad.yaml").write_text("objective: [unclosed\n")
    out = run(tmp_path, "bad.yaml")
    assert out.returncode == 2 and out.stderr.startswith("rushhpc: error: bad.yaml: not valid YAML")
    write_sweep(tmp_path, budget={"walltime": "1h30m"})
    out = run(tmp_path, "sweep.yaml", "--check", "workers.n=4")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["budget"]["walltime"] == 5400 and doc["workers"]["n"] == 4 and doc["strategy"] == {"name": "random"}
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- Python
def test_python_sweep_function_returns_the_table(tmp_path, monkeypatch, redis_server):
    import rushhpc

    shutil.copy(HERE / "sweep_functions.py", tmp_path / "functions.py")
    monkeypatch.chdir(tmp_path)
    config = {"objective": "functions.py:returns_dict", "metric": "loss", "space": BRANIN_SPACE,
              "budget": {"evaluations": 5}, "redis": _redis_yaml(tmp_path, redis_server), "progress": "none",
              "seed": 4}
    df = rushhpc.sweep(config, workers__n=2, **{"output": str(tmp_path / "py")})
    assert list(df.columns[:5]) == ["eval", "x1", "x2", "loss", "norm"]
    assert len(df) == 5 and (df["state"] == "finished").all()
    assert df.attrs["status"] == "completed" and df.attrs["exit_code"] == 0
    assert df.attrs["best"]["value"] == df["loss"].min()
    assert rushhpc.rush_config() == {}  # the plan it set for its workers is gone again
    again = rushhpc.sweep(config, resume=True, budget__evaluations=7, output=str(tmp_path / "py"))
    assert len(again) == 7 and list(again["eval"]) == list(range(7))
    assert again.iloc[:5][["x1", "x2"]].equals(df[["x1", "x2"]])


def test_a_running_sweep_says_what_it_is_in_its_network(tmp_path, monkeypatch, redis_server):
    import threading

    import rushhpc
    from rushhpc.network.view import Network, list_networks

    shutil.copy(HERE / "sweep_functions.py", tmp_path / "functions.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_SLEEP", "0.3")
    config = {"objective": "functions.py:slow_branin", "space": BRANIN_SPACE, "budget": {"evaluations": 6},
              "redis": _redis_yaml(tmp_path, redis_server), "progress": "none", "seed": 5, "name": "infotest",
              "output": str(tmp_path / "info"), "metric": "y", "direction": "maximize"}
    cfg = redis_server.config
    before = set(list_networks(cfg.connect()))
    done: list = []
    t = threading.Thread(target=lambda: done.append(rushhpc.sweep(config)))
    t.start()
    try:
        nets = wait_until(lambda: [n for n in list_networks(cfg.connect()) if n not in before
                                   and n.startswith("infotest-")], timeout=60, what="the sweep's network")
        info = wait_until(lambda: Network(nets[0], cfg).sweep_info(), timeout=30, what="its sweep record")
    finally:
        t.join(120)
    assert info.name == "infotest" and info.strategy == "random" and info.metric == "y"
    assert info.direction == "maximize" and info.evaluations == 6 and info.seed == 5
    assert info.config == "<dict>" and info.output == str(tmp_path / "info") and info.started_at > 0
    assert len(done[0]) == 6
    assert Network(nets[0], cfg).sweep_info() is None  # deleted with the network at the end


def test_python_sweep_takes_a_function(tmp_path, redis_server):
    import rushhpc

    offset = 3.0

    def shifted(a, b=0):  # defined here: not importable, so it travels to the workers pickled by value
        return {"y": (a - offset) ** 2 + b}

    df = rushhpc.sweep({"objective": shifted, "space": {"a": {"type": "float", "low": 0, "high": 6}, "b": 1},
                        "strategy": "grid", "budget": None, "redis": _redis_yaml(tmp_path, redis_server),
                        "output": str(tmp_path / "fn"), "progress": "none", "workers": {"n": 2}})
    assert list(df["a"]) == [0.0, 1.5, 3.0, 4.5, 6.0] and list(df["y"]) == [10.0, 3.25, 1.0, 3.25, 10.0]
    assert df.attrs["best"]["params"] == {"a": 3.0, "b": 1}
    resolved = yaml.safe_load((tmp_path / "fn" / "config.yaml").read_text())
    assert resolved["objective"].endswith(":test_python_sweep_takes_a_function.<locals>.shifted")
    with pytest.raises(rushhpc.RushConfigError, match=r"<dict>: space: the objective .*shifted\(a, b=0\) needs a"):
        rushhpc.sweep({"objective": shifted, "space": {"b": 1}, "budget": 1, "output": str(tmp_path / "no")})

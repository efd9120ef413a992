"""ASHA and Hyperband through the real CLI, killed and resumed (issue 19, part 1): ``rushhpc sweep --resume`` after SIGKILL of the
manager's process group re-evaluates nothing that finished, and the resumed sweep still obeys the rule.

The resumed run's fresh network gets the ASHA state from the journal before its workers start (each finished
result in its rung's ranking, each configuration's parameters, each evaluation above rung 0 counted as its
configuration's promotion, the evaluations and fidelity spent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pandas as pd
import psutil
import pytest
import yaml
from support import wait_until
from support.asha_checks import check_promotions, checkpoint_objective
from support.sweeps import journal, run, sweep_cmd

from rushhpc.sweeps.strategies.asha import rungs

OBJECTIVE = checkpoint_objective(0.06)

ETA, FMIN, FMAX, EVALS = 3, 1, 27, 60


def _write(tmp_path, redis_server, strategy: str) -> None:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    pw = tmp_path / "redis.pw"
    pw.write_text(redis_server.password + "\n")
    pw.chmod(0o600)
    doc = {
        "objective": "objective.py:train", "metric": "loss", "direction": "minimize",
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1, "log": True}, "width": {"type": "int", "low": 1, "high": 6}},
        "fidelity": {"name": "epochs", "min": FMIN, "max": FMAX}, "strategy": {"name": strategy, "eta": ETA},
        "budget": {"evaluations": EVALS}, "seed": 3, "output": "runs/out",
        "workers": {"n": 3, "launcher": "local", "heartbeat_period": 1, "heartbeat_expire": 3},
        "redis": {"url": f"redis://127.0.0.1:{redis_server.port}/0", "password_file": str(pw)},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the manager's whole process group; every process it started must be gone after."""
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=20)
    for c in alive:
        c.kill()
    assert not alive, f"left behind after the manager's group was killed: {[c.pid for c in alive]}"


def _calls(tmp_path) -> list[tuple[str, int]]:
    p = tmp_path / "calls.jsonl"
    return [(d["config"], d["epochs"]) for d in map(json.loads, p.read_text().splitlines())] if p.exists() else []


@pytest.mark.parametrize("strategy", ["asha", "hyperband"])
def test_asha_resume_after_sigkill_reevaluates_nothing_finished(tmp_path, redis_server, strategy):
    _write(tmp_path, redis_server, strategy)
    env = dict(os.environ, ASHA_CALLS=str(tmp_path / "calls.jsonl"))
    proc = subprocess.Popen(sweep_cmd("sweep.yaml"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    out = tmp_path / "runs" / "out"
    try:
        wait_until(lambda: len(journal(out)) >= 20 or proc.poll() is not None, 90, what="20 results in the journal")
        assert proc.poll() is None, "the sweep ended before it could be killed"
        promoted_before = [r for r in journal(out) if r.get("rung", 0) > r.get("bracket", 0)]
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    before = journal(out)
    assert 20 <= len(before) < EVALS and promoted_before
    done_before = {(r["config"], r["rung"]) for r in before if r["state"] == "finished"}

    res = run(tmp_path, "sweep.yaml", "--resume", env={"ASHA_CALLS": str(tmp_path / "calls.jsonl")}, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "resuming: " in res.stderr
    df = pd.read_csv(out / "results.csv")
    # the budget counts both runs' evaluations
    assert len(df) == EVALS and (df["state"] == "finished").all()
    # no configuration finished twice at one rung, and none of the results before the kill was run again
    assert not df.duplicated(["config", "rung"]).any()
    fids = rungs(FMIN, FMAX, ETA)
    calls = _calls(tmp_path)
    for config, rung in done_before:
        assert calls.count((config, fids[rung])) == 1, f"{config} at rung {rung} evaluated again after the resume"
    assert {(c, r) for c, r in zip(df["config"], df["rung"])} >= done_before
    # every promotion, before and after the kill, obeyed the rule at its claim
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col]) if df[col].dtype == object else df[col]
    assert check_promotions(df, "loss", "minimize", ETA, fids, found=False) >= EVALS // 6
    low = df["bracket"] if strategy == "hyperband" else 0
    assert (df[df["rung"] > low]["config"].isin(df[df["rung"] == low]["config"])).all()
    # the resumed run promoted configurations whose lower rung finished before the kill (the seeded rankings)
    recs = journal(out)
    first = {(r["config"], r["rung"]): r["network"] for r in recs}
    later = [r for r in recs if r["network"] != recs[0]["network"]]
    assert any(r["rung"] > r.get("bracket", 0) and first[(r["config"], r["rung"] - 1)] == recs[0]["network"] for r in later)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["evaluations"] == EVALS and summary["fidelity_spent"] > 0

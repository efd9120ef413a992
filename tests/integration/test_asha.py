"""ASHA (issue 19, part 1) on a real Redis with 4 local workers, checked from the results alone.

- every promotion obeyed the rule at the moment of its claim: its configuration was in the top floor(n/eta)
  of the n results of the lower rung finished by the promoted evaluation's ``started_at`` (the claim's
  Redis time);
- no configuration is evaluated twice at one rung, and each rung above the lowest follows the one below;
- each promoted evaluation found the checkpoint its configuration wrote at the lower rung;
- the fidelity spent is well under the configurations times ``max``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from support.asha_checks import check_promotions, checkpoint_objective

import rushhpc
from rushhpc.sweeps.strategies.asha import rungs

OBJECTIVE = checkpoint_objective(0.003)

ETA, FMIN, FMAX = 3, 1, 27


def _sweep(tmp_path: Path, redis_server, metric: str, direction: str, evaluations: int | None,
           strategy: str = "asha", budget: dict | None = None, sampler: str = "random") -> pd.DataFrame:
    (tmp_path / "asha_objective.py").write_text(OBJECTIVE)
    pw = tmp_path / "redis.pw"
    pw.write_text(redis_server.password)
    os.chmod(pw, 0o600)
    df = rushhpc.sweep({
        "objective": str(tmp_path / "asha_objective.py") + ":train", "metric": metric, "direction": direction,
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1, "log": True}, "width": {"type": "int", "low": 1, "high": 6}},
        "fidelity": {"name": "epochs", "min": FMIN, "max": FMAX}, "strategy": {"name": strategy, "eta": ETA, "sampler": sampler},
        "budget": budget or {"evaluations": evaluations}, "workers": {"n": 4, "launcher": "local"}, "progress": "none", "seed": 7,
        "redis": {"url": f"redis://127.0.0.1:{redis_server.port}", "password_file": str(pw)},
        "output": str(tmp_path / "out"),
    })
    assert df.attrs["status"] == "completed", df.attrs
    return df


def _check_promotions(df: pd.DataFrame, metric: str, direction: str) -> int:
    return check_promotions(df, metric, direction, ETA, rungs(FMIN, FMAX, ETA))


@pytest.mark.parametrize("metric, direction", [("loss", "minimize"), ("score", "maximize")])
def test_asha_promotions_follow_the_rule_and_resume_from_checkpoints(tmp_path, redis_server, metric, direction):
    evaluations = 90 if direction == "minimize" else 40
    df = _sweep(tmp_path, redis_server, metric, direction, evaluations)
    assert len(df) == evaluations and (df["state"] == "finished").all()
    # one evaluation per configuration and rung
    assert not df.duplicated(["config", "rung"]).any()
    # the lowest rung starts from scratch; every promotion checked against the rule at its claim
    assert (df[df["rung"] == 0]["found"] == 0).all()
    assert (df[df["rung"] == 0]["fidelity"] == FMIN).all()
    promoted = _check_promotions(df, metric, direction)
    assert promoted >= evaluations // 6
    # the checkpoints are one folder per configuration under the output folder
    ckpt = tmp_path / "out" / "checkpoints"
    assert {p.name for p in ckpt.iterdir()} == set(df["config"])
    # early stopping pays: far less fidelity than every configuration at max
    assert df["fidelity"].sum() < 0.5 * df["config"].nunique() * FMAX
    # best.json: the best result at the highest rung reached
    best = df.attrs["best"]
    top = df[df["rung"] == df["rung"].max()]
    want = top[metric].min() if direction == "minimize" else top[metric].max()
    assert best["rung"] == df["rung"].max() and best["value"] == pytest.approx(want)


def test_hyperband_runs_successive_halving_in_each_bracket(tmp_path, redis_server):
    df = _sweep(tmp_path, redis_server, "loss", "minimize", 90, strategy="hyperband")
    assert len(df) == 90 and (df["state"] == "finished").all()
    assert not df.duplicated(["config", "rung"]).any()
    # a configuration stays in its bracket, which starts at rung = bracket, from scratch at that rung's fidelity
    fids = rungs(FMIN, FMAX, ETA)
    assert (df.groupby("config")["bracket"].nunique() == 1).all()
    first = df.sort_values("rung").groupby("config").first()
    assert (first["rung"] == first["bracket"]).all() and (first["found"] == 0).all()
    assert (first["fidelity"] == [fids[b] for b in first["bracket"]]).all()
    # Hyperband's proportions: most new configurations in bracket 0, the others used too
    counts = first["bracket"].value_counts()
    assert counts.idxmax() == 0 and len(counts) >= 2
    # the rule, per bracket and rung, at each claim; each promotion found its lower rung's checkpoint
    assert check_promotions(df, "loss", "minimize", ETA, fids) >= 5


def test_budget_fidelity_ends_the_sweep_without_a_claim_beyond_it(tmp_path, redis_server):
    df = _sweep(tmp_path, redis_server, "loss", "minimize", None, budget={"fidelity": 150})
    assert df.attrs["status"] == "completed" and "fidelity" in df.attrs["reason"], df.attrs
    fids = rungs(FMIN, FMAX, ETA)
    # the objective resumes from its checkpoint: a promotion spends the increment over the rung below
    spent = sum(f - (fids[r - 1] if r > 0 else 0) for f, r in zip(df["fidelity"], df["rung"]))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert spent == pytest.approx(summary["fidelity_spent"]) and 150 - FMAX < spent <= 150
    assert summary["budget"]["fidelity"] == 150
    assert check_promotions(df, "loss", "minimize", ETA, fids) >= 3


def test_tpe_sampler_keeps_the_rule(tmp_path, redis_server):
    pytest.importorskip("optuna")
    df = _sweep(tmp_path, redis_server, "loss", "minimize", 70, sampler="tpe")
    assert len(df) == 70 and (df["state"] == "finished").all()
    assert not df.duplicated(["config", "rung"]).any()
    assert check_promotions(df, "loss", "minimize", ETA, rungs(FMIN, FMAX, ETA)) >= 70 // 6

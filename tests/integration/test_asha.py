"""ASHA (issue 19, part 1) on a real Redis with 4 local workers, checked from the results alone.

- every promotion obeyed the rule at the moment of its claim: its configuration was in the top floor(n/eta)
  of the n results of the lower rung finished by the promoted evaluation's ``started_at`` (the claim's
  Redis time);
- no configuration is evaluated twice at one rung, and each rung above the lowest follows the one below;
- each promoted evaluation found the checkpoint its configuration wrote at the lower rung;
- the fidelity spent is well under the configurations times ``max``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import rushhpc
from rushhpc.sweeps.strategies.asha import rungs

OBJECTIVE = '''
import json
import math
import os
import time


def train(lr, width, epochs, checkpoint_dir=None):
    path = os.path.join(checkpoint_dir, "state.json")
    found = 0
    if os.path.exists(path):
        with open(path) as f:
            found = json.load(f)["epochs"]
    time.sleep(0.003 * (epochs - found))  # the epochs left: workers overlap
    with open(path, "w") as f:
        json.dump({"epochs": epochs}, f)
    loss = (math.log10(lr) + 2) ** 2 + abs(width - 3) / 4 + 1 / (1 + epochs)
    return {"loss": loss, "score": -loss, "found": found}
'''

ETA, FMIN, FMAX = 3, 1, 27


def _sweep(tmp_path: Path, redis_server, metric: str, direction: str, evaluations: int) -> pd.DataFrame:
    (tmp_path / "asha_objective.py").write_text(OBJECTIVE)
    pw = tmp_path / "redis.pw"
    pw.write_text(redis_server.password)
    os.chmod(pw, 0o600)
    df = rushhpc.sweep({
        "objective": str(tmp_path / "asha_objective.py") + ":train", "metric": metric, "direction": direction,
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1, "log": True}, "width": {"type": "int", "low": 1, "high": 6}},
        "fidelity": {"name": "epochs", "min": FMIN, "max": FMAX}, "strategy": {"name": "asha", "eta": ETA},
        "budget": {"evaluations": evaluations}, "workers": {"n": 4, "launcher": "local"}, "progress": "none", "seed": 7,
        "redis": {"url": f"redis://127.0.0.1:{redis_server.port}", "password_file": str(pw)},
        "output": str(tmp_path / "out"),
    })
    assert df.attrs["status"] == "completed", df.attrs
    return df


def _in_top(row, lower: pd.DataFrame, metric: str, sign: float) -> str:
    """'' when ``row``'s configuration is in the top floor(n/eta) of these n results of the rung below, else why not."""
    n = len(lower)
    top = n // ETA
    mine = lower[lower["config"] == row.config]
    if top < 1:
        return f"config {row.config} promoted to rung {row.rung} when the rung below had {n} results"
    if len(mine) != 1:
        return f"config {row.config} at rung {row.rung} without a finished result at the rung below"
    if sign * float(mine[metric].iloc[0]) > sorted(sign * lower[metric])[top - 1]:
        return f"config {row.config}: promoted to rung {row.rung} though not in the top {top} of {n}"
    return ""


def _check_promotions(df: pd.DataFrame, metric: str, direction: str) -> int:
    """Every evaluation above the lowest rung against the lower rung's results finished by its claim; the count."""
    fids = rungs(FMIN, FMAX, ETA)
    sign = 1.0 if direction == "minimize" else -1.0
    fin = df[df["state"] == "finished"]
    promoted = 0
    for row in fin[fin["rung"] > 0].itertuples():
        below = fin[fin["rung"] == row.rung - 1]
        # the Redis clock has microseconds: a result finished in the claim's microsecond may have come before or
        # after it, so the rule must hold with or without such results
        verdicts = [_in_top(row, below[before], metric, sign)
                    for before in (below["finished_at"] < row.started_at, below["finished_at"] <= row.started_at)]
        assert "" in verdicts, verdicts[0]
        assert row.fidelity == fids[row.rung]
        assert row.found == fids[row.rung - 1], f"config {row.config} did not find its rung {row.rung - 1} checkpoint"
        promoted += 1
    return promoted


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

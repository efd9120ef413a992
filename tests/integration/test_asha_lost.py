"""A lost worker's promotion goes back (issue 19, part 1), end to end: a worker dies (SIGKILL) while it evaluates
a promotion; its heartbeat expires, the task fails as lost (a failed evaluation in the results), and with
``retries: 1`` a later claim promotes the configuration again, checked against the rule at that claim.
"""

from __future__ import annotations

import os

import pandas as pd
from support.asha_checks import check_promotions

import rushhpc
from rushhpc.sweeps.strategies.asha import rungs

OBJECTIVE = '''
import os
import signal
import time


def train(x, epochs, checkpoint_dir=None):
    time.sleep(0.02 * epochs)
    marker = os.path.join(os.path.dirname(os.path.dirname(checkpoint_dir)), "killed")
    if epochs == 3 and x < 0.3 and not os.path.exists(marker):  # a good configuration's first promotion
        with open(marker, "w") as f:
            f.write(os.path.basename(checkpoint_dir))
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-evaluation
    return {"loss": x + 1 / (1 + epochs)}
'''

ETA, FMIN, FMAX = 3, 1, 9


def test_a_lost_promotion_is_promoted_again(tmp_path, redis_server):
    (tmp_path / "lost_objective.py").write_text(OBJECTIVE)
    pw = tmp_path / "redis.pw"
    pw.write_text(redis_server.password)
    os.chmod(pw, 0o600)
    df = rushhpc.sweep({
        "objective": str(tmp_path / "lost_objective.py") + ":train", "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "fidelity": {"name": "epochs", "min": FMIN, "max": FMAX}, "strategy": {"name": "asha", "eta": ETA},
        "budget": {"evaluations": 60}, "retries": 1, "progress": "none", "seed": 11,
        "workers": {"n": 3, "launcher": "local", "heartbeat_period": 1, "heartbeat_expire": 3},
        "redis": {"url": f"redis://127.0.0.1:{redis_server.port}", "password_file": str(pw)},
        "output": str(tmp_path / "out"),
    })
    assert df.attrs["status"] == "completed", df.attrs
    marker = tmp_path / "out" / "killed"
    # 60 evaluations at random: a configuration with x < 0.3 is among the best third of rung 0 in all but about 1 in
    # 1,000 runs; one never promoted means the promotions are broken, not bad luck, so it fails rather than skips
    assert marker.exists(), "no configuration with x < 0.3 was promoted: the kill this test is about never happened"
    lost = marker.read_text()
    mine = df[(df["config"] == lost) & (df["rung"] == 1)].sort_values("started_at")
    assert list(mine["state"]) == ["failed", "finished"], mine[["state", "error", "started_at"]]
    assert "lost" in str(mine["error"].iloc[0])
    # no configuration finished twice at one rung; every promotion, the second one included, obeyed the rule
    fin = df[df["state"] == "finished"]
    assert not fin.duplicated(["config", "rung"]).any()
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col]) if df[col].dtype == object else df[col]
    assert check_promotions(df, "loss", "minimize", ETA, rungs(FMIN, FMAX, ETA), found=False) >= 5

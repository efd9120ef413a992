"""ASHA's rule checked from the results alone (tests/integration/test_asha*.py).

Every evaluation above its bracket's lowest rung was claimed (``started_at``) when its configuration was in the
top ``floor(n/eta)`` of the ``n`` results of the rung below (of its bracket) finished by then.
"""

from __future__ import annotations

import pandas as pd

# An objective that resumes from its checkpoint: it sleeps SLEEP seconds per epoch left (so workers overlap), reports
# the epochs it found in its checkpoint (``found``), and with ASHA_CALLS set appends one line per evaluation that ran
# to its end. A test writes it with checkpoint_objective(sleep) into its tmp_path.
_OBJECTIVE = '''
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
    time.sleep(SLEEP * (epochs - found))
    with open(path, "w") as f:
        json.dump({"epochs": epochs}, f)
    if "ASHA_CALLS" in os.environ:
        with open(os.environ["ASHA_CALLS"], "a") as f:
            f.write(json.dumps({"config": os.path.basename(checkpoint_dir), "epochs": epochs}) + "\\n")
    loss = (math.log10(lr) + 2) ** 2 + abs(width - 3) / 4 + 1 / (1 + epochs)
    return {"loss": loss, "score": -loss, "found": found}
'''


def checkpoint_objective(sleep_per_epoch: float) -> str:
    """The source of the checkpointing test objective ``train(lr, width, epochs, checkpoint_dir)``."""
    return _OBJECTIVE.replace("SLEEP", repr(sleep_per_epoch))


def _in_top(row, lower: pd.DataFrame, metric: str, sign: float, eta: int) -> str:
    """'' when ``row``'s configuration is in the top floor(n/eta) of these n results of the rung below, else why not."""
    n = len(lower)
    top = n // eta
    mine = lower[lower["config"] == row.config]
    if top < 1:
        return f"config {row.config} promoted to rung {row.rung} when the rung below had {n} results"
    if len(mine) != 1:
        return f"config {row.config} at rung {row.rung} without a finished result at the rung below"
    if sign * float(mine[metric].iloc[0]) > sorted(sign * lower[metric])[top - 1]:
        return f"config {row.config}: promoted to rung {row.rung} though not in the top {top} of {n}"
    return ""


def check_promotions(df: pd.DataFrame, metric: str, direction: str, eta: int, fids: list[int],
                     found: bool = True) -> int:
    """Every finished evaluation above its bracket's lowest rung against the lower rung's results finished by its
    claim (with ``found``: it found the lower rung's checkpoint); the number of promotions."""
    sign = 1.0 if direction == "minimize" else -1.0
    fin = df[df["state"] == "finished"]
    has_bracket = "bracket" in fin.columns
    promoted = 0
    for row in fin.itertuples():
        low = int(row.bracket) if has_bracket else 0
        if row.rung <= low:
            continue
        below = fin[fin["rung"] == row.rung - 1]
        if has_bracket:
            below = below[below["bracket"] == row.bracket]
        # the Redis clock has microseconds: a result finished in the claim's microsecond may have come before or
        # after it, so the rule must hold with or without such results
        verdicts = [_in_top(row, below[before], metric, sign, eta)
                    for before in (below["finished_at"] < row.started_at, below["finished_at"] <= row.started_at)]
        assert "" in verdicts, verdicts[0]
        assert row.fidelity == fids[row.rung]
        if found:
            assert row.found == fids[row.rung - 1], f"config {row.config} did not find its rung {row.rung - 1} checkpoint"
        promoted += 1
    return promoted

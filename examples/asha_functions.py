"""An objective for the asha example: a learning curve that resumes from its checkpoint.

``train`` receives the fidelity (``epochs``) and ``checkpoint_dir``, the same folder at every rung of a
configuration: it reads how far the configuration trained, trains only the remaining epochs, and writes
its state back. ``resumed_from`` in the results says how many epochs it found.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


def train(lr: float, layers: int, epochs: int, checkpoint_dir: str | None = None) -> dict:
    state = {"epochs": 0, "loss": 1.0}
    ckpt = Path(checkpoint_dir) / "state.json" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state = json.loads(ckpt.read_text())
    resumed_from = state["epochs"]
    # the loss of this configuration after `epochs` epochs: a curve towards a floor set by lr and layers
    floor = (math.log10(lr) + 2.5) ** 2 / 10 + abs(layers - 4) / 20
    for e in range(resumed_from + 1, epochs + 1):
        time.sleep(0.002)  # one epoch
        state = {"epochs": e, "loss": floor + math.exp(-e / 4)}
    if ckpt is not None:
        ckpt.write_text(json.dumps(state))
    return {"loss": state["loss"], "resumed_from": resumed_from}

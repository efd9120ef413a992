"""Objectives for the sweep examples (``objective: sweep_functions.py:NAME`` in the YAML files).

An objective takes the parameters as keyword arguments and returns a number (stored as output
``y``, or the sweep's ``metric``) or a dict of outputs that holds the metric.
"""

from __future__ import annotations

import math
import time


def branin(x1: float, x2: float) -> float:
    """The Branin function; its global minimum is 0.397887 at three points."""
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def train(lr: float, layers: int, optimizer: str, momentum: float | None = None, dropout: float = 0.0,
          epochs: int = 10, seconds: float = 0.05) -> dict:
    """A stand-in for training a model: a smooth 'validation loss' with a known best region
    (lr near 3e-3, 3 layers, sgd with momentum 0.9 or adam), and a little sleep per epoch."""
    time.sleep(seconds)
    loss = (math.log10(lr) + 2.5) ** 2 + 0.1 * (layers - 3) ** 2 + 0.5 * dropout
    if optimizer == "sgd":
        loss += 2 * (momentum - 0.9) ** 2 + 0.05
    loss += 0.3 / epochs
    return {"loss": loss, "accuracy": 1 / (1 + loss), "epochs_run": epochs}

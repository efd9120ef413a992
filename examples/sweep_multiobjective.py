"""Objectives of examples/sweep_multiobjective.yaml: two metrics to minimise at once, and an output bounded
by a constraint.

``zdt1`` is the ZDT1 test problem (Zitzler, Deb and Thiele 2000) on ``x1..x4`` in [0, 1]: ``loss`` and
``latency`` pull against each other, their Pareto front is ``latency = 1 - sqrt(loss)`` (at
``x2 = x3 = x4 = 0``). ``memory_gb`` stands for a resource the configuration needs: the sweep file bounds it
(``constraints: {memory_gb: {max: 16}}``), so configurations with a large ``x1`` are infeasible: marked in
results.csv, never on the front.
"""

from __future__ import annotations

import math


def zdt1(x1: float, x2: float, x3: float, x4: float) -> dict[str, float]:
    g = 1 + 9 * (x2 + x3 + x4) / 3
    loss = x1
    latency = g * (1 - math.sqrt(loss / g))
    return {"loss": loss, "latency": latency, "memory_gb": 4 + 16 * x1 + 2 * x2}

"""``random``: coordinates from ``numpy.random.default_rng([seed, i])``, mapped to the space (no options)."""

from __future__ import annotations

from typing import Any

from rushhpc.sweeps.designs import Design
from rushhpc.sweeps.strategies import DESIGN, Strategy, register


class RandomDesign(Design):
    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        import numpy as np

        d = self.space.n_dims
        return [self.space.from_unit(np.random.default_rng([self.seed, i]).random(d)) for i in range(lo, hi)]


STRATEGY = register(Strategy("random", DESIGN, design=RandomDesign, module=__name__))

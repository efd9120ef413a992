"""``lhs``: a Latin hypercube of ``budget.evaluations`` rows (scipy ``qmc.LatinHypercube``); needs scipy.

Its points depend on the budget: a resumed sweep keeps budget.evaluations.
"""

from __future__ import annotations

from typing import Any

from rushhpc.sweeps.designs import Design
from rushhpc.sweeps.strategies import DESIGN, Strategy, _qmc, register


class LhsDesign(Design):
    def __init__(self, *args: Any):
        super().__init__(*args)
        if self.evaluations is None:
            raise ValueError("a Latin hypercube needs budget.evaluations")
        self.size: int = self.evaluations
        self._u: Any = None

    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        if self._u is None:
            import numpy as np
            from scipy.stats import qmc

            d = max(self.space.n_dims, 1)
            try:
                engine = qmc.LatinHypercube(d, rng=np.random.default_rng(self.seed))
            except TypeError:
                engine = qmc.LatinHypercube(d, seed=np.random.default_rng(self.seed))
            self._u = engine.random(self.size)
        return [self.space.from_unit(self._u[i]) for i in range(lo, min(hi, self.size))]


STRATEGY = register(Strategy(
    "lhs", DESIGN, requires="scipy", install=_qmc.SCIPY_HINT, design=LhsDesign, budget_fixes_points=True,
    needs_evaluations="strategy lhs needs budget.evaluations (the size of the Latin hypercube)", module=__name__))

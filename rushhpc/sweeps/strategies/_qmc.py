"""The quasi-random sequences shared by ``sobol`` and ``halton``: scipy's ``qmc``, scrambled with the seed,
fast-forwarded to the first index asked."""

from __future__ import annotations

import warnings
from typing import Any

from rushhpc.sweeps.designs import Design
from rushhpc.sweeps.strategies import Checks

SCIPY_HINT = "pip install 'rushhpc[sweep]'"


def _engine(name: str, d: int, scramble: bool, seed: int) -> Any:
    import numpy as np
    from scipy.stats import qmc

    cls = qmc.Sobol if name == "sobol" else qmc.Halton
    try:
        return cls(d, scramble=scramble, rng=np.random.default_rng(seed))
    except TypeError:  # scipy < 1.15 calls it seed
        return cls(d, scramble=scramble, seed=np.random.default_rng(seed))


class QmcDesign(Design):
    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        d = self.space.n_dims
        if d == 0:
            return [self.space.from_unit([]) for _ in range(lo, hi)]
        engine = _engine(self.strategy["name"], d, self.strategy.get("scramble", True), self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Sobol's balance warning for n not a power of 2
            if lo:
                engine.fast_forward(lo)
            u = engine.random(hi - lo)
        return [self.space.from_unit(row) for row in u]


def options(c: Checks, raw: dict[str, Any]) -> dict[str, Any]:
    return {"scramble": c.bool_("strategy.scramble", raw.get("scramble", True))}

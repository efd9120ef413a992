"""Designs: the strategies whose points are fixed by the seed and an index.

Point ``i`` of a design is a pure function of (space, strategy, seed, i): the manager
hands out indices, so the set of points evaluated for a budget of N is points 0..N-1,
whatever the number of workers, their speed, failures or resumes.

- ``random``: coordinates from ``numpy.random.default_rng([seed, i])``, mapped to the space.
- ``sobol``, ``halton``: scipy's ``qmc`` sequence (scrambled with the seed), fast-forwarded to i.
- ``lhs``: a Latin hypercube of ``budget.evaluations`` rows (scipy ``qmc.LatinHypercube``).
- ``grid``: every distinct grid point once, product order (or shuffled with the seed).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rushhpc.sweeps.space import Space


class Design:
    """Points by index. ``size`` is the number of distinct points (None: unbounded)."""

    size: int | None = None

    def __init__(self, space: Space, strategy: dict, seed: int, evaluations: int | None):
        self.space = space
        self.strategy = strategy
        self.seed = seed
        self.evaluations = evaluations

    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        raise NotImplementedError


class RandomDesign(Design):
    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        d = self.space.n_dims
        return [self.space.from_unit(np.random.default_rng([self.seed, i]).random(d)) for i in range(lo, hi)]


def _qmc_engine(name: str, d: int, scramble: bool, seed: int) -> Any:
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
        engine = _qmc_engine(self.strategy["name"], d, self.strategy.get("scramble", True), self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Sobol's balance warning for n not a power of 2
            if lo:
                engine.fast_forward(lo)
            u = engine.random(hi - lo)
        return [self.space.from_unit(row) for row in u]


class LhsDesign(Design):
    def __init__(self, *args: Any):
        super().__init__(*args)
        if self.evaluations is None:
            raise ValueError("a Latin hypercube needs budget.evaluations")
        self.size: int = self.evaluations
        self._u: Any = None

    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        if self._u is None:
            from scipy.stats import qmc

            d = max(self.space.n_dims, 1)
            try:
                engine = qmc.LatinHypercube(d, rng=np.random.default_rng(self.seed))
            except TypeError:
                engine = qmc.LatinHypercube(d, seed=np.random.default_rng(self.seed))
            self._u = engine.random(self.size)
        return [self.space.from_unit(self._u[i]) for i in range(lo, min(hi, self.size))]


class GridDesign(Design):
    def __init__(self, *args: Any):
        super().__init__(*args)
        self._points = self.space.grid(self.strategy["resolution"], self.strategy.get("shuffle", False), self.seed)
        self.size = len(self._points)

    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        return [dict(p) for p in self._points[lo:hi]]


def make_design(space: Space, strategy: dict, seed: int, evaluations: int | None) -> Design:
    cls = {"random": RandomDesign, "sobol": QmcDesign, "halton": QmcDesign, "lhs": LhsDesign, "grid": GridDesign}[
        strategy["name"]
    ]
    return cls(space, strategy, seed, evaluations)

"""Designs: the strategies whose points are fixed by the seed and an index.

Point ``i`` of a design is a pure function of (space, strategy, seed, i): the manager
hands out indices, so the set of points evaluated for a budget of N is points 0..N-1,
whatever the number of workers, their speed, failures or resumes. Each design strategy
(`rushhpc.sweeps.strategies`: random, grid, sobol, halton, lhs) defines its `Design`;
`rushhpc.sweeps.strategies.make_design` builds the one a sweep uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rushhpc.sweeps.space import Space


class Design:
    """Points by index. ``size`` is the number of distinct points (None: unbounded).

    Example:
        >>> from rushhpc.sweeps.strategies import make_design
        >>> make_design(Space(space), {"name": "sobol", "scramble": True}, seed=1, evaluations=8).points(0, 2)  # doctest: +SKIP
    """

    size: int | None = None

    def __init__(self, space: Space, strategy: dict, seed: int, evaluations: int | None):
        self.space = space
        self.strategy = strategy
        self.seed = seed
        self.evaluations = evaluations

    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        raise NotImplementedError

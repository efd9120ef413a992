"""``grid``: every distinct grid point once, in product order (or shuffled with the seed).

Options: ``resolution`` (values per float parameter, default 5, at least 2; a parameter's own
``resolution`` wins), ``shuffle`` (default false). The grid is finite: the budget may be left out.
"""

from __future__ import annotations

from typing import Any

from rushhpc import defaults
from rushhpc.sweeps.designs import Design
from rushhpc.sweeps.strategies import DESIGN, Checks, Strategy, register


class GridDesign(Design):
    def __init__(self, *args: Any):
        super().__init__(*args)
        self._points = self.space.grid(self.strategy["resolution"], self.strategy.get("shuffle", False), self.seed)
        self.size = len(self._points)

    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        return [dict(p) for p in self._points[lo:hi]]


def options(c: Checks, raw: dict[str, Any]) -> dict[str, Any]:
    return {"resolution": c.int_("strategy.resolution", raw.get("resolution", defaults.SWEEP_GRID_RESOLUTION),
                                 minimum=2),
            "shuffle": c.bool_("strategy.shuffle", raw.get("shuffle", False))}


def check(c: Checks, strategy: dict[str, Any], space: dict[str, dict]) -> None:
    from rushhpc.sweeps.space import grid_size

    n = grid_size(space, strategy["resolution"])
    if n > defaults.SWEEP_MAX_GRID_POINTS:
        raise c.fail("strategy.resolution", f"the grid has {n:,} points, more than {defaults.SWEEP_MAX_GRID_POINTS:,}; "
                     "lower the resolution (or space.NAME.resolution), or use sobol")


STRATEGY = register(Strategy("grid", DESIGN, keys=("resolution", "shuffle"), options=options, check=check,
                             design=GridDesign, finite=True, module=__name__))

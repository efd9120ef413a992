"""The search space: parameters, conditions, the unit cube -> values map, and the grid.

A point is a dict ``{name: value}`` of the *active* parameters, in the order of the sweep
file. A parameter with ``when`` is active only when every condition holds (the tested
parameter is active and has one of the listed values); an inactive parameter is not passed
to the objective and is empty in the results table.

Every non-fixed parameter takes one coordinate of the unit cube, conditional or not, so a
point's coordinates never depend on which parameters happen to be active.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np


def _key(v: Any) -> tuple:
    return (type(v).__name__, v)


def topological_order(space: dict[str, dict]) -> list[str]:
    """Parameters ordered so that each comes after the parameters its condition tests
    (the config validation has refused cycles)."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        for ref in space[n].get("when") or {}:
            visit(ref)
        done.append(n)

    for n in space:
        visit(n)
    return done


def _lattice(low: float, high: float, step: float) -> int:
    """Number of values low, low + step, ... <= high (float steps tolerate rounding)."""
    return int(math.floor((high - low) / step + 1e-9)) + 1


def _clean(x: float) -> float:
    """low + k * step without the 0.30000000000000004 noise."""
    return float(f"{x:.12g}")


def from_unit(p: dict, u: float) -> Any:
    """One parameter's value for a coordinate u in [0, 1)."""
    t = p["type"]
    if t == "fixed":
        return p["value"]
    if t == "categorical":
        k = len(p["choices"])
        return p["choices"][min(int(u * k), k - 1)]
    low, high, step, log = p["low"], p["high"], p.get("step"), p.get("log")
    if t == "float":
        if step:
            n = _lattice(low, high, step)
            return _clean(low + min(int(u * n), n - 1) * step)
        if log:
            v = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            v = low + u * (high - low)
        return float(min(max(v, low), high))
    # int
    if log:
        lo, hi = math.log(low - 0.5) if low > 0.5 else math.log(low), math.log(high + 0.5)
        v = int(round(math.exp(lo + u * (hi - lo))))
        return int(min(max(v, low), high))
    step = step or 1
    n = (high - low) // step + 1
    return int(low + min(int(u * n), n - 1) * step)


def grid_values(p: dict, resolution: int) -> list[Any]:
    """The values a parameter takes in a grid: every choice, the fixed value, or
    ``resolution`` (or the parameter's own ``resolution``) evenly spaced numbers."""
    t = p["type"]
    if t == "fixed":
        return [p["value"]]
    if t == "categorical":
        return list(p["choices"])
    r = p.get("resolution") or resolution
    low, high, step, log = p["low"], p["high"], p.get("step"), p.get("log")
    if t == "float":
        if step:
            n = _lattice(low, high, step)
            idx = range(n) if n <= r else sorted({int(round(i)) for i in np.linspace(0, n - 1, r)})
            return [_clean(low + i * step) for i in idx]
        xs = np.geomspace(low, high, r) if log else np.linspace(low, high, r)
        return [float(x) for x in xs]
    if log:
        vals = sorted({int(round(x)) for x in np.geomspace(low, high, r)})
        return [v for v in vals if low <= v <= high]
    step = step or 1
    n = (high - low) // step + 1
    idx = range(n) if n <= r else sorted({int(round(i)) for i in np.linspace(0, n - 1, r)})
    return [int(low + i * step) for i in idx]


def grid_size(space: dict[str, dict], resolution: int) -> int:
    """Points of the full product (before inactive parameters are merged)."""
    n = 1
    for p in space.values():
        n *= len(grid_values(p, resolution))
    return n


class Space:
    """The validated ``space`` mapping of a sweep config.

    Example:
        >>> s = Space({"x": {"type": "float", "low": 0, "high": 1}, "k": {"type": "categorical", "choices": ["a", "b"]}})
        >>> s.from_unit([0.5, 0.9])
        {'x': 0.5, 'k': 'b'}
    """

    def __init__(self, spec: dict[str, dict]):
        self.spec = spec
        self.names = list(spec)
        self.order = topological_order(spec)
        self.dims = [n for n, p in spec.items() if p["type"] != "fixed"]

    @property
    def n_dims(self) -> int:
        return len(self.dims)

    def active(self, values: dict[str, Any]) -> dict[str, Any]:
        """The point of the active parameters (declaration order) from values for all of them."""
        on: dict[str, bool] = {}
        for n in self.order:
            cond = self.spec[n].get("when")
            ok = True
            for ref, allowed in (cond or {}).items():
                allowed = allowed if isinstance(allowed, list) else [allowed]
                if not on.get(ref) or _key(values[ref]) not in {_key(a) for a in allowed}:
                    ok = False
                    break
            on[n] = ok
        return {n: values[n] for n in self.names if on[n]}

    def is_active(self, name: str, values: dict[str, Any]) -> bool:
        cond = self.spec[name].get("when")
        if not cond:
            return True
        for ref, allowed in cond.items():
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if ref not in values or _key(values[ref]) not in {_key(a) for a in allowed}:
                return False
        return True

    def from_unit(self, u: Sequence[float] | np.ndarray) -> dict[str, Any]:
        coords = dict(zip(self.dims, u))
        values = {n: from_unit(p, float(coords.get(n, 0.0))) for n, p in self.spec.items()}
        return self.active(values)

    def grid(self, resolution: int, shuffle: bool = False, seed: int = 0) -> list[dict[str, Any]]:
        """Every distinct point of the grid, each once (a point that differs only in inactive
        parameters is the same point), in product order (the first parameter varies slowest),
        or shuffled with ``seed``."""
        axes = [grid_values(self.spec[n], resolution) for n in self.names]
        points: list[dict[str, Any]] = []
        seen: set[tuple] = set()
        for combo in itertools.product(*axes):
            point = self.active(dict(zip(self.names, combo)))
            k = tuple((n, _key(v)) for n, v in point.items())
            if k not in seen:
                seen.add(k)
                points.append(point)
        if shuffle:
            perm = np.random.default_rng(seed).permutation(len(points))
            points = [points[i] for i in perm]
        return points

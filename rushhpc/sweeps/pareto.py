"""Pareto fronts, hypervolume and constraints: pure functions of numbers (no pandas, no Redis).

Several metrics (``metric: [error, latency]``) are compared in *minimisation space*: a metric to
maximise is negated first (`to_min`), so that "better" is "smaller" in every coordinate.

- ``a`` dominates ``b`` when ``a`` is no worse in every metric and better in at least one (`dominates`).
- The front (`non_dominated`) is the set of points no other point dominates; equal points are all kept.
- The hypervolume (`hypervolume`) is the volume of the union of the boxes ``[p, ref]`` of the points
  ``p`` strictly better than the reference point ``ref`` in every metric (points that are not add nothing).
  It is exact for any number of metrics: two by a sweep over the sorted front, more by slicing along
  the last metric (HSO, Zitzler 2001: exponential in the number of metrics, fine for fronts of hundreds
  of points at three or four metrics).
- The default reference point (`reference_point`): per metric, the worst value of the points plus 10 % of
  their range (of the worst value's magnitude when the range is 0; 0.1 when that is 0 too).
- A constraint ``{output: {min: a, max: b}}`` holds when the output is a finite number with
  ``a <= value <= b``; its violation (`violations`) is ``max(a - value, value - b)`` (<= 0 when it holds,
  `math.inf` when the output is missing or not a number), as Optuna reads constraint values.

Example:
    >>> pts = [(1.0, 4.0), (2.0, 2.0), (3.0, 3.0), (4.0, 1.0)]
    >>> non_dominated(pts)
    [0, 1, 3]
    >>> hypervolume([pts[i] for i in (0, 1, 3)], (5.0, 5.0))
    11.0
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

MINIMIZE, MAXIMIZE = "minimize", "maximize"
REFERENCE_MARGIN = 0.1  # the default reference point lies this fraction of the range beyond the worst value

Point = Sequence[float]


def to_min(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    """A point in minimisation space: each metric to maximise negated.

    Example:
        >>> to_min([0.5, 0.9], ["minimize", "maximize"])
        (0.5, -0.9)
    """
    return tuple(float(v) if d == MINIMIZE else -float(v) for v, d in zip(values, directions))


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` dominates ``b`` (minimisation): no worse in every coordinate, better in one.

    Example:
        >>> dominates((1, 2), (1, 3)), dominates((1, 3), (3, 1)), dominates((1, 1), (1, 1))
        (True, False, False)
    """
    better = False
    for x, y in zip(a, b):
        if x > y:
            return False
        if x < y:
            better = True
    return better


def non_dominated(points: Sequence[Point]) -> list[int]:
    """Indices (ascending) of the points no other point dominates (minimisation); duplicates all kept.

    Two metrics: a sort and one sweep (n log n); more: each point against the front so far.

    Example:
        >>> non_dominated([(1, 1), (1, 1), (2, 0), (2, 2)])
        [0, 1, 2]
    """
    n = len(points)
    if n == 0:
        return []
    if len(points[0]) == 2:
        order = sorted(range(n), key=lambda i: (points[i][0], points[i][1]))
        keep: list[int] = []
        best_y = math.inf
        prev: tuple[float, float] | None = None
        for i in order:
            p = (points[i][0], points[i][1])
            if p == prev or p[1] < best_y:  # a duplicate of a kept point, or better in y than all before
                keep.append(i)
                best_y = min(best_y, p[1])
                prev = p
        return sorted(keep)
    front: list[int] = []
    for i in sorted(range(n), key=lambda i: tuple(points[i])):  # a point is dominated only by one before it
        if not any(dominates(points[j], points[i]) for j in front):
            front.append(i)
    return sorted(front)


def _hv2(points: list[tuple[float, ...]], ref: Point) -> float:
    """Two metrics: the staircase's area."""
    vol, best_y = 0.0, ref[1]
    for x, y in sorted(points):
        if y < best_y:
            vol += (ref[0] - x) * (best_y - y)
            best_y = y
    return vol


def _hv(points: list[tuple[float, ...]], ref: Point) -> float:
    d = len(ref)
    if not points:
        return 0.0
    if d == 1:
        return ref[0] - min(p[0] for p in points)
    if d == 2:
        return _hv2(points, ref)
    pts = sorted(points, key=lambda p: p[-1])
    vol = 0.0
    for k, p in enumerate(pts):  # slab between this point's last coordinate and the next's
        top = pts[k + 1][-1] if k + 1 < len(pts) else ref[-1]
        if top > p[-1]:
            below = [q[:-1] for q in pts[: k + 1]]
            front = [below[i] for i in non_dominated(below)]
            vol += _hv(front, ref[:-1]) * (top - p[-1])
    return vol


def hypervolume(points: Sequence[Point], ref: Point) -> float:
    """The volume the points dominate up to ``ref`` (minimisation); only points strictly better than
    ``ref`` in every coordinate count. Exact for any number of coordinates.

    Example:
        >>> hypervolume([(1, 1)], (2, 3))
        2.0
        >>> hypervolume([(1, 1, 1), (0, 2, 2)], (3, 3, 3))
        9.0
    """
    inside = [tuple(float(x) for x in p) for p in points if all(x < r for x, r in zip(p, ref))]
    if not inside:
        return 0.0
    front = [inside[i] for i in non_dominated(inside)]
    front = list(dict.fromkeys(front))  # duplicates add nothing
    return float(_hv(front, tuple(float(r) for r in ref)))


def reference_point(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float] | None:
    """The default reference point, in the metrics' own units: per metric the worst value plus (minimize)
    or minus (maximize) 10 % of the range of the values; of the worst value's magnitude when the range is
    0, and 0.1 when that is 0 too. None without values.

    Example:
        >>> reference_point([(1.0, 10.0), (3.0, 20.0)], ["minimize", "maximize"])
        [3.2, 9.0]
        >>> reference_point([(2.0, 0.0)], ["minimize", "minimize"])
        [2.2, 0.1]
    """
    if not values:
        return None
    ref = []
    for i, d in enumerate(directions):
        col = [float(v[i]) for v in values]
        lo, hi = min(col), max(col)
        worst = hi if d == MINIMIZE else lo
        margin = REFERENCE_MARGIN * ((hi - lo) or abs(worst) or 1.0)
        ref.append(worst + margin if d == MINIMIZE else worst - margin)
    return ref


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def violations(outputs: Mapping[str, Any] | None, constraints: Mapping[str, Mapping[str, float]]) -> list[float]:
    """One violation per constraint, in the constraints' order: ``max(min - v, v - max)`` over the bounds
    given (<= 0: the constraint holds), `math.inf` for an output missing or not a finite number.

    Example:
        >>> violations({"mem": 20, "t": 1.0}, {"mem": {"max": 16}, "t": {"min": 0, "max": 2}})
        [4.0, -1.0]
        >>> violations({}, {"mem": {"max": 16}})
        [inf]
    """
    out = []
    for name, bounds in constraints.items():
        v = _number((outputs or {}).get(name))
        if v is None:
            out.append(math.inf)
            continue
        parts = []
        if bounds.get("min") is not None:
            parts.append(float(bounds["min"]) - v)
        if bounds.get("max") is not None:
            parts.append(v - float(bounds["max"]))
        out.append(max(parts) if parts else -math.inf)
    return out


def feasible(outputs: Mapping[str, Any] | None, constraints: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether every constrained output is present, a finite number, and within its bounds.

    Example:
        >>> feasible({"mem": 12}, {"mem": {"max": 16}}), feasible({"mem": 17}, {"mem": {"max": 16}})
        (True, False)
    """
    return all(v <= 0 for v in violations(outputs, constraints))


def metric_values(outputs: Mapping[str, Any] | None, metrics: Sequence[str]) -> list[float] | None:
    """The metrics' values from an evaluation's outputs, None when one is missing or not a finite number.

    Example:
        >>> metric_values({"error": 0.1, "latency": 3}, ["error", "latency"])
        [0.1, 3.0]
    """
    vals = [_number((outputs or {}).get(m)) for m in metrics]
    return None if any(v is None for v in vals) else [float(v) for v in vals]  # type: ignore[arg-type]


def hypervolume_curve(points: Sequence[Point | None], ref: Point) -> list[float]:
    """The hypervolume of the first k points (minimisation), for every k: None entries (failed,
    infeasible) add nothing. For the plot of the hypervolume over evaluations.

    Example:
        >>> hypervolume_curve([(1, 1), None, (0, 1.5)], (2, 2))
        [1.0, 1.0, 1.5]
    """
    out: list[float] = []
    front: list[tuple[float, ...]] = []
    hv = 0.0
    for p in points:
        if p is not None and all(x < r for x, r in zip(p, ref)):
            q = tuple(float(x) for x in p)
            if not any(dominates(f, q) or f == q for f in front):
                front = [f for f in front if not dominates(q, f)] + [q]
                hv = _hv(front, tuple(float(r) for r in ref))
        out.append(hv)
    return out

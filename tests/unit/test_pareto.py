"""rushhpc.sweeps.pareto against brute force: the front by pairwise comparison, the hypervolume by
counting the cells of the grid the points' coordinates make (exact, exponential: small cases only)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rushhpc.sweeps import pareto


def brute_front(points):
    return [i for i, p in enumerate(points)
            if not any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)) for q in points)]


def brute_hv(points, ref):
    pts = [p for p in points if all(x < r for x, r in zip(p, ref))]
    if not pts:
        return 0.0
    d = len(ref)
    axes = [sorted({p[k] for p in pts} | {ref[k]}) for k in range(d)]
    vol = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        lo = [axes[k][cell[k]] for k in range(d)]
        if any(all(p[k] <= lo[k] for k in range(d)) for p in pts):
            vol += math.prod(axes[k][cell[k] + 1] - axes[k][cell[k]] for k in range(d))
    return vol


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("seed", range(12))
def test_front_and_hypervolume_match_brute_force(d, seed):
    rng = random.Random(seed * 10 + d)
    n = rng.randint(1, 14 if d < 4 else 9)
    grid = rng.choice([None, 4])  # ties and duplicates on a coarse grid
    pts = [tuple(float(rng.randint(0, grid)) if grid else rng.random() for _ in range(d)) for _ in range(n)]
    assert pareto.non_dominated(pts) == brute_front(pts)
    ref = tuple(max(p[k] for p in pts) + rng.choice([0.0, 0.5]) for k in range(d))  # some points on the ref
    assert pareto.hypervolume(pts, ref) == pytest.approx(brute_hv(pts, ref), rel=1e-12, abs=1e-12)


def test_hypervolume_curve_is_the_hypervolume_of_each_prefix():
    rng = random.Random(3)
    pts = [None if rng.random() < 0.2 else (rng.random(), rng.random()) for _ in range(30)]
    ref = (1.0, 1.0)
    curve = pareto.hypervolume_curve(pts, ref)
    for k in range(len(pts)):
        prefix = [p for p in pts[: k + 1] if p is not None]
        assert curve[k] == pytest.approx(brute_hv(prefix, ref))


def test_maximize_is_negated_and_the_reference_point_is_the_worst_plus_ten_percent():
    vals = [(0.1, 30.0), (0.3, 10.0), (0.2, 20.0)]
    dirs = ["minimize", "maximize"]
    assert pareto.to_min(vals[0], dirs) == (0.1, -30.0)
    assert pareto.reference_point(vals, dirs) == pytest.approx([0.3 + 0.02, 10.0 - 2.0])
    assert pareto.reference_point([(5.0, -2.0)], ["minimize", "maximize"]) == pytest.approx([5.5, -2.2])
    assert pareto.reference_point([], dirs) is None


def test_constraints_bound_outputs_and_a_missing_output_is_infeasible():
    cons = {"mem": {"max": 16}, "acc": {"min": 0.5, "max": 1.0}}
    assert pareto.violations({"mem": 16, "acc": 0.5}, cons) == [0.0, 0.0]
    assert pareto.feasible({"mem": 16, "acc": 0.5}, cons)
    assert not pareto.feasible({"mem": 16.5, "acc": 0.7}, cons)
    assert not pareto.feasible({"mem": 1, "acc": 0.4}, cons)
    assert not pareto.feasible({"acc": 0.7}, cons)
    assert not pareto.feasible({"mem": "big", "acc": 0.7}, cons)
    assert not pareto.feasible({"mem": float("nan"), "acc": 0.7}, cons)
    assert pareto.metric_values({"a": 1, "b": None}, ["a", "b"]) is None


@pytest.mark.parametrize("d", [2, 3, 5])
def test_hypervolume_agrees_with_optunas(d):
    np = pytest.importorskip("numpy")
    pytest.importorskip("optuna")
    from optuna._hypervolume import compute_hypervolume

    rng = random.Random(d)
    pts = [tuple(rng.random() for _ in range(d)) for _ in range(25)]
    ref = (1.1,) * d
    assert pareto.hypervolume(pts, ref) == pytest.approx(compute_hypervolume(np.array(pts), np.array(ref)), rel=1e-9)

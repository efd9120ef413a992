"""Issue 19 part 2: several metrics and constraints, through the real command line (``python -m rushhpc
sweep``): pareto.csv is exactly the non-dominated set of the feasible results (recomputed here by brute
force from results.csv), best.json and summary.json as docs/sweeps.md documents them, the designs and the
Optuna multi-objective samplers run, and every refusal is one line, exit code 2, before anything starts."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
from support.sweeps import run, write_sweep

SPACE = {"x1": {"type": "float", "low": 0.0, "high": 1.0}, "x2": {"type": "float", "low": 0.0, "high": 1.0}}
MULTI = {"objective": "functions.py:zdt_constrained", "space": SPACE, "metric": ["f1", "f2"],
         "constraints": {"mem": {"max": 14}}}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def brute_front(results: list[dict], metrics: list[str], signs: list[float]) -> list[int]:
    """Evals of the finished, feasible rows no other such row dominates (pairwise)."""
    cand = [r for r in results if r["state"] == "finished" and r["feasible"] == "True"]
    pts = {int(r["eval"]): [s * float(r[m]) for m, s in zip(metrics, signs)] for r in cand}

    def dom(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return sorted(e for e, p in pts.items() if not any(dom(q, p) for q in pts.values()))


def brute_hv(points: list[list[float]], ref: list[float]) -> float:
    """Minimised metrics: the volume of the union of the boxes [p, ref], cell by cell of the coordinates' grid."""
    pts = [p for p in points if all(x < r for x, r in zip(p, ref))]
    axes = [sorted({p[k] for p in pts} | {ref[k]}) for k in range(len(ref))]
    vol = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        if any(all(p[k] <= axes[k][c] for k, c in enumerate(cell)) for p in pts):
            vol += math.prod(axes[k][c + 1] - axes[k][c] for k, c in enumerate(cell))
    return vol


def check_front(out: Path, metrics: list[str], directions: list[str]) -> dict:
    """pareto.csv, best.json and summary.json against results.csv; returns summary.json."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    results = rows(out / "results.csv")
    front = rows(out / "pareto.csv")
    with open(out / "results.csv", newline="") as f, open(out / "pareto.csv", newline="") as g:
        assert next(csv.reader(g)) == next(csv.reader(f))  # the columns of results.csv, eval included
    by_eval = {r["eval"]: r for r in results}
    assert [int(r["eval"]) for r in front] == brute_front(results, metrics, signs)
    assert all(r == by_eval[r["eval"]] for r in front)  # the same rows, cell for cell
    best = json.loads((out / "best.json").read_text())
    assert [p["eval"] for p in best["front"]] == [int(r["eval"]) for r in front]
    assert best["metrics"] == metrics and best["directions"] == directions and best["size"] == len(front)
    for p in best["front"]:
        assert p["values"] == {m: pytest.approx(float(by_eval[str(p["eval"])][m])) for m in metrics}
    summary = json.loads((out / "summary.json").read_text())
    pareto = summary["pareto"]
    assert pareto["evals"] == [p["eval"] for p in best["front"]] and summary["best"]["front"] == best["front"]
    feas = [r for r in results if r["state"] == "finished" and r["feasible"] == "True"]
    assert pareto["feasible"] == len(feas)
    assert pareto["infeasible"] == sum(1 for r in results if r["feasible"] == "False")
    if not feas:  # nothing feasible: an empty front, no observed reference point, no hypervolume
        assert front == [] and pareto["size"] == 0 and pareto["hypervolume"] is None
        assert pareto["reference_point_source"] == "given" or pareto["reference_point"] is None
        return summary
    if pareto["reference_point_source"] == "observed":  # the worst feasible value plus 10 % of the range
        ref = []
        for m, d in zip(metrics, directions):
            col = [float(r[m]) for r in feas]
            worst = max(col) if d == "minimize" else min(col)
            margin = 0.1 * ((max(col) - min(col)) or abs(worst) or 1.0)
            ref.append(worst + margin if d == "minimize" else worst - margin)
        assert pareto["reference_point"] == pytest.approx(ref)
    ref = pareto["reference_point"]
    hv = brute_hv([[s * float(r[m]) for m, s in zip(metrics, signs)] for r in front], [s * x for s, x in zip(signs, ref)])
    assert pareto["hypervolume"] == pytest.approx(hv) and best["hypervolume"] == pytest.approx(hv)
    return summary


def test_two_metrics_with_a_constraint_write_exactly_the_feasible_front(tmp_path):
    write_sweep(tmp_path, **MULTI, budget={"evaluations": 40}, workers={"n": 2})
    out = run(tmp_path, "sweep.yaml", "progress=plain")
    assert out.returncode == 0, out.stderr
    assert "front " in out.stderr and "hypervolume" in out.stderr and "best f1" not in out.stderr
    assert "Pareto front of f1, f2:" in out.stdout and "pareto.csv" in out.stdout
    folder = tmp_path / "runs" / "out"
    results = rows(folder / "results.csv")
    assert len(results) == 40 and list(results[0])[:6] == ["eval", "x1", "x2", "f1", "f2", "accuracy"]
    flags = {r["feasible"] for r in results}
    assert flags == {"True", "False"}  # infeasible evaluations are marked, not dropped
    for r in results:  # feasible: mem present and <= 14
        assert (r["feasible"] == "True") == (r["mem"] != "" and float(r["mem"]) <= 14)
    summary = check_front(folder, ["f1", "f2"], ["minimize", "minimize"])
    assert summary["pareto"]["reference_point_source"] == "observed" and summary["pareto"]["size"] >= 2


@pytest.mark.parametrize("strategy", ["grid", "sobol", "halton", "lhs"])
def test_designs_take_several_metrics(tmp_path, strategy):
    fields = {**MULTI, "metric": ["f1", "accuracy"], "direction": ["minimize", "maximize"],
              "reference_point": [1.5, -0.5]}
    if strategy == "grid":
        write_sweep(tmp_path, **fields, strategy={"name": "grid", "resolution": 4}, budget=None)
    else:
        write_sweep(tmp_path, **fields, strategy=strategy, budget={"evaluations": 16})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    summary = check_front(tmp_path / "runs" / "out", ["f1", "accuracy"], ["minimize", "maximize"])
    assert summary["pareto"]["reference_point"] == [1.5, -0.5] and summary["pareto"]["reference_point_source"] == "given"
    assert summary["counts"]["evaluations"] == 16


@pytest.mark.parametrize("strategy", [{"name": "tpe", "n_startup_trials": 5},
                                      {"name": "optuna", "sampler": "NSGAIISampler", "options": {"population_size": 6}},
                                      {"name": "optuna", "sampler": "NSGAIIISampler", "options": {"population_size": 6}}])
def test_optuna_multi_objective_samplers_with_a_constraint(tmp_path, strategy):
    pytest.importorskip("optuna")
    write_sweep(tmp_path, **MULTI, strategy=strategy, budget={"evaluations": 24}, workers={"n": 2})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    summary = check_front(tmp_path / "runs" / "out", ["f1", "f2"], ["minimize", "minimize"])
    assert summary["counts"]["finished"] == 24 and summary["pareto"]["size"] >= 1


@pytest.mark.parametrize("strategy", ["random", {"name": "tpe", "n_startup_trials": 5}])
def test_one_metric_with_a_constraint_keeps_its_best_among_the_feasible(tmp_path, strategy):
    if strategy != "random":
        pytest.importorskip("optuna")
    write_sweep(tmp_path, objective="functions.py:zdt_constrained", space=SPACE, metric="accuracy", strategy=strategy,
                direction="maximize", constraints={"mem": {"min": 5, "max": 12}}, budget={"evaluations": 30})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "runs" / "out"
    results = rows(folder / "results.csv")
    feas = [r for r in results if r["feasible"] == "True"]
    assert 0 < len(feas) < 30 and not (folder / "pareto.csv").exists()
    best = json.loads((folder / "best.json").read_text())
    top = max(feas, key=lambda r: float(r["accuracy"]))
    assert best["eval"] == int(top["eval"]) and best["metric"] == "accuracy"
    if strategy == "random":  # its points are fixed by the seed: an infeasible one was better
        assert best["value"] < max(float(r["accuracy"]) for r in results)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["constraints"] == {"feasible": len(feas), "infeasible": 30 - len(feas)}


def test_an_objective_without_every_metric_fails_its_evaluations(tmp_path):
    write_sweep(tmp_path, metric=["y", "z"], budget={"evaluations": 3}, workers={"n": 1})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 3, out.stdout + out.stderr  # every evaluation failed
    assert "must return a dict holding each of ['y', 'z']" in out.stdout


REFUSALS = [
    ({"metric": ["f1", "f2"], "direction": ["minimize"]}, "sweep.yaml: direction: 1 directions for 2 metric(s)"),
    ({"metric": ["f1", "f2", "f1"]}, "sweep.yaml: metric: 'f1' is listed twice"),
    ({"metric": ["f1", "f2"], "budget": {"evaluations": 5, "target": 0.1}},
     "sweep.yaml: budget.target: stops at a value of one metric"),
    ({"metric": ["f1", "f2"], "strategy": {"name": "asha"}, "fidelity": {"name": "epochs", "min": 1, "max": 9}},
     "sweep.yaml: metric: several metrics are not supported by strategy asha"),
    ({"metric": ["f1", "f2"], "constraints": {"mem": {}}}, "sweep.yaml: constraints.mem: needs min and/or max"),
    ({"metric": ["f1", "f2"], "constraints": {"mem": {"below": 3}}}, "sweep.yaml: constraints.mem.below: unknown key"),
    ({"metric": ["f1", "f2"], "constraints": {"mem": {"min": 3, "max": 1}}}, "sweep.yaml: constraints.mem.min: expected at most"),
    ({"metric": ["f1", "f2"], "reference_point": [1.0]}, "sweep.yaml: reference_point: expected a list of 2 numbers"),
    ({"metric": "f1", "reference_point": [1.0]}, "sweep.yaml: reference_point: only with several metrics"),
    ({"metric": ["f1", "f2"], "strategy": {"name": "optuna", "sampler": "CmaEsSampler"}},
     "sweep.yaml: strategy.sampler: CmaEsSampler optimises one metric"),
    ({"metric": ["f1", "f2"], "constraints": {"mem": {"max": 3}}, "strategy": {"name": "optuna", "sampler": "RandomSampler"}},
     "sweep.yaml: strategy.sampler: RandomSampler does not use constraints"),
]


@pytest.mark.parametrize("fields, expected", REFUSALS)
def test_refusals_are_one_line_and_exit_2_before_anything_starts(tmp_path, fields, expected):
    if "strategy" in fields and fields["strategy"]["name"] == "optuna":
        pytest.importorskip("optuna")
    write_sweep(tmp_path, **{**MULTI, "constraints": None, **fields})
    out = run(tmp_path, "sweep.yaml", timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert expected in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rushhpc: error: ") and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_single_metric_sweep_is_unchanged(tmp_path):
    write_sweep(tmp_path, budget={"evaluations": 6})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "runs" / "out"
    assert not (folder / "pareto.csv").exists() and "feasible" not in rows(folder / "results.csv")[0]
    summary = json.loads((folder / "summary.json").read_text())
    assert "pareto" not in summary and "constraints" not in summary and summary["best"]["metric"] == "y"
    assert math.isfinite(summary["best"]["value"])


def test_plot_draws_the_front_and_the_hypervolume_over_evaluations(tmp_path):
    pytest.importorskip("matplotlib")
    import subprocess
    import sys

    from rushhpc.ui.pareto_plot import multi_objective_of, pareto_figures
    from rushhpc.ui.plot import records_from_folder

    write_sweep(tmp_path, **MULTI, budget={"evaluations": 30})
    assert run(tmp_path, "sweep.yaml").returncode == 0
    folder = tmp_path / "runs" / "out"
    out = subprocess.run([sys.executable, "-m", "rushhpc", "plot", str(folder)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    names = sorted(Path(p).name for p in out.stdout.split())
    assert names == ["hypervolume_over_evaluations.png", "pareto_front.png", "worker_timeline.png"]
    assert all((folder / "plots" / n).stat().st_size > 1000 for n in names)
    summary = json.loads((folder / "summary.json").read_text())
    (_, front), (_, hv) = pareto_figures(records_from_folder(folder)[0], multi_objective_of(folder))
    marks = {c.get_label(): len(c.get_offsets()) for c in front.axes[0].collections}
    assert marks["infeasible"] == summary["pareto"]["infeasible"]
    assert marks[f"Pareto front ({summary['pareto']['size']})"] == summary["pareto"]["size"]
    curve = hv.axes[0].lines[0].get_ydata()
    assert len(curve) == 30 and list(curve) == sorted(curve)  # never decreases
    assert curve[-1] == pytest.approx(summary["pareto"]["hypervolume"])


@pytest.mark.parametrize("strategy", ["random", {"name": "tpe", "n_startup_trials": 4}])
def test_resume_keeps_the_front_over_both_runs(tmp_path, strategy):
    if strategy != "random":
        pytest.importorskip("optuna")
    write_sweep(tmp_path, **MULTI, strategy=strategy, budget={"evaluations": 10})
    assert run(tmp_path, "sweep.yaml").returncode == 0
    out = run(tmp_path, "sweep.yaml", "--resume", "budget.evaluations=18")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "runs" / "out"
    assert len(rows(folder / "results.csv")) == 18
    summary = check_front(folder, ["f1", "f2"], ["minimize", "minimize"])
    assert summary["counts"]["this_run"] == 8


def test_a_program_objective_with_several_metrics(tmp_path):
    code = "import json, sys; x = float(sys.argv[1]); print(json.dumps({{'a': x, 'b': (1 - x) ** 2, 'mem': 10 * x}}))"
    write_sweep(tmp_path, objective={"command": ["python3", "-c", code, "{x1}"]}, metric=["a", "b"],
                constraints={"mem": {"max": 8}}, space={"x1": {"type": "float", "low": 0.0, "high": 1.0}},
                strategy="sobol", budget={"evaluations": 8})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    summary = check_front(tmp_path / "runs" / "out", ["a", "b"], ["minimize", "minimize"])
    assert summary["counts"]["finished"] == 8 and summary["pareto"]["infeasible"] >= 1


def test_three_metrics(tmp_path):
    write_sweep(tmp_path, **{**MULTI, "metric": ["f1", "f2", "mem"]}, strategy="halton", budget={"evaluations": 20})
    out = run(tmp_path, "sweep.yaml")
    assert out.returncode == 0, out.stderr
    summary = check_front(tmp_path / "runs" / "out", ["f1", "f2", "mem"], ["minimize"] * 3)
    assert summary["pareto"]["size"] >= 2

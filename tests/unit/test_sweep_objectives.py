"""Several metrics and constraints without services: the sweep file's normalisation, the objective's
outputs, and the worker's incremental Optuna study (`History`) with several values and constraint values."""

from __future__ import annotations

import math

import pytest

from rushhpc.core.states import TaskState
from rushhpc.sweeps.config import SweepConfigError, load_config
from rushhpc.sweeps.objective import evaluate, normalise_outputs

BASE = {"objective": "m:f", "space": {"x": {"type": "float", "low": 0, "high": 1}}, "budget": 4}


def cfg(**kw):
    return load_config({**BASE, **kw}, check_objective=False)


def test_one_metric_stays_a_string_and_a_list_of_one_is_one_metric():
    assert (cfg().data["metric"], cfg().data["direction"]) == ("y", "minimize")
    c = cfg(metric=["loss"], direction=["maximize"])
    assert (c.data["metric"], c.data["direction"]) == ("loss", "maximize")
    assert "constraints" not in c.data and "reference_point" not in c.data


def test_several_metrics_take_one_direction_for_all_or_one_each():
    c = cfg(metric=["a", "b"], direction="maximize", constraints={"m": {"max": 3}}, reference_point=[1, "2e0"])
    assert c.data["metric"] == ["a", "b"] and c.data["direction"] == ["maximize", "maximize"]
    assert c.data["constraints"] == {"m": {"max": 3.0}} and c.data["reference_point"] == [1.0, 2.0]
    assert cfg(metric=["a", "b"], direction=["minimize", "maximize"]).data["direction"] == ["minimize", "maximize"]
    assert list(c.data)[-2:] == ["constraints", "reference_point"]  # config.yaml shows them last


@pytest.mark.parametrize("fields, expected", [
    ({"metric": "a", "direction": ["minimize", "maximize"]}, "direction: 2 directions for 1 metric(s)"),
    ({"metric": ["a", "b"], "direction": ["minimize", "up"]}, "direction[1]: expected one of minimize, maximize"),
    ({"metric": []}, "metric: expected an output name or a list"),
    ({"metric": ["a", ""]}, "metric[1]: expected a non-empty string"),
    ({"metric": ["a", "b,c"]}, "metric[1]: a name without ','"),
    ({"constraints": {"m": 3}}, "constraints.m: expected a mapping with min and/or max"),
    ({"constraints": {"m": {"max": "lots"}}}, "constraints.m.max: expected a finite number"),
    ({"metric": ["a", "b"], "reference_point": [1, "x"]}, "reference_point[1]: expected a number"),
    ({"constraints": {"m": {"max": 1}}, "strategy": "asha", "fidelity": {"name": "e", "min": 1, "max": 9}},
     "constraints: not supported by strategy asha"),
])
def test_refusals_name_the_key(fields, expected):
    with pytest.raises(SweepConfigError) as e:
        cfg(**fields)
    assert expected in str(e.value)


def test_several_metrics_need_a_dict_holding_each_as_a_finite_number():
    outs, value = normalise_outputs({"a": 1, "b": 2.5, "c": "x"}, ["a", "b"])
    assert outs == {"a": 1, "b": 2.5, "c": "x"} and value is None
    for bad, why in ((0.3, "must return a dict"), ({"a": 1}, "without the metric(s) ['b']"),
                     ({"a": 1, "b": math.nan}, "'b' is nan")):
        ok, res = evaluate(lambda x, r=bad: r, {"x": 0.1}, ["a", "b"], None, 0)
        assert not ok and res["message"].startswith("InvalidResult:") and why in res["message"]
    ok, res = evaluate(lambda x: {"a": x, "b": 1 - x}, {"x": 0.25}, ["a", "b"], None, 0)
    assert ok and res["value"] is None and res["outputs"] == {"a": 0.25, "b": 0.75}


def test_the_workers_study_has_one_value_per_metric_and_the_constraint_values():
    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    from rushhpc.sweeps.worker import MISSING_VIOLATION, History, distributions, make_sampler

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False, "step": None}}
    sampler = make_sampler({"name": "tpe", "n_startup_trials": 2, "options": {}}, 1, constrained=True)
    h = History(distributions(space), ["minimize", "maximize"], sampler, ["a", "b"], {"m": {"max": 1.0}})
    fin = TaskState.FINISHED.value
    rows = [
        {"keys": "k1", "state": fin, "params": {"x": 0.1}, "outputs": {"a": 0.1, "b": 2.0, "m": 0.5}},
        {"keys": "k2", "state": fin, "params": {"x": 0.2}, "outputs": {"a": 0.2, "b": 1.0, "m": 3.0}},
        {"keys": "k3", "state": fin, "params": {"x": 0.3}, "outputs": {"a": 0.3, "b": 1.0}},  # m missing
        {"keys": "k4", "state": TaskState.RUNNING.value, "params": {"x": 0.4}},
    ]
    h.update(rows)
    rows[3] = {"keys": "k4", "state": fin, "params": {"x": 0.4}, "outputs": {"a": 0.4, "b": 0.5, "m": 1.0}}
    h.update(rows)
    trials = {t.params["x"]: t for t in h.study.get_trials(deepcopy=False)}
    assert trials[0.1].values == [0.1, 2.0] and list(trials[0.1].constraints.values()) == [-0.5]
    assert list(trials[0.2].constraints.values()) == [2.0]  # infeasible: the samplers know it
    # a constrained output missing: infeasible, shown to the samplers with a violation above any measured one (a
    # sampler that never saw such trials kept proposing where the output goes missing: every point infeasible)
    assert list(trials[0.3].constraints.values()) == [MISSING_VIOLATION] and trials[0.3].values == [0.3, 1.0]
    assert trials[0.4].state == TrialState.COMPLETE and list(trials[0.4].constraints.values()) == [0.0]
    t = h.ask()  # TPE proposes from the multi-objective, constrained history
    assert 0.0 <= t.suggest_float("x", 0.0, 1.0) <= 1.0
    assert h.study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]


def test_a_sampler_whose_package_is_missing_is_refused_before_the_sweep_starts():
    # GPSampler imports torch only when it first samples, in every worker: the sweep file is refused instead
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: GPSampler can run")
    with pytest.raises(SweepConfigError) as e:
        cfg(strategy={"name": "optuna", "sampler": "GPSampler"})
    assert "strategy.sampler" in str(e.value) and "GPSampler needs torch (pip install torch)" in str(e.value)

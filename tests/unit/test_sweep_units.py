"""The sweep engine's parts, in process: space, designs, overrides, durations, journal, columns."""

from __future__ import annotations

import json
import math
import re

import pytest

from rushhpc.sweeps.config import (
    SweepConfigError,
    apply_overrides,
    as_overrides,
    load_config,
    parse_duration,
    parse_override,
)
from rushhpc.sweeps.objective import evaluate, normalise_outputs
from rushhpc.sweeps.results import Journal, build_table, column_names
from rushhpc.sweeps.space import Space, from_unit, grid_values
from rushhpc.sweeps.strategies import make_design


def F(low, high, **kw):
    return {"type": "float", "low": low, "high": high, "log": False, "step": None, "when": None, "resolution": None, **kw}


def Int(low, high, **kw):
    return {"type": "int", "low": low, "high": high, "log": False, "step": 1, "when": None, "resolution": None, **kw}


def test_from_unit_covers_each_type_within_bounds():
    assert from_unit(F(-5, 10), 0.0) == -5 and from_unit(F(-5, 10), 0.5) == 2.5
    lg = F(1e-4, 1e-1, log=True)
    assert from_unit(lg, 0.5) == pytest.approx(math.sqrt(1e-4 * 1e-1))
    assert from_unit(F(0, 1, step=0.1), 0.35) == 0.3  # on the lattice, without float noise
    ints = [from_unit(Int(1, 4), u / 100) for u in range(100)]
    assert sorted(set(ints)) == [1, 2, 3, 4] and all(isinstance(v, int) for v in ints)
    assert [ints.count(v) for v in (1, 2, 3, 4)] == [25, 25, 25, 25]
    assert sorted({from_unit(Int(0, 10, step=5), u / 10) for u in range(10)}) == [0, 5, 10]
    logi = Int(1, 1000, log=True, step=1)
    assert from_unit(logi, 0.0) == 1 and from_unit(logi, 0.99999) == 1000 and 15 < from_unit(logi, 0.5) < 35
    cat = {"type": "categorical", "choices": ["a", 1, None], "when": None}
    assert [from_unit(cat, u) for u in (0.0, 0.4, 0.99)] == ["a", 1, None]
    assert from_unit({"type": "fixed", "value": [1, 2], "when": None}, 0.7) == [1, 2]


def test_grid_values_and_conditional_grid_dedupes():
    assert grid_values(F(0, 1), 3) == [0.0, 0.5, 1.0]
    assert grid_values(Int(1, 3), 10) == [1, 2, 3]  # fewer integers than the resolution: all of them
    assert grid_values(F(0, 1, resolution=2), 5) == [0.0, 1.0]  # a parameter's own resolution wins
    space = Space({
        "kind": {"type": "categorical", "choices": ["a", "b"], "when": None},
        "x": F(0, 1, when={"kind": "a"}),
        "y": Int(1, 2, when={"kind": ["b"]}),
    })
    points = space.grid(3)
    assert points == [{"kind": "a", "x": 0.0}, {"kind": "a", "x": 0.5}, {"kind": "a", "x": 1.0},
                      {"kind": "b", "y": 1}, {"kind": "b", "y": 2}]
    shuffled = space.grid(3, shuffle=True, seed=4)
    assert sorted(map(json.dumps, shuffled)) == sorted(map(json.dumps, points)) and shuffled != points
    assert shuffled == space.grid(3, shuffle=True, seed=4)


@pytest.mark.parametrize("name", ["random", "sobol", "halton", "lhs", "grid"])
def test_designs_are_a_function_of_seed_and_index(name):
    space = Space({"a": F(0, 1), "b": Int(0, 9), "c": {"type": "categorical", "choices": [1, 2, 3], "when": None}})
    strategy = {"name": name, "resolution": 4, "scramble": True, "shuffle": False}
    d = make_design(space, strategy, seed=11, evaluations=20)
    whole = d.points(0, 20)
    assert d.points(0, 7) + d.points(7, 13) + d.points(13, 20) == whole  # in pieces, in any order
    assert make_design(space, strategy, seed=11, evaluations=20).points(5, 6) == whole[5:6]
    if name != "grid":
        assert make_design(space, strategy, seed=12, evaluations=20).points(0, 20) != whole
    for p in whole:
        assert 0 <= p["a"] <= 1 and p["b"] in range(10) and p["c"] in (1, 2, 3)


def test_parse_duration():
    assert parse_duration(90) == 90 and parse_duration("90s") == 90 and parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400 and parse_duration("2d") == 172800
    assert parse_duration("01:30:00") == 5400 and parse_duration("1-00:00:10") == 86410
    assert parse_duration("1.5h") == 5400
    for bad in ("soon", "", "1x", -1, True, "1:2:3:4", "45"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_overrides_short_forms_add_remove_and_replace():
    raw = {"objective": "m:f", "strategy": "grid", "redis": "embedded", "budget": 10,
           "space": {"x": {"type": "float", "low": 0, "high": 1}, "k": ["a", "b"]}}
    out = apply_overrides(raw, as_overrides([
        "strategy.resolution=3", "redis.url=redis://h:1/0", "budget.walltime=1h", "space.k.choices=[c]",
        "+space.z=7", "~space.x", "workers.n=4",
    ]), "f.yaml")
    assert out["strategy"] == {"name": "grid", "resolution": 3}
    assert out["redis"] == {"url": "redis://h:1/0"} and out["budget"] == {"evaluations": 10, "walltime": "1h"}
    assert out["space"] == {"k": {"type": "categorical", "choices": ["c"]}, "z": 7} and out["workers"] == {"n": 4}
    assert raw["strategy"] == "grid"  # the input is not changed
    replaced = apply_overrides(raw, as_overrides([("space.x", {"type": "int", "low": 1, "high": 3})]), "f.yaml")
    assert replaced["space"]["x"] == {"type": "int", "low": 1, "high": 3}  # a mapping replaces, it does not merge
    assert parse_override("a.b=[1, {c: 2}]").value == [1, {"c": 2}]
    for bad, msg in [("+space.x=1", "space.x exists already"), ("~budget.target", "budget.target is not set"),
                     ("space.q=1", "space.q does not exist; parameters are x, k; add one with +space.q=..."),
                     ("budget.evaluations.x=1", "budget.evaluations is 10, not a mapping"),
                     ("strategy.scramble=true", "strategy.scramble does not exist; strategy takes name, resolution, shuffle")]:
        with pytest.raises(SweepConfigError, match=re.escape(msg)):
            apply_overrides(raw, as_overrides([bad]), "f.yaml")


def test_config_normalises_and_refuses_secrets(tmp_path):
    (tmp_path / "f.py").write_text("def g(x, **kw):\n    return x\n")
    cfg = load_config({"objective": "f.py:g", "space": {"x": {"type": "float", "low": "1e-4", "high": 1, "log": True}},
                       "budget": {"walltime": "10m"}}, cwd=tmp_path)
    assert cfg["space"]["x"]["low"] == 1e-4  # YAML reads 1e-4 as a string; a number field takes it
    assert cfg["budget"] == {"evaluations": None, "walltime": 600.0, "target": None}
    assert cfg["objective"] == f"{tmp_path / 'f.py'}:g" and cfg["output"] == str(tmp_path / "runs" / "sweep")
    assert cfg.seed_was_chosen and isinstance(cfg["seed"], int)
    again = load_config(cfg.data, cwd="/")
    assert again.data == cfg.data  # the resolved config is a valid config, and a fixed point
    with pytest.raises(SweepConfigError, match="redis.password: passwords do not go in a sweep file"):
        load_config({**cfg.data, "redis": {"url": "redis://h", "password": "x"}})
    with pytest.raises(SweepConfigError, match=r"space.a.when: conditions form a cycle: a -> b -> a"):
        load_config({**cfg.data, "space": {"a": {"type": "categorical", "choices": [1], "when": {"b": 1}},
                                            "b": {"type": "categorical", "choices": [1], "when": {"a": 1}}}})
    with pytest.raises(SweepConfigError, match="space.b.when.a: conditions can test categorical, int or fixed"):
        load_config({**cfg.data, "space": {"a": F(0, 1), "b": {"type": "fixed", "value": 1, "when": {"a": 0.5}}}})
    with pytest.raises(SweepConfigError, match=r"strategy.resolution: the grid has 1,000,000,000 points"):
        load_config({**cfg.data, "strategy": {"name": "grid", "resolution": 1000},
                     "space": {n: F(0, 1) for n in "abc"}})


def test_column_names_never_shadow_parameters():
    cols = column_names(["y", "state", "out_y", "eval"], ["y", "state", "loss", "eval"])
    assert cols["parameters"] == {p: p for p in ["y", "state", "out_y", "eval"]}
    assert cols["meta"]["state"] == "sweep_state" and cols["meta"]["eval"] == "sweep_eval"
    assert cols["outputs"] == {"y": "out_out_y", "state": "out_state", "loss": "loss", "eval": "out_eval"}
    names = [*cols["parameters"].values(), *cols["meta"].values(), *cols["outputs"].values()]
    assert len(names) == len(set(names))


def test_journal_drops_a_line_cut_short(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append([{"eval": 0, "state": "finished", "params": {"x": 1}, "outputs": {"y": 2}, "value": 2}])
    j.close()
    with open(path, "a") as f:
        f.write('{"eval": 1, "sta')  # the crash
    j = Journal(path)
    assert [r["eval"] for r in j.records] == [0]
    j.append([{"eval": 2, "state": "failed", "params": {"x": 3}, "error": "E: no"}])
    j.close()
    assert [json.loads(line)["eval"] for line in path.read_text().splitlines()] == [0, 2]
    df, _ = build_table(Journal(path).records, ["x"], "y")
    assert list(df["eval"]) == [0, 2] and list(df["x"]) == [1, 3] and df["error"].tolist()[1] == "E: no"


def test_objective_results_and_failures():
    assert normalise_outputs(3, "y") == ({"y": 3}, 3.0)
    import numpy as np

    outputs, v = normalise_outputs({"loss": np.float32(0.5), "vec": np.arange(2)}, "loss")
    assert outputs == {"loss": 0.5, "vec": [0, 1]} and v == 0.5
    for bad, msg in [({"a": 1}, "without the metric 'y'"), (float("nan"), "not a finite number"), ("x", "not a number")]:
        with pytest.raises(ValueError, match=msg):
            normalise_outputs(bad, "y")
    ok, res = evaluate(lambda x: 1 / x, {"x": 0}, "y", None, 2)
    assert not ok and res["message"].startswith("ZeroDivisionError: division by zero (failed 3 attempts)\nTraceback")
    ok, res = evaluate(lambda x: {"z": x}, {"x": 0}, "y", None, 5)
    assert not ok and res["message"].startswith("InvalidResult: the objective returned outputs ['z']")
    ok, res = evaluate(lambda x: x + 1, {"x": 1}, "y", 5, 0)
    assert ok and res["outputs"] == {"y": 2} and res["attempts"] == 1


def test_model_history_follows_the_tasks_incrementally():
    """The worker's study mirrors the network's running and finished tasks without rebuilding:
    new tasks become trials, a running one that finished gets its value, one that vanished
    (failed, requeued) becomes failed; the worker's own proposal is its task's trial."""
    pytest.importorskip("optuna")
    import optuna
    from optuna.trial import TrialState

    from rushhpc.sweeps.worker import History, distributions, make_sampler

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False, "step": None}}
    h = History(distributions(space), "minimize", make_sampler({"name": "tpe", "n_startup_trials": 2}, 1))

    def states() -> dict[float, tuple]:
        return {t.params["x"]: (t.state, t.value) for t in h.study.get_trials(deepcopy=False) if "x" in t.params}

    h.update([{"keys": "a", "state": "finished", "params": {"x": 0.1}, "value": 1.0},
              {"keys": "b", "state": "running", "params": {"x": 0.2}},
              {"keys": "c", "state": "running", "params": {"x": 0.3}},
              {"keys": "d", "state": "finished", "params": {"x": 0.4}, "value": None},  # no usable value
              {"keys": "e", "state": "finished", "params": "not a dict"}])
    assert states() == {0.1: (TrialState.COMPLETE, 1.0), 0.2: (TrialState.RUNNING, None),
                        0.3: (TrialState.RUNNING, None)}
    # b finished, c failed or went back to the queue (absent), a unchanged: no trial twice
    h.update([{"keys": "a", "state": "finished", "params": {"x": 0.1}, "value": 1.0},
              {"keys": "b", "state": "finished", "params": {"x": 0.2}, "value": 0.5}])
    assert states() == {0.1: (TrialState.COMPLETE, 1.0), 0.2: (TrialState.COMPLETE, 0.5),
                        0.3: (TrialState.FAIL, None)}
    trial = h.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    h.own("f", trial)  # the worker's own task: it is this trial
    h.update([{"keys": "f", "state": "running", "params": {"x": x}}])
    h.update([{"keys": "f", "state": "finished", "params": {"x": x}, "value": 0.25}])
    assert states()[x] == (TrialState.COMPLETE, 0.25) and len(h.study.get_trials(deepcopy=False)) == 4
    refused = h.ask()
    refused.suggest_float("x", 0.0, 1.0)
    h.drop(refused)  # its task was not created: not a pending point for the liar
    assert h.study.get_trials(deepcopy=False)[-1].state == TrialState.FAIL
    assert isinstance(h.study, optuna.Study)


def test_a_cancelled_point_is_known_by_its_cause_not_its_wording():
    # issue 18: the engine compared the message text ("Removed from queue"); the cause is a CancelCause
    # field the store writes with the failure, and the message is never read (rewording it changes nothing)
    from rushhpc.core.states import CANCEL_FIELD, CancelCause
    from rushhpc.sweeps.ingest import cancel_cause

    assert cancel_cause({CANCEL_FIELD: "removed_from_queue", "condition": "Queue emptied"}) is CancelCause.REMOVED
    assert cancel_cause({CANCEL_FIELD: "worker_killed", "condition": "anything"}) is CancelCause.WORKER_KILLED
    for text in ("worker was killed", "Removed from queue"):  # the old wordings, without the field
        assert cancel_cause({"condition": text}) is None
    assert cancel_cause({CANCEL_FIELD: None, "condition": "ValueError: x < 0"}) is None  # an evaluation that failed
    assert cancel_cause({CANCEL_FIELD: "bogus"}) is None


def test_ingest_ignores_the_message_of_a_failed_task():
    """Ingest._failed_record: a failed task with the old cancel wordings is an evaluation that failed
    (a journal record); one with a cause is given back, whatever its message says."""
    from types import SimpleNamespace

    from rushhpc.core.states import CANCEL_FIELD, CancelCause
    from rushhpc.sweeps.ingest import Ingest

    given_back: list = []
    state = SimpleNamespace(cfg=None, n_cancelled=0, evals={})
    schedule = SimpleNamespace(give_back=lambda ev, evals: given_back.append(ev))
    ing = Ingest(state, schedule)  # type: ignore[arg-type]
    for i, text in enumerate(("worker was killed", "Removed from queue")):
        rec = ing._failed_record({"condition": text}, i, {"x": i})
        assert rec is not None and rec["error"] == text and rec["state"] == "failed"
    assert ing._failed_record({"condition": "reworded", CANCEL_FIELD: CancelCause.WORKER_KILLED.value}, 7, {}) is None
    assert given_back == [7] and state.n_cancelled == 1

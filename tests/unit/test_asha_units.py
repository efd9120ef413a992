"""ASHA (issue 19): the rungs, and the sweep file's fidelity and strategy keys (errors name the key)."""

from __future__ import annotations

import pytest

from rushhpc.sweeps.config import SweepConfigError, load_config
from rushhpc.sweeps.results import build_table
from rushhpc.sweeps.strategies.asha import rungs


def test_rungs_go_up_by_eta_and_end_exactly_at_max():
    assert rungs(1, 27, 3) == [1, 3, 9, 27]
    assert rungs(1, 10, 3) == [1, 3, 9, 10]
    assert rungs(2, 10, 2) == [2, 4, 8, 10]
    assert rungs(5, 6, 4) == [5, 6]
    assert rungs(1, 81, 3) == [1, 3, 9, 27, 81]
    with pytest.raises(ValueError):
        rungs(1, 27, 1)


@pytest.fixture
def here(tmp_path, monkeypatch):
    (tmp_path / "f.py").write_text("def train(lr, epochs, checkpoint_dir=None):\n    return lr * epochs\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cfg(**over):
    raw = {"objective": "f.py:train", "space": {"lr": {"type": "float", "low": 1e-4, "high": 1, "log": True}},
           "fidelity": {"name": "epochs", "min": 1, "max": 27}, "strategy": {"name": "asha"}, "budget": 20}
    raw.update(over)
    return load_config({k: v for k, v in raw.items() if v is not None})


def test_asha_config_defaults(here):
    cfg = _cfg()
    assert cfg.data["strategy"] == {"name": "asha", "eta": 3, "sampler": "random"}
    assert cfg.data["fidelity"] == {"name": "epochs", "min": 1, "max": 27}
    assert _cfg(strategy={"name": "hyperband", "sampler": "tpe"}).data["strategy"] == {
        "name": "hyperband", "eta": 3, "sampler": "tpe"}


@pytest.mark.parametrize("over, key", [
    ({"strategy": {"name": "asha", "eta": 1}}, "strategy.eta"),
    ({"strategy": {"name": "asha", "eta": 2.5}}, "strategy.eta"),
    ({"strategy": {"name": "asha", "sampler": "sobol"}}, "strategy.sampler"),
    ({"strategy": {"name": "asha", "brackets": 2}}, "strategy"),
    ({"fidelity": None}, "fidelity"),
    ({"fidelity": {"name": "epochs", "min": 1}}, "fidelity.max"),
    ({"fidelity": {"name": "epochs", "min": 0, "max": 9}}, "fidelity.min"),
    ({"fidelity": {"name": "epochs", "min": 9, "max": 9}}, "fidelity.max"),
    ({"fidelity": {"name": "epochs", "min": 1, "max": 9.5}}, "fidelity.max"),
    ({"fidelity": {"name": "lr", "min": 1, "max": 9}}, "fidelity.name"),
    ({"fidelity": {"name": "epochs", "min": 1, "max": 9, "step": 2}}, "fidelity"),
    ({"strategy": "random"}, "fidelity"),
    ({"fidelity": {"name": "steps", "min": 1, "max": 9}}, "fidelity.name"),  # train takes no 'steps'
    ({"budget": {"fidelity": -5}}, "budget.fidelity"),
    ({"budget": {"fidelity": 0}}, "budget.fidelity"),
    ({"budget": {"fidelity": 0.5}}, "budget.fidelity"),  # below fidelity.min
    ({"budget": {"fidelity": "lots"}}, "budget.fidelity"),
    ({"strategy": "random", "fidelity": None, "budget": {"evaluations": 5, "fidelity": 10}}, "budget.fidelity"),
    ({"strategy": {"name": "hyperband", "eta": 1}}, "strategy.eta"),
])
def test_asha_errors_name_the_key(here, over, key):
    with pytest.raises(SweepConfigError) as e:
        _cfg(**over)
    assert f": {key}:" in str(e.value) or f": {key}." in str(e.value), str(e.value)


def test_the_table_has_config_fidelity_and_rung_after_eval():
    recs = [{"eval": i, "state": "finished", "params": {"lr": 0.1}, "outputs": {"y": 1.0}, "value": 1.0,
             "config": "c1", "fidelity": f, "rung": r} for i, (f, r) in enumerate([(1, 0), (3, 1)])]
    df, _ = build_table(recs, ["lr"], "y")
    assert list(df.columns[:5]) == ["eval", "config", "fidelity", "rung", "lr"]
    assert df["rung"].tolist() == [0, 1]


def test_budget_fidelity_alone_is_a_budget(here):
    cfg = _cfg(budget={"fidelity": 100})
    assert cfg.data["budget"]["fidelity"] == 100.0 and cfg.data["budget"]["evaluations"] is None
    assert "fidelity" not in load_config({"objective": "f.py:train", "space": {"lr": [1, 2], "epochs": [1]},
                                          "budget": 3})["budget"]  # only a fidelity strategy has it


def test_a_program_takes_fidelity_and_checkpoint_dir_placeholders(here):
    cfg = _cfg(objective={"command": ["python3", "t.py", "--lr", "{lr}", "--epochs", "{fidelity}", "--ckpt",
                                      "{checkpoint_dir}", "--e2", "{epochs}"]})
    assert cfg.objective_kind == "command"
    with pytest.raises(SweepConfigError, match="objective.command: unknown placeholder {fidelity}"):
        load_config({"objective": {"command": "python3 t.py {x} {fidelity}"}, "space": {"x": [1, 2]}, "budget": 2})

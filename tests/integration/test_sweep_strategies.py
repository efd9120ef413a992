"""Issue 18 point 4: a sweep strategy is one registration (`rushhpc.sweeps.strategies.register`), consulted by
the config, the designs and the worker. Each test registers a tiny strategy from outside rushhpc and runs a
small sweep with it: real Redis (the session's redis-server), local workers."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from support import TESTS

import rushhpc
from rushhpc.sweeps import strategies
from rushhpc.sweeps.config import SweepConfigError, load_config
from rushhpc.sweeps.designs import Design
from rushhpc.sweeps.strategies import DESIGN, Strategy

HERE = TESTS / "support"


class DiagonalDesign(Design):
    """Point i puts every parameter at (i + 0.5) / steps of its range: ``steps`` points in all."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.size = self.strategy["steps"]

    def points(self, lo: int, hi: int) -> list[dict[str, Any]]:
        n = self.space.n_dims
        return [self.space.from_unit([(i + 0.5) / self.size] * n) for i in range(lo, min(hi, self.size))]


def _options(c, raw: dict) -> dict:
    return {"steps": c.int_("strategy.steps", raw.get("steps", 4), minimum=1)}


@pytest.fixture
def diagonal():
    strategies.register(Strategy("diagonal", DESIGN, keys=("steps",), options=_options, design=DiagonalDesign,
                                 finite=True, module=__name__))
    yield
    strategies.unregister("diagonal")


def _sweep(tmp_path: Path, redis_server, strategy: Any, **extra: Any) -> dict:
    shutil.copy(HERE / "sweep_functions.py", tmp_path / "functions.py")
    pw = tmp_path / "redis.pw"
    pw.write_text(redis_server.password)
    os.chmod(pw, 0o600)
    return {"objective": str(tmp_path / "functions.py") + ":branin", "pythonpath": [str(tmp_path)],
            "space": {"x1": {"type": "float", "low": -5, "high": 10}, "x2": {"type": "float", "low": 0, "high": 15}},
            "strategy": strategy, "workers": {"n": 2, "launcher": "local"}, "progress": "none", "seed": 3,
            "redis": {"url": f"redis://127.0.0.1:{redis_server.port}", "password_file": str(pw)},
            "output": str(tmp_path / "out"), **extra}


def test_a_registered_design_strategy_runs_a_sweep(tmp_path, redis_server, diagonal):
    assert "diagonal" in strategies.names() and strategies.is_design("diagonal")
    df = rushhpc.sweep(_sweep(tmp_path, redis_server, {"name": "diagonal", "steps": 5}))  # finite: no budget needed
    assert df.attrs["status"] == "completed", df.attrs
    assert "all 5 points of the diagonal evaluated" in df.attrs["reason"]
    got = sorted((round(r.x1, 9), round(r.x2, 9)) for r in df.itertuples())
    assert got == [(round(-5 + 15 * (i + 0.5) / 5, 9), round(15 * (i + 0.5) / 5, 9)) for i in range(5)]
    assert (df["state"] == "finished").all()


def test_a_registered_strategys_options_are_validated_in_the_yaml_words(tmp_path, redis_server, diagonal):
    with pytest.raises(SweepConfigError, match=r"strategy\.steps: expected a positive integer, got 0"):
        load_config(_sweep(tmp_path, redis_server, {"name": "diagonal", "steps": 0}), cwd=tmp_path)
    with pytest.raises(SweepConfigError, match=r"strategy\.size: unknown key; strategy takes name, steps"):
        load_config(_sweep(tmp_path, redis_server, {"name": "diagonal", "size": 3}), cwd=tmp_path)
    with pytest.raises(SweepConfigError, match=r"strategy\.name: expected one of random, grid, sobol, halton, lhs, "
                                               r"tpe, optuna, asha, hyperband, diagonal, got 'diagonals'"):
        load_config(_sweep(tmp_path, redis_server, {"name": "diagonals"}, budget=4), cwd=tmp_path)


MODEL_STRATEGY = '''
from rushhpc.sweeps.strategies import MODEL, Strategy, register


def sampler(strategy, seed):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


register(Strategy("plain_random_model", MODEL, sampler=sampler, requires="optuna", install="pip install optuna",
                  module=__name__))
'''


def test_a_registered_model_strategy_runs_in_the_workers(tmp_path, redis_server, monkeypatch):
    pytest.importorskip("optuna")
    # the strategy's module sits beside the objective: the workers import it there (their registry is their own)
    (tmp_path / "my_strategy.py").write_text(MODEL_STRATEGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_strategy  # noqa: F401 - registers plain_random_model in this process

    try:
        df = rushhpc.sweep(_sweep(tmp_path, redis_server, "plain_random_model", budget={"evaluations": 6}))
        assert df.attrs["status"] == "completed", df.attrs
        assert len(df) == 6 and (df["state"] == "finished").all()
        assert df["worker_id"].nunique() >= 1
    finally:
        strategies.unregister("plain_random_model")
        sys.modules.pop("my_strategy", None)

"""The docstring examples that run on their own (no Redis, no network, no scheduler) give what they show.

Most public functions' examples need a live network (``rush.push_tasks(...)``) and are there to be read; these
modules' examples are complete, so a changed behaviour that leaves its example behind fails here (two stale
examples were found this way: dashboard ``thin`` and asha's ``bracket_weights``). A module whose examples all run
belongs in this list (server.binary runs redis-server: not a unit test).
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "rushhpc.core.codec", "rushhpc.core.durations", "rushhpc.core.memory", "rushhpc.core.records",
    "rushhpc.core.spec", "rushhpc.core.states", "rushhpc.defaults",
    "rushhpc.launchers.base", "rushhpc.launchers.batch", "rushhpc.launchers.gpus", "rushhpc.launchers.registry",
    "rushhpc.launchers.pbs.environment", "rushhpc.launchers.pbs.states",
    "rushhpc.launchers.slurm.environment", "rushhpc.launchers.slurm.states",
    "rushhpc.manager.reconcile", "rushhpc.store.keys", "rushhpc.store.secrets",
    "rushhpc.sweeps.config", "rushhpc.sweeps.config.checker", "rushhpc.sweeps.config.load",
    "rushhpc.sweeps.config.objectives", "rushhpc.sweeps.config.overrides", "rushhpc.sweeps.designs",
    "rushhpc.sweeps.ingest", "rushhpc.sweeps.lock", "rushhpc.sweeps.objective", "rushhpc.sweeps.pareto",
    "rushhpc.sweeps.space", "rushhpc.sweeps.strategies", "rushhpc.sweeps.strategies.asha",
    "rushhpc.ui.cli.inspect", "rushhpc.ui.cli.run", "rushhpc.ui.dashboard.data", "rushhpc.ui.dashboard.sweep_views",
    "rushhpc.worker.command",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run_as_shown(name, monkeypatch):
    monkeypatch.chdir(importlib.import_module("support").REPO)  # examples name files as from the clone's root
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples differ (see above)"

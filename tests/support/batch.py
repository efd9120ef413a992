"""The batch backends' fixtures: a manager whose plan starts workers on the test SLURM cluster or the PBS emulator."""

from __future__ import annotations

import os
import uuid

import pytest

import rushhpc
from rushhpc import rush_plan
from support.batch_backends import PbsBackend, SlurmBackend, require

BACKENDS = {"slurm": SlurmBackend, "pbs": PbsBackend}


@pytest.fixture(params=["slurm", "pbs"])
def backend(request, monkeypatch):
    cls = BACKENDS[request.param]
    if request.param == "pbs":
        monkeypatch.setenv("PATH", f"{cls.bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PBS_EMU_HOME", str(request.getfixturevalue("tmp_path") / "pbs-emu"))
    require(request.param, cls.available(), "start it with scripts/slurm-cluster.sh start"
            if request.param == "slurm" else "tests/pbs_emulator and rushhpc/launchers/pbs/ are needed")
    return cls()


@pytest.fixture
def batch(backend, config):
    """A manager whose plan starts workers through the backend, with fast polls and heartbeats."""
    created = []

    def make(heartbeat_expire: float = 4, **launcher_options):
        opts = {"poll_interval": 0.5, "max_poll_interval": 2, "startup_grace": 20, "time": "00:10:00"}
        opts.update(launcher_options)
        rush_plan(config=config, worker_type=backend.worker_type, heartbeat_period=0.5,
                  heartbeat_expire=heartbeat_expire, launcher_options=opts, start_worker_timeout=60)
        r = rushhpc.rsh("b-" + uuid.uuid4().hex[:8])
        created.append(r)
        return r

    yield make
    for r in created:
        try:
            r.reset()
        finally:
            backend.cleanup(f"rushhpc-{r.network_id}")
            r.close()


def launcher_of(r):
    return r.launchers()[0]


def info(r, wid):
    return r.worker_info.set_index("worker_id").loc[wid]

"""Sweeps on the real SLURM test cluster: from the login node (workers as one job array), and
entirely inside one sbatch allocation."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from support.batch_backends import REPO, SlurmBackend, require


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _slurm() -> None:
    require("slurm", SlurmBackend.available(), "start it with scripts/slurm-cluster.sh start")


def test_sweep_with_slurm_workers(config, tmp_path):
    _slurm()
    pw = tmp_path / "redis.pw"
    pw.write_text(config.password + "\n")
    pw.chmod(0o600)
    out_dir = tmp_path / "s"
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG")}
    args = [sys.executable, "-m", "rushhpc", "sweep", "examples/sweep_slurm.yaml", "budget.evaluations=8",
            "budget.walltime=5m", "timeout=2m", "workers.n=2", "workers.heartbeat_period=1", "workers.heartbeat_expire=10",
            "workers.resources={partition: debug, time: '00:05:00', poll_interval: 1, max_poll_interval: 2}",
            f"redis={{url: 'redis://127.0.0.1:{config.port}/0', password_file: '{pw}'}}", f"output={out_dir}",
            "space.layers.high=2"]
    run = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = _rows(out_dir)
    assert len(rows) == 8 and {r["state"] for r in rows} == {"finished"}
    assert len({r["worker_id"] for r in rows}) >= 1
    assert config.password not in run.stdout + run.stderr + (out_dir / "config.yaml").read_text()
    # the workers were elements of a SLURM job array (batch ids end with the array index; local ones do not)
    assert all(re.fullmatch(r"w-[0-9a-f]{8}-\d+", r["worker_id"]) for r in rows), {r["worker_id"] for r in rows}


def test_sweep_inside_one_allocation(tmp_path):
    _slurm()
    out_dir = tmp_path / "a"
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["SWEEP_WALLTIME"] = "3m"
    assert shutil.which("rushhpc", path=env["PATH"]), "the rushhpc command must be on PATH for the job"
    # the example on one node (its workers: one srun step of 2 tasks there, Redis on loopback);
    # three nodes: tests/backends/test_srun_launcher.py
    run = subprocess.run(["sbatch", "--wait", "-N", "1", "--ntasks-per-node=2", "--time=00:05:00", f"--output={tmp_path}/job.out",
                          "--export=ALL", "examples/sweep_slurm_allocation.sbatch", "budget.evaluations=12",
                          f"output={out_dir}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert run.returncode == 0, run.stderr + log[-3000:]
    rows = _rows(out_dir)
    assert len(rows) == 12 and {r["state"] for r in rows} == {"finished"}

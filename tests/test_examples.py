"""The examples run as a user runs them: a fresh interpreter, no Redis configured (embedded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from batch_backends import SlurmBackend, require

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG")}
    return subprocess.run([sys.executable, name, *args], cwd=EXAMPLES, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_quickstart_random_search():
    out = run_example("random_search.py", "--workers", "2", "--tasks", "300")
    assert out.returncode == 0, out.stderr
    assert "Best 10 of" in out.stdout and "terminated" in out.stdout
    n = int(out.stdout.split("Best 10 of ")[1].split()[0])
    assert n >= 300


def test_slurm_random_search_example():
    require("slurm", SlurmBackend.available(), "start it with scripts/slurm-cluster.sh start")
    out = run_example("slurm_random_search.py", "--workers", "2", "--tasks", "500")
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --array=0-1" in out.stdout and "Best 5 of" in out.stdout
    assert out.stdout.count("terminated loop returned") == 2

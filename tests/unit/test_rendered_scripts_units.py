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
from support import GOLDEN

from rushhpc.launchers.batch import BatchLauncher
from rushhpc.launchers.pbs.launcher import PbsLauncher
from rushhpc.launchers.slurm.launcher import SlurmLauncher

OLD_SLURM_TEMPLATE = GOLDEN / "regressions" / "slurm.sh.j2-253e4df"
REGEN = os.environ.get("RUSHHPC_REGEN_GOLDEN") == "1"
NETWORK = "golden-net"
START_ID = "0123456789abcdef"
PREFIX = "w-abcd1234"
PYTHON = "/opt/python/bin/python3"  # fixed: the render must not depend on this machine's interpreter

# name -> (scheduler, number of workers, offset, launcher options)
CASES: dict[str, tuple[str, int, int, dict[str, Any]]] = {
    "slurm-single": ("slurm", 1, 0, {}),
    "slurm-array": ("slurm", 4, 0, {}),
    "slurm-array-throttle": ("slurm", 4, 0, {"array_throttle": 2}),
    "slurm-second-chunk": ("slurm", 3, 4, {}),
    "slurm-time": ("slurm", 1, 0, {"time": "00:10:00"}),
    "slurm-walltime-days": ("slurm", 2, 0, {"walltime": "1-02:00:00", "walltime_margin": 120}),
    "slurm-all": ("slurm", 4, 0, {
        "job_name": "golden-job", "partition": "debug", "account": "golden", "qos": "normal", "time": "1h30m",
        "nodes": 1, "cpus_per_task": 2, "mem": "1G", "exclusive": True, "requeue": True, "array_throttle": 3,
        "extra_directives": ["--comment=golden", "--mail-type=NONE"],
        "setup": ["export GOLDEN=1", "umask 077"], "teardown": ["echo teardown"],
    }),
    "slurm-output-home": ("slurm", 2, 0, {"output": "~/rushhpc-golden/%A_%a.out", "error": "~/rushhpc-golden/%A_%a.err"}),
    "slurm-output-relative": ("slurm", 1, 0, {"output": "logs/%A_%a.out", "error": "logs/%A_%a.err"}),
    "slurm-extra-one-string": ("slurm", 1, 0, {"extra_directives": "--comment=one", "setup": "true"}),
    "slurm-gpus": ("slurm", 1, 0, {"gpus": 1}),
    "slurm-constraint": ("slurm", 1, 0, {"constraint": "fast"}),
    "pbs-single": ("pbs", 1, 0, {}),
    "pbs-array": ("pbs", 4, 0, {}),
    "pbs-array-throttle": ("pbs", 4, 0, {"array_throttle": 2}),
    "pbs-second-chunk": ("pbs", 3, 4, {}),
    "pbs-time": ("pbs", 1, 0, {"time": "00:10:00"}),
    "pbs-all": ("pbs", 4, 0, {
        "job_name": "golden-job", "queue": "workq", "account": "golden", "time": "2h", "nodes": 2,
        "cpus_per_task": 4, "mem": "8gb", "gpus": 1, "exclusive": True, "requeue": True,
        "extra_directives": ["-m n", "-W umask=077"],
        "setup": ["export GOLDEN=1", "umask 077"], "teardown": ["echo teardown"],
    }),
    "pbs-partition-is-queue": ("pbs", 1, 0, {"partition": "workq"}),
    "pbs-mem-only": ("pbs", 1, 0, {"mem": "2gb"}),
    "pbs-gpus-only": ("pbs", 1, 0, {"gpus": 2}),
}
SLURM_CASES = [c for c, v in CASES.items() if v[0] == "slurm"]
# what the test cluster cannot provide: sbatch --test-only must refuse it for that reason alone
TEST_CLUSTER_LACKS = {"slurm-gpus": "Invalid generic resource", "slurm-constraint": "Invalid feature specification"}

# Options an sbatch/qsub of the supported versions knows, of those the templates and the cases use.
SBATCH_OPTIONS = {
    "job-name", "array", "output", "error", "partition", "account", "qos", "time", "signal", "nodes",
    "cpus-per-task", "mem", "gpus", "constraint", "exclusive", "requeue", "no-requeue", "comment", "mail-type",
}
QSUB_OPTIONS = {"-N", "-J", "-o", "-e", "-q", "-A", "-l", "-r", "-m", "-W"}
QSUB_RESOURCES = {"walltime", "select", "place"}


class Context:
    """The LaunchContext of a fixed network in a given run folder."""

    def __init__(self, run_dir: Path):
        self.network_id = NETWORK
        self.run_dir = run_dir

    def credentials_file(self) -> Path:
        return self.run_dir / "credentials.json"

    def signing_key_file(self) -> Path:
        return self.run_dir / "signing.key"

    def store_records(self, records: Any) -> None:
        pass

    def record(self, worker_id: str) -> None:
        return None

    def worker_field(self, worker_ids: Any, field: str) -> list:
        return []


def launcher_for(case: str, run_dir: Path, template: Path | None = None) -> BatchLauncher:
    scheduler, _, _, options = CASES[case]
    cls = SlurmLauncher if scheduler == "slurm" else PbsLauncher
    opts = {"python": PYTHON, **options, **({"template": str(template)} if template else {})}
    return cls(Context(run_dir), opts)


def render(case: str, run_dir: Path, template: Path | None = None) -> str:
    _, n, offset, _ = CASES[case]
    return launcher_for(case, run_dir, template).render(START_ID, PREFIX, n, offset, {})


def normalise(text: str, run_dir: Path) -> str:
    """Replace what differs between machines (longest first: the run folder may be under the others)."""
    for path, name in sorted([(str(run_dir), "{RUN}"), (os.getcwd(), "{CWD}"), (str(Path.home()), "{HOME}")],
                             key=lambda p: -len(p[0])):
        text = text.replace(path, name)
    return text


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output paths are made absolute from here
    d = tmp_path / "runs" / NETWORK
    d.mkdir(parents=True)
    return d


# ------------------------------------------------------------------ reading directives back
def directive_block(text: str, prefix: str) -> tuple[list[str], list[str]]:
    """The lines sbatch/qsub read directives from (up to the first command), and the directive-looking
    lines after it (which the scheduler ignores silently)."""
    lines = text.splitlines()
    for i, line in enumerate(lines[1:], 1):
        if line.strip() and not line.lstrip().startswith("#"):
            return lines[:i], [x for x in lines[i:] if prefix in x]
    return lines, []


def parse_sbatch(text: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(option, value) per ``#SBATCH`` line, and the problems found."""
    block, after = directive_block(text, "#SBATCH")
    problems = [f"directive after the first command (sbatch ignores it): {x!r}" for x in after]
    out = []
    for line in block:
        if "#SBATCH" not in line:
            continue
        m = re.fullmatch(r"#SBATCH --([a-z][a-z-]*)(?:=(\S+))?", line)
        if line.count("#SBATCH") != 1 or not m:
            problems.append(f"not exactly one directive on the line: {line!r}")
            continue
        if m.group(1) not in SBATCH_OPTIONS:
            problems.append(f"unknown sbatch option --{m.group(1)} in {line!r}")
        out.append((m.group(1), m.group(2)))
    return out, problems


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


def expected_sbatch(case: str, run_dir: Path) -> list[tuple[str, str | None]]:
    """The directives a case must give sbatch, written from the options (not from the template)."""
    _, n, _, o = CASES[case]
    logs = run_dir / "workers"

    def absolute(p: str) -> str:
        return str(Path(p).expanduser().absolute())

    time = {"00:10:00": ("00:10:00", 60), "1h30m": ("01:30:00", 300), "1-02:00:00": ("26:00:00", 120)}
    out: list[tuple[str, str | None]] = [
        ("job-name", o.get("job_name", f"rushhpc-{NETWORK}")),
        ("array", f"0-{n - 1}" + (f"%{o['array_throttle']}" if o.get("array_throttle") else "")),
        ("output", absolute(o["output"]) if o.get("output") else f"{logs}/%A_%a.out"),
        ("error", absolute(o["error"]) if o.get("error") else f"{logs}/%A_%a.err"),
    ]
    for key in ("partition", "account", "qos"):
        if o.get(key):
            out.append((key, o[key]))
    limit = o.get("time") or o.get("walltime")
    if limit:
        hms, margin = time[limit]
        out += [("time", hms), ("signal", f"B:USR2@{o.get('walltime_margin', margin)}")]
    for key in ("nodes", "cpus_per_task", "mem", "gpus", "constraint"):
        if o.get(key):
            out.append((key.replace("_", "-"), str(o[key])))
    if o.get("exclusive"):
        out.append(("exclusive", None))
    out.append(("requeue", None) if o.get("requeue") else ("no-requeue", None))
    extra = o.get("extra_directives") or []
    for line in [extra] if isinstance(extra, str) else extra:
        name, _, value = line[2:].partition("=")
        out.append((name, value or None))
    return out


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


def sbatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sbatch", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


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



"""Helpers shared by backends/test_rendered_scripts.py and unit/test_rendered_scripts_units.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rushhpc.launchers.batch import BatchLauncher
from rushhpc.launchers.pbs.launcher import PbsLauncher
from rushhpc.launchers.slurm.launcher import SlurmLauncher

NETWORK = "golden-net"


START_ID = "0123456789abcdef"


PREFIX = "w-abcd1234"


PYTHON = "/opt/python/bin/python3"  # fixed: the render must not depend on this machine's interpreter


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


SBATCH_OPTIONS = {
    "job-name", "array", "output", "error", "partition", "account", "qos", "time", "signal", "nodes",
    "cpus-per-task", "mem", "gpus", "constraint", "exclusive", "requeue", "no-requeue", "comment", "mail-type",
}


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


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output paths are made absolute from here
    d = tmp_path / "runs" / NETWORK
    d.mkdir(parents=True)
    return d


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


def sbatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sbatch", *args], capture_output=True, text=True, timeout=60, cwd=cwd)

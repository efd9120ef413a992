"""PBS Pro: workers as one job array (``qsub -J``) per launch.

Polling asks ``qstat -x -t -w`` once for all of the network's arrays (parents
and subjobs, finished ones included), then ``qstat -x -f -F json`` only for the
jobs that just finished, to read their ``Exit_status``. Both answers are read
leniently: exit code 153 (an unknown id) still carries the known ones, and
PBS's JSON, which does not always escape quotes and backslashes, falls back
to a field-by-field reading.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from rushhpc.errors import RushWorkerError
from rushhpc.launchers.base import JobStatus, LaunchContext, LaunchRecord
from rushhpc.launchers.batch import BatchLauncher

STATES = {
    "Q": "pending", "W": "pending", "T": "pending", "M": "pending",
    "H": "held",
    "R": "running", "B": "running",
    "E": "finishing",
    "S": "suspended", "U": "suspended",
    "F": "finished", "X": "finished",
}


def short_id(job_id: str) -> str:
    """``123[4].server.domain`` -> ``123[4]``: qstat's table truncates the server name."""
    return job_id.split(".", 1)[0].rstrip("*")


def exit_reason(exit_status: int | None) -> str:
    """PBS Exit_status -> our reason (``None``: the job never ran, it was deleted)."""
    if exit_status is None:
        return "cancelled"
    if exit_status == 0:
        return "completed"
    if exit_status == -29:
        return "timeout"  # JOB_EXEC_KILL_WALLTIME (PBS Pro 2021+; older servers report 271)
    if exit_status < 0:
        return "failed_to_start"
    if exit_status >= 256:
        return "cancelled"  # the job shell was killed by a signal: qdel, qsig
    if exit_status in (128 + 15, 128 + 9):
        return "cancelled"  # the shell forwarded qdel's TERM to the worker and exited with its status
    return "failed"


def parse_table(text: str) -> dict[str, str]:
    """``qstat [-x] [-t] [-w]`` table -> short id -> state letter."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and not line.startswith(("Job id", "---")) and len(parts[-2]) == 1:
            out[short_id(parts[0])] = parts[-2]
    return out


def parse_exit_statuses(text: str) -> dict[str, int | None]:
    """``qstat -f -F json`` -> short id -> Exit_status (None when absent). Survives invalid JSON."""
    try:
        jobs = json.loads(text).get("Jobs", {})
        return {short_id(j): (int(a["Exit_status"]) if "Exit_status" in a else None) for j, a in jobs.items()}
    except (ValueError, AttributeError, TypeError, KeyError):
        pass
    # PBS leaves quotes and backslashes in values unescaped: read the job headers and Exit_status lines.
    out: dict[str, int | None] = {}
    heads = list(re.finditer(r'^\s*"([0-9]+(?:\[[0-9]*\])?\.[^"]*)"\s*:\s*\{', text, re.MULTILINE))
    for i, m in enumerate(heads):
        block = text[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        code = re.search(r'^\s*"Exit_status"\s*:\s*(-?\d+)', block, re.MULTILINE)
        out[short_id(m.group(1))] = int(code.group(1)) if code else None
    return out


class PbsLauncher(BatchLauncher):
    """Start workers with ``qsub -J``; poll with ``qstat``; kill with ``qsig``/``qdel``.

    Example:
        >>> rush_plan(worker_type="pbs", launcher_options={"queue": "workq", "time": "02:00:00"})
        >>> rush.start_workers(queue_loop, n_workers=50, fun=objective)   # one qsub
    """

    name = "pbs"
    scheduler = "pbs"
    template_package = "rushhpc.launchers.pbs"
    memory_style = "pbs"

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.exit_statuses: dict[str, int | None] = {}

    def submit(self, script: Path, n: int) -> str:
        out = self.run(["qsub", str(script)])
        if out.returncode != 0:
            raise RushWorkerError(f"qsub refused the worker script {script}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout.strip().splitlines()[-1]

    def element_id(self, base_id: str, index: int, n: int) -> str:
        return base_id.replace("[]", f"[{index}]") if "[]" in base_id else base_id

    def stderr_path(self, base_id: str, index: int, n: int) -> str:
        return str(self.log_dir / f"{self.element_id(base_id, index, n)}.err")

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        ids = {short_id(r.job_id): r for r in records if r.job_id}
        if not ids:
            return {}
        parents = sorted({re.sub(r"\[\d+\]", "[]", r.job_id or "") for r in ids.values()})
        out = self.run(["qstat", "-x", "-t", "-w", *parents], timeout=60)  # exit 153 still lists the known
        letters = parse_table(out.stdout)
        ended = [sid for sid, st in letters.items() if sid in ids and STATES.get(st) == "finished"
                 and sid not in self.exit_statuses]
        if ended:
            full = [ids[sid].job_id or "" for sid in ended]
            out = self.run(["qstat", "-x", "-f", "-F", "json", *full], timeout=60)
            codes = parse_exit_statuses(out.stdout)
            for sid in ended:
                self.exit_statuses[sid] = codes.get(sid)
        result = {}
        for sid, rec in ids.items():
            letter = letters.get(sid)
            if letter is None:
                continue
            state = STATES.get(letter, "pending")
            if state == "finished":
                code = self.exit_statuses.get(sid)
                result[rec.worker_id] = JobStatus("finished", reason=exit_reason(code),
                                                  raw=f"{letter} Exit_status={code}", exit_code=code)
            else:
                result[rec.worker_id] = JobStatus(state, raw=letter)
        return result

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        ids = [r.job_id for r in records if r.job_id]
        if not ids:
            return
        # TERM first (the worker's trap), then qdel (TERM, KILL after kill_delay).
        # Exit 35 (finished) and 153 (unknown) answers count as success.
        self.run(["qsig", "-s", "TERM", *ids], timeout=60)
        self.run(["qdel", *ids], timeout=60)

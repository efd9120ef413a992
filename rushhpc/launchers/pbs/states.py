"""What PBS Pro's answers mean: its job state letters on `JobState`, its exit statuses on reasons,
and the parsers of ``qstat``'s output (the table and the JSON, leniently).

Everything that reads text PBS prints lives here; the launcher (`rushhpc.launchers.pbs.launcher`)
runs the commands and hands their output here.
"""

from __future__ import annotations

import json
import re

from rushhpc.core.records import JobStatus
from rushhpc.core.states import JobState, LostReason

# qstat's state letter -> our JobState
STATES: dict[str, JobState] = {
    "Q": JobState.PENDING, "W": JobState.PENDING, "T": JobState.PENDING, "M": JobState.PENDING,
    "H": JobState.HELD,
    "R": JobState.RUNNING, "B": JobState.RUNNING,
    "E": JobState.FINISHING,
    "S": JobState.SUSPENDED, "U": JobState.SUSPENDED,
    "F": JobState.FINISHED, "X": JobState.FINISHED,
}


def short_id(job_id: str) -> str:
    """``123[4].server.domain`` -> ``123[4]``: qstat's table truncates the server name."""
    return job_id.split(".", 1)[0].rstrip("*")


def exit_reason(exit_status: int | None) -> LostReason:
    """PBS Exit_status -> our reason (``None``: the job never ran, it was deleted)."""
    if exit_status is None:
        return LostReason.CANCELLED
    if exit_status == 0:
        return LostReason.COMPLETED
    if exit_status == -29:
        return LostReason.TIMEOUT  # JOB_EXEC_KILL_WALLTIME (PBS Pro 2021+; older servers report 271)
    if exit_status < 0:
        return LostReason.FAILED_TO_START
    if exit_status >= 256:
        return LostReason.CANCELLED  # the job shell was killed by a signal: qdel, qsig
    if exit_status in (128 + 15, 128 + 9):
        return LostReason.CANCELLED  # the shell forwarded qdel's TERM to the worker and exited with its status
    return LostReason.FAILED


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


def status_of(letter: str, exit_status: int | None) -> JobStatus:
    """A job's `JobStatus` from its qstat state letter and, once finished, its Exit_status.

    Example:
        >>> str(status_of("F", 0).reason), str(status_of("Q", None).state)
        ('completed', 'pending')
    """
    state = STATES.get(letter, JobState.PENDING)
    if state == JobState.FINISHED:
        return JobStatus(state, reason=exit_reason(exit_status), raw=f"{letter} Exit_status={exit_status}",
                         exit_code=exit_status)
    return JobStatus(state, raw=letter)

"""What SLURM's answers mean: its job states on `JobState`, and the parsers of its commands' output.

Everything that reads text SLURM prints lives here (as Parsl keeps a provider's state table
beside the provider): ``squeue``, ``sacct`` and ``scontrol`` lines become `JobStatus`es, a
finished one with its reason (completed, failed, cancelled, timeout, out_of_memory, node_fail,
preempted); ``scontrol show config`` and ``sacctmgr`` give the site's limits, ``sacct`` a job's
allocation (`Usage`). For the srun launcher: srun's task lines, ``scontrol show node``, the
allocation's CPUs and ``squeue --steps``. The launchers (`rushhpc.launchers.slurm.launcher`,
`rushhpc.launchers.srun`) run the commands and hand their output here.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from typing import Callable, Iterable

from rushhpc.core.records import JobStatus, Usage
from rushhpc.core.states import JobState, LostReason

# SLURM job state (squeue %T, sacct State, scontrol JobState) -> (our JobState, the reason it ended)
STATES: dict[str, tuple[JobState, LostReason | str]] = {
    "PENDING": (JobState.PENDING, ""),
    "REQUEUED": (JobState.PENDING, ""),
    "RESV_DEL_HOLD": (JobState.PENDING, ""),
    "REQUEUE_FED": (JobState.PENDING, ""),
    "REQUEUE_HOLD": (JobState.HELD, ""),
    "CONFIGURING": (JobState.STARTING, ""),
    "RUNNING": (JobState.RUNNING, ""),
    "RESIZING": (JobState.RUNNING, ""),
    "SIGNALING": (JobState.RUNNING, ""),
    "COMPLETING": (JobState.FINISHING, ""),
    "STAGE_OUT": (JobState.FINISHING, ""),
    "SUSPENDED": (JobState.SUSPENDED, ""),
    "STOPPED": (JobState.SUSPENDED, ""),
    "PREEMPTED": (JobState.FINISHED, LostReason.PREEMPTED),
    "COMPLETED": (JobState.FINISHED, LostReason.COMPLETED),
    "FAILED": (JobState.FINISHED, LostReason.FAILED),
    "SPECIAL_EXIT": (JobState.FINISHED, LostReason.FAILED),
    "CANCELLED": (JobState.FINISHED, LostReason.CANCELLED),
    "TIMEOUT": (JobState.FINISHED, LostReason.TIMEOUT),
    "DEADLINE": (JobState.FINISHED, LostReason.TIMEOUT),
    "OUT_OF_MEMORY": (JobState.FINISHED, LostReason.OUT_OF_MEMORY),
    "NODE_FAIL": (JobState.FINISHED, LostReason.NODE_FAIL),
    "BOOT_FAIL": (JobState.FINISHED, LostReason.NODE_FAIL),
}
HELD_REASONS = re.compile(r"JobHeld|held", re.IGNORECASE)


def status_from(state: str, reason: str = "", exit_code: str = "") -> JobStatus:
    """Map a SLURM state string (``CANCELLED by 0`` included) to a `JobStatus`."""
    raw = state.strip()
    key = raw.split()[0].rstrip("+") if raw else ""
    # no state yet: pending; a state this table does not know (a newer SLURM's): an end we cannot name
    job_state, why = STATES.get(key, (JobState.PENDING, "") if not key else (JobState.FINISHED, LostReason.FAILED))
    if job_state == JobState.PENDING and HELD_REASONS.search(reason or ""):
        job_state = JobState.HELD
    code = None
    if exit_code and ":" in exit_code:
        rc, sig = exit_code.split(":", 1)
        code = int(rc) if rc.isdigit() else None
        if why == LostReason.COMPLETED and code not in (0, None):
            why = LostReason.FAILED
    return JobStatus(job_state, reason=why, raw=raw, exit_code=code)


def expand_ids(job_id: str) -> list[str]:
    """``123_[0-2,5]`` -> ``123_0 123_1 123_2 123_5``; other ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([0-9,\-%]+)\]", job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += [f"{base}_{i}" for i in range(int(lo), int(hi) + 1)]
        elif part:
            out.append(f"{base}_{part}")
    return out


def _by_job(rows: Iterable[list[str]], status: Callable[[list[str]], JobStatus]) -> dict[str, JobStatus]:
    """Each row's status under every job id its first field names (an array's ``123_[0-2]`` is three)."""
    return {jid: status(parts) for parts in rows for jid in expand_ids(parts[0])}


def _pipe_rows(text: str, fields: int) -> list[list[str]]:
    """The ``|``-separated lines of ``text`` with at least ``fields`` fields."""
    return [parts for parts in (line.strip().split("|") for line in text.splitlines()) if len(parts) >= fields]


def parse_squeue(text: str) -> dict[str, JobStatus]:
    """Lines of ``squeue -h -r -o '%i|%T|%r'``.

    Example:
        >>> parse_squeue("12_[0-1]|PENDING|JobHeldUser")["12_1"].state.name
        'HELD'
    """
    return _by_job(_pipe_rows(text, 2), lambda p: status_from(p[1], p[2] if len(p) > 2 else ""))


def parse_sacct(text: str) -> dict[str, JobStatus]:
    """Lines of ``sacct -X -P -n -o JobID,State,ExitCode,Reason``.

    Example:
        >>> parse_sacct("7|OUT_OF_MEMORY|0:125|None")["7"].reason
        <LostReason.OUT_OF_MEMORY: 'out_of_memory'>
    """
    return _by_job(_pipe_rows(text, 3), lambda p: status_from(p[1], p[3] if len(p) > 3 else "", p[2]))


def parse_scontrol(text: str) -> dict[str, JobStatus]:
    """``scontrol -o show job`` (one job per line, key=value)."""
    out = {}
    for line in text.splitlines():
        kv: dict[str, str] = {m.group(1): m.group(2) for m in re.finditer(r"(\w+)=(\S*)", line)}
        if "JobId" not in kv:
            continue
        task = kv.get("ArrayTaskId", "")
        if task in ("4294967294", "N/A", "*"):
            # the record of an array's elements not split off yet (e.g. cancelled while pending):
            # it stands for every element of the array that has no record of its own
            jid = f"{kv['ArrayJobId']}_*"
        elif task:
            jid = f"{kv['ArrayJobId']}_[{task}]" if re.fullmatch(r"[0-9,\-%]+", task) and not task.isdigit() \
                else f"{kv['ArrayJobId']}_{task}"
        else:
            jid = kv["JobId"]
        for j in expand_ids(jid):
            out[j] = status_from(kv.get("JobState", ""), kv.get("Reason", ""), kv.get("ExitCode", ""))
    return out


def sacct_time(text: str) -> float | None:
    """``2026-12-01T09:30:00`` (local time, as sacct prints it) -> Unix seconds; Unknown/None -> None.

    Example:
        >>> sacct_time("Unknown") is None
        True
    """
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


# slurmstepd's words when a step exceeds --mem (jobacct OverMemoryKill), and the kernel's: SLURM without
# cgroups ends such a job FAILED (signal 9), so its stderr is what says why
OUT_OF_MEMORY_PATTERN = re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill|out of memory", re.IGNORECASE)


def accounting_disabled(output: str) -> bool:
    """Whether an ``sacct`` answer says the site keeps no accounts (then sacct is not asked again).

    Example:
        >>> accounting_disabled("sacct: error: Slurm accounting storage is disabled")
        True
    """
    return "accounting storage is disabled" in output.lower()


def parse_max_array_size(config: str) -> int | None:
    """``MaxArraySize`` of ``scontrol show config`` (None when absent).

    Example:
        >>> parse_max_array_size("MaxArraySize            = 1001\\nMaxJobCount = 10000")
        1001
    """
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.MULTILINE)
    return int(m.group(1)) if m else None


def parse_max_submit(text: str) -> int | None:
    """The smallest MaxSubmitJobs of ``sacctmgr -n -P show assoc user=U format=MaxSubmit`` (None: no limit set).

    Example:
        >>> parse_max_submit("\\n50\\n20\\n"), parse_max_submit("\\n")
        (20, None)
    """
    values = [int(v) for v in text.split() if v.strip().isdigit()]
    return min(values) if values else None


# What `parse_usage` reads: ``sacct -X -P -n -j IDS -o USAGE_FIELDS``.
USAGE_FIELDS = "JobID,Start,End,AllocCPUS,AllocTRES"


def parse_usage(text: str) -> dict[str, Usage]:
    """Job id -> its allocation (`Usage`: start, end, cores, GPUs of AllocTRES) from lines of `USAGE_FIELDS`.

    Example:
        >>> parse_usage("17_0|Unknown|Unknown|2|cpu=2,gres/gpu=1,mem=1G")["17_0"].gpus
        1
    """
    found: dict[str, Usage] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        gpus = re.search(r"gres/gpu=(\d+)", parts[4])
        found[parts[0]] = Usage(start=sacct_time(parts[1]), end=sacct_time(parts[2]),
                                cpus=int(parts[3]) if parts[3].isdigit() else 1, gpus=int(gpus.group(1)) if gpus else 0)
    return found


# ------------------------------------------------------------------ srun (rushhpc.launchers.srun)
# srun's stderr line for tasks that ended badly, and the signal names it writes
_TASK_LINE = re.compile(r"^srun: error: (?P<node>\S+): tasks? (?P<tasks>[\d,\-]+): (?P<what>.+?)\s*$", re.MULTILINE)
_SIGNALS = {signal.strsignal(s) or s.name: int(s) for s in signal.Signals}


def parse_task_lines(text: str) -> dict[int, int]:
    """srun's stderr -> task number -> exit code (negative: killed by that signal).

    Example:
        >>> parse_task_lines("srun: error: n2: task 3: Killed\\nsrun: error: n1: tasks 0-1: Exited with exit code 2")
        {3: -9, 0: 2, 1: 2}
    """
    out: dict[int, int] = {}
    for m in _TASK_LINE.finditer(text):
        what = m.group("what")
        code_m = re.fullmatch(r"Exited with exit code (\d+)", what)
        code = int(code_m.group(1)) if code_m else -_SIGNALS.get(what.split(" (")[0], int(signal.SIGKILL))
        for part in m.group("tasks").split(","):
            lo, _, hi = part.partition("-")
            for t in range(int(lo), int(hi or lo) + 1):
                out[t] = code
    return out


def parse_node(text: str) -> dict[str, str]:
    """``scontrol show node NAME`` (multi-line or ``-o``) -> its key=value fields.

    Example:
        >>> parse_node("NodeName=cn01 Arch=x86_64\\n   NodeAddr=10.1.0.1 NodeHostName=cn01")["NodeAddr"]
        '10.1.0.1'
    """
    return {m.group(1): m.group(2) for m in re.finditer(r"(\w+)=(\S*)", text)}


def allocation_cpus(spec: str) -> int:
    """SLURM_JOB_CPUS_PER_NODE (``4(x2),2``) -> total CPUs.

    Example:
        >>> allocation_cpus("4(x2),2")
        10
    """
    total = 0
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m:
            total += int(m.group(1)) * int(m.group(2) or 1)
    return total


# What `parse_steps` reads: ``squeue -h -s -j IDS -o STEP_FORMAT``.
STEP_FORMAT = "%i|%j"


def parse_steps(text: str) -> dict[str, str]:
    """Step name -> ``JOBID.STEPID`` from lines of `STEP_FORMAT`.

    Example:
        >>> parse_steps("290.0|rushhpc-w-1a2b\\n290.batch|\\n")
        {'rushhpc-w-1a2b': '290.0'}
    """
    found = {}
    for line in text.splitlines():
        step, _, name = line.strip().partition("|")
        if name:
            found[name] = step
    return found

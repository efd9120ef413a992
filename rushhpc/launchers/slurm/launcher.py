"""SLURM: workers as one job array per launch (chunked by MaxArraySize).

Job states come from one ``squeue`` per poll for the whole network (filtered by
the network's job name). Jobs that just left the queue are read from one
``scontrol -o show job`` (it keeps them for MinJobAge, without accounting's
lag), older ones from one ``sacct`` (skipped when accounting is disabled).
A job whose fate is known is not asked about again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from rushhpc.errors import RushWorkerError
from rushhpc.launchers.base import JobStatus, LaunchContext, LaunchRecord
from rushhpc.launchers.batch import BatchLauncher

# SLURM job state -> (worker-side state, reason)
STATES: dict[str, tuple[str, str]] = {
    "PENDING": ("pending", ""),
    "REQUEUED": ("pending", ""),
    "RESV_DEL_HOLD": ("pending", ""),
    "REQUEUE_FED": ("pending", ""),
    "REQUEUE_HOLD": ("held", ""),
    "CONFIGURING": ("starting", ""),
    "RUNNING": ("running", ""),
    "RESIZING": ("running", ""),
    "SIGNALING": ("running", ""),
    "COMPLETING": ("finishing", ""),
    "STAGE_OUT": ("finishing", ""),
    "SUSPENDED": ("suspended", ""),
    "STOPPED": ("suspended", ""),
    "PREEMPTED": ("finished", "preempted"),
    "COMPLETED": ("finished", "completed"),
    "FAILED": ("finished", "failed"),
    "SPECIAL_EXIT": ("finished", "failed"),
    "CANCELLED": ("finished", "cancelled"),
    "TIMEOUT": ("finished", "timeout"),
    "DEADLINE": ("finished", "timeout"),
    "OUT_OF_MEMORY": ("finished", "out_of_memory"),
    "NODE_FAIL": ("finished", "node_fail"),
    "BOOT_FAIL": ("finished", "node_fail"),
}
HELD_REASONS = re.compile(r"JobHeld|held", re.IGNORECASE)


def status_from(state: str, reason: str = "", exit_code: str = "") -> JobStatus:
    """Map a SLURM state string (``CANCELLED by 0`` included) to a `JobStatus`."""
    raw = state.strip()
    key = raw.split()[0].rstrip("+") if raw else ""
    worker_state, why = STATES.get(key, ("pending" if not key else "finished", "" if not key else "failed"))
    if worker_state == "pending" and HELD_REASONS.search(reason or ""):
        worker_state = "held"
    code = None
    if exit_code and ":" in exit_code:
        rc, sig = exit_code.split(":", 1)
        code = int(rc) if rc.isdigit() else None
        if why == "completed" and code not in (0, None):
            why = "failed"
    return JobStatus(worker_state, reason=why, raw=raw, exit_code=code)


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


def parse_squeue(text: str) -> dict[str, JobStatus]:
    """Lines of ``squeue -h -r -o '%i|%T|%r'``."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2:
            for jid in expand_ids(parts[0]):
                out[jid] = status_from(parts[1], parts[2] if len(parts) > 2 else "")
    return out


def parse_sacct(text: str) -> dict[str, JobStatus]:
    """Lines of ``sacct -X -P -n -o JobID,State,ExitCode,Reason``."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3:
            for jid in expand_ids(parts[0]):
                out[jid] = status_from(parts[1], parts[3] if len(parts) > 3 else "", parts[2])
    return out


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


def _sacct_time(text: str) -> float | None:
    """``2026-12-01T09:30:00`` (local time, as sacct prints it) -> Unix seconds; Unknown/None -> None."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


class SlurmLauncher(BatchLauncher):
    """Start workers with ``sbatch --array``; one ``squeue`` per poll; kill with ``scancel``.

    Example:
        >>> rush_plan(worker_type="slurm", launcher_options={"partition": "debug", "time": "01:00:00"})
        >>> rush.start_workers(queue_loop, n_workers=100, fun=objective)   # one sbatch
    """

    name = "slurm"
    scheduler = "slurm"
    template_package = "rushhpc.launchers.slurm"
    # slurmstepd's words when a step exceeds --mem (jobacct OverMemoryKill), and the kernel's
    out_of_memory_pattern = re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill|out of memory", re.IGNORECASE)

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.accounting: bool | None = None
        self._max_array: int | None = None
        self._max_submit: int | None = None
        self._asked_max_submit = False

    def max_array_size(self) -> int:
        if self._max_array is None:
            out = self.run(["scontrol", "show", "config"], timeout=30)
            m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out.stdout, re.MULTILINE)
            self._max_array = int(m.group(1)) if m else 1001
        return self._max_array

    def max_submit(self) -> int | None:
        """The user's MaxSubmitJobs from the accounting database (one sacctmgr call, cached);
        None when it sets none (or accounting is off)."""
        if not self._asked_max_submit:
            self._asked_max_submit = True
            out = self.run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={self.user()}", "format=MaxSubmit"],
                           timeout=30)
            values = [int(v) for v in out.stdout.split() if v.strip().isdigit()] if out.returncode == 0 else []
            self._max_submit = min(values) if values else None
        return self._max_submit

    def usage(self, records: Sequence[LaunchRecord]) -> dict[str, Any]:
        """Start, End and AllocCPUS (and GPUs from AllocTRES) of each job, from one sacct call."""
        from rushhpc.manager.accounting import Usage

        ids = {r.job_id: r.worker_id for r in records if r.job_id}
        if not ids or self.accounting is False:
            return {}
        out = self.run(["sacct", "-X", "-P", "-n", "-j", ",".join(ids), "-o", "JobID,Start,End,AllocCPUS,AllocTRES"],
                       timeout=60)
        if out.returncode != 0:
            if "accounting storage is disabled" in (out.stderr + out.stdout).lower():
                self.accounting = False
            return {}
        found: dict[str, Any] = {}
        for line in out.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 5 or parts[0] not in ids:
                continue
            gpus = re.search(r"gres/gpu=(\d+)", parts[4])
            found[ids[parts[0]]] = Usage(start=_sacct_time(parts[1]), end=_sacct_time(parts[2]),
                                         cpus=int(parts[3]) if parts[3].isdigit() else 1,
                                         gpus=int(gpus.group(1)) if gpus else 0)
        return found

    def submit(self, script: Path, n: int) -> str:
        out = self.run(["sbatch", "--parsable", str(script)], check=False)
        if out.returncode != 0:
            raise RushWorkerError(f"sbatch refused the worker script {script}: {out.stderr.strip()}")
        return out.stdout.strip().split(";")[0]

    def element_id(self, base_id: str, index: int, n: int) -> str:
        return f"{base_id}_{index}"

    def stderr_path(self, base_id: str, index: int, n: int) -> str:
        err = self.resources().get("error")
        if err:
            return err.replace("%A", base_id).replace("%a", str(index)).replace("%j", base_id)
        return str(self.log_dir / f"{base_id}_{index}.err")

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        ids = {r.job_id: r.worker_id for r in records if r.job_id}
        if not ids:
            return {}
        name = self.resources()["job_name"]
        out = self.run(["squeue", "-h", "-r", "--name", name, "-u", self.user(), "-o", "%i|%T|%r"], timeout=60)
        found = parse_squeue(out.stdout) if out.returncode == 0 else {}
        missing = [j for j in ids if j not in found]
        if missing:
            found.update(self._left_queue(missing))
        return {ids[j]: st for j, st in found.items() if j in ids}

    def _left_queue(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """Jobs no longer in squeue: scontrol knows them for MinJobAge without accounting's lag;
        sacct (when accounting is on) for the older ones."""
        out = self.run(["scontrol", "-o", "show", "job"], timeout=60)
        parsed = parse_scontrol(out.stdout) if out.returncode == 0 else {}
        found = {j: st for j, st in parsed.items() if j in set(job_ids)}
        for j in job_ids:  # elements covered by their array's unsplit record
            base = j.split("_", 1)[0]
            if j not in found and "_" in j and f"{base}_*" in parsed:
                found[j] = parsed[f"{base}_*"]
        missing = [j for j in job_ids if j not in found]
        if missing and self.accounting is not False:
            out = self.run(["sacct", "-X", "-P", "-n", "-j", ",".join(missing), "-o", "JobID,State,ExitCode,Reason"],
                           timeout=60)
            if out.returncode == 0:
                self.accounting = True
                found.update(parse_sacct(out.stdout))
            elif "accounting storage is disabled" in (out.stderr + out.stdout).lower():
                self.accounting = False
        return found

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        ids = [r.job_id for r in records if r.job_id]
        if not ids:
            return
        # A plain scancel signals the batch shell and every step: SIGCONT (a stopped, hung
        # worker must be able to die), SIGTERM, then SIGKILL after KillWait. No separate
        # `scancel --signal=TERM --full` stage: on a pending job it blocks (seen with 22.05),
        # and it leaves the job FAILED instead of CANCELLED. Answers about jobs that already
        # ended ("already completing", "Invalid job id") are success.
        self.run(["scancel", *ids], timeout=60)

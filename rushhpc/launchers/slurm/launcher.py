"""SLURM: workers as one job array per launch (chunked by MaxArraySize).

Job states come from one ``squeue`` per poll for the whole network (filtered by
the network's job name). Jobs that just left the queue are read from one
``scontrol -o show job`` (it keeps them for MinJobAge, without accounting's
lag), older ones from one ``sacct`` (skipped when accounting is disabled).
A job whose fate is known is not asked about again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rushhpc import defaults
from rushhpc.core.records import Usage
from rushhpc.errors import RushWorkerError
from rushhpc.launchers.base import JobStatus, LaunchContext, LaunchRecord
from rushhpc.launchers.batch import BatchLauncher
from rushhpc.launchers.slurm.states import (
    OUT_OF_MEMORY_PATTERN,
    USAGE_FIELDS,
    accounting_disabled,
    parse_max_array_size,
    parse_max_submit,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    parse_usage,
)


class SlurmLauncher(BatchLauncher):
    """Start workers with ``sbatch --array``; one ``squeue`` per poll; kill with ``scancel``.

    Example:
        >>> rush_plan(worker_type="slurm", launcher_options={"partition": "debug", "time": "01:00:00"})
        >>> rush.start_workers(queue_loop, n_workers=100, fun=objective)   # one sbatch
    """

    name = "slurm"
    scheduler = "slurm"
    template_package = "rushhpc.launchers.slurm"
    out_of_memory_pattern = OUT_OF_MEMORY_PATTERN

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.accounting: bool | None = None
        self._max_array: int | None = None
        self._max_submit: int | None = None
        self._asked_max_submit = False

    def max_array_size(self) -> int:
        if self._max_array is None:
            out = self.run(["scontrol", "show", "config"], timeout=defaults.SCHEDULER_LIMITS_TIMEOUT)
            self._max_array = parse_max_array_size(out.stdout) or defaults.MAX_ARRAY_SIZE
        return self._max_array

    def max_submit(self) -> int | None:
        """The user's MaxSubmitJobs from the accounting database (one sacctmgr call, cached);
        None when it sets none (or accounting is off)."""
        if not self._asked_max_submit:
            self._asked_max_submit = True
            out = self.run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={self.user()}", "format=MaxSubmit"],
                           timeout=defaults.SCHEDULER_LIMITS_TIMEOUT)
            self._max_submit = parse_max_submit(out.stdout) if out.returncode == 0 else None
        return self._max_submit

    def usage(self, records: Sequence[LaunchRecord]) -> dict[str, Usage]:
        """Start, End and AllocCPUS (and GPUs from AllocTRES) of each job, from one sacct call."""
        ids = {r.job_id: r.worker_id for r in records if r.job_id}
        if not ids or self.accounting is False:
            return {}
        out = self.run(["sacct", "-X", "-P", "-n", "-j", ",".join(ids), "-o", USAGE_FIELDS],
                       timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
        if out.returncode != 0:
            if accounting_disabled(out.stderr + out.stdout):
                self.accounting = False
            return {}
        return {ids[job]: usage for job, usage in parse_usage(out.stdout).items() if job in ids}

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
        out = self.run(["squeue", "-h", "-r", "--name", name, "-u", self.user(), "-o", "%i|%T|%r"],
                       timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
        found = parse_squeue(out.stdout) if out.returncode == 0 else {}
        missing = [j for j in ids if j not in found]
        if missing:
            found.update(self._left_queue(missing))
        return {ids[j]: st for j, st in found.items() if j in ids}

    def _left_queue(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """Jobs no longer in squeue: scontrol knows them for MinJobAge without accounting's lag;
        sacct (when accounting is on) for the older ones."""
        out = self.run(["scontrol", "-o", "show", "job"], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
        parsed = parse_scontrol(out.stdout) if out.returncode == 0 else {}
        found = {j: st for j, st in parsed.items() if j in set(job_ids)}
        for j in job_ids:  # elements covered by their array's unsplit record
            base = j.split("_", 1)[0]
            if j not in found and "_" in j and f"{base}_*" in parsed:
                found[j] = parsed[f"{base}_*"]
        missing = [j for j in job_ids if j not in found]
        if missing and self.accounting is not False:
            out = self.run(["sacct", "-X", "-P", "-n", "-j", ",".join(missing), "-o", "JobID,State,ExitCode,Reason"],
                           timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
            if out.returncode == 0:
                self.accounting = True
                found.update(parse_sacct(out.stdout))
            elif accounting_disabled(out.stderr + out.stdout):
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
        self.run(["scancel", *ids], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)

"""submitit: workers submitted through ``submitit.AutoExecutor`` (SLURM, or local processes).

One ``map_array`` call submits all workers as one SLURM job array. Job states
on SLURM are read like the SLURM launcher does (one ``squeue`` by job name per
poll); with submitit's local executor there is no scheduler, and heartbeats decide.

Each job calls the launcher's `worker_entry` (`rushhpc.worker.main.run_worker`, set by the
manager that builds the launcher) with its `WorkerSpec`: the launchers never import the
worker layer above them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Sequence

from rushhpc.errors import RushConfigError
from rushhpc.launchers.base import JobStatus, LaunchContext, Launcher, LaunchRecord
from rushhpc.launchers.batch import SECRET_VARIABLES, parse_duration
from rushhpc.launchers.slurm.launcher import SlurmLauncher

# canonical resource -> submitit parameter
PARAMETERS = {
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "cpus_per_task": "cpus_per_task",
    "nodes": "nodes",
    "mem": "slurm_mem",
    "gpus": "gpus_per_node",
    "constraint": "slurm_constraint",
    "exclusive": "slurm_exclusive",
    "setup": "slurm_setup",
}


@contextlib.contextmanager
def without_secret_variables():
    """Hide the Redis URL variables from a submission made by a library we do not control."""
    saved = {k: os.environ.pop(k) for k in SECRET_VARIABLES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class SubmititLauncher(Launcher):
    """Start workers with submitit; job ids recorded as the SLURM launcher records them.

    Example:
        >>> rush_plan(worker_type="submitit", launcher_options={"partition": "debug", "time": "01:00:00"})
        >>> rush.start_workers(queue_loop, n_workers=8, fun=objective)
    """

    name = "submitit"

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise RushConfigError("worker_type 'submitit' needs the submitit package: pip install submitit") from None
        self.executor: Any = None
        self.jobs: dict[str, Any] = {}
        self._slurm = SlurmLauncher(context, {k: v for k, v in self.options.items() if k in ("job_name",)})

    @property
    def on_slurm(self) -> bool:
        return self.executor is not None and self.executor.cluster == "slurm"


    def _executor(self):
        import submitit

        if self.executor is None:
            folder = Path(self.context.run_dir) / "submitit"
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            cluster = self.options.get("cluster")  # None: auto-detect; "local"; "slurm"
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            params: dict[str, Any] = {"name": self._slurm.resources()["job_name"]}
            seconds = parse_duration(self.options.get("time") or self.options.get("walltime"))
            if seconds:
                params["timeout_min"] = max(1, seconds // 60)
            for key, param in PARAMETERS.items():
                if self.options.get(key) is not None and (self.executor.cluster == "slurm" or not param.startswith("slurm_")):
                    params[param] = self.options[key]
            params.update(self.options.get("submitit_parameters") or {})
            self.executor.update_parameters(**params)
        return self.executor

    def launch(self, start_id: str, worker_ids: list[str], options: dict[str, Any]) -> list[LaunchRecord]:
        if self.worker_entry is None:
            raise RushConfigError(
                "the submitit launcher has no worker entry to submit: build it through a manager "
                "(Rush.start_workers), which sets launcher.worker_entry to rushhpc.worker.main.run_worker"
            )
        executor = self._executor()
        seconds = parse_duration(self.options.get("time") or self.options.get("walltime"))
        managed = self.on_slurm
        specs = [self.spec(start_id, wid, options, managed=managed, walltime=seconds or None,
                           walltime_margin=self._slurm.walltime_margin(seconds) if seconds else None)
                 for wid in worker_ids]
        with without_secret_variables():  # submitit's sbatch exports this process's environment
            jobs = executor.map_array(self.worker_entry, specs)
        self.submissions += 1
        self._slurm.submissions += 1
        records = []
        for wid, job in zip(worker_ids, jobs):
            self.jobs[wid] = job
            records.append(LaunchRecord(
                worker_id=wid, launcher=self.name, job_id=str(job.job_id), start_id=start_id,
                extra={"managed": managed, "stderr": str(job.paths.stderr), "job_name": executor.parameters.get("name", "")},
            ))
        return records

    # The records say whether a job is a SLURM job (``managed``): a manager that attaches to
    # the network has no executor, and polls and kills those jobs as the SLURM launcher does.
    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        on_slurm = [r for r in records if r.managed]
        if not on_slurm:
            return {}
        before = self._slurm.calls
        try:
            return self._slurm.poll(on_slurm)
        finally:
            self.calls += self._slurm.calls - before

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        on_slurm = [r for r in records if r.managed]
        if on_slurm:
            before = self._slurm.calls
            self._slurm.kill(on_slurm)
            self.calls += self._slurm.calls - before
        for rec in records:
            job = self.jobs.get(rec.worker_id)
            if job is not None and not rec.managed:
                job.cancel(check=False)

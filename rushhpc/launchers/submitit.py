"""submitit: workers submitted through ``submitit.AutoExecutor`` (SLURM, or local processes).

One ``map_array`` call submits all workers as one SLURM job array. Job states
on SLURM are read like the SLURM launcher does (one ``squeue`` by job name per
poll); with submitit's local executor there is no scheduler, and heartbeats decide.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import RushConfigError
from .base import JobStatus, Launcher, LaunchRecord
from .batch import SECRET_VARIABLES, parse_duration
from .slurm import SlurmLauncher

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


def submitit_worker(network_id: str, start_id: str, worker_id: str, credentials: str, options: dict) -> int:
    """What each submitit job runs: one rushhpc worker."""
    from ..worker import run_worker

    return run_worker(
        network_id=network_id, start_id=start_id, credentials=credentials, worker_id=worker_id,
        heartbeat_period=options.get("heartbeat_period"), heartbeat_expire=options.get("heartbeat_expire"),
        launcher="submitit", walltime=options.get("walltime"), walltime_margin=options.get("walltime_margin"),
    )


class SubmititLauncher(Launcher):
    """Start workers with submitit; job ids recorded as the SLURM launcher records them.

    Example:
        >>> rush_plan(worker_type="submitit", launcher_options={"partition": "debug", "time": "01:00:00"})
        >>> rush.start_workers(queue_loop, n_workers=8, fun=objective)
    """

    name = "submitit"

    def __init__(self, rush, options=None):
        super().__init__(rush, options)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise RushConfigError("worker_type 'submitit' needs the submitit package: pip install submitit") from None
        self.executor = None
        self.jobs: dict[str, Any] = {}
        self._slurm = SlurmLauncher(rush, {k: v for k, v in self.options.items() if k in ("job_name",)})

    @property
    def managed(self) -> bool:
        return self.executor is not None and self.executor.cluster == "slurm"

    @property
    def calls(self) -> int:
        return self._slurm.calls

    @property
    def startup_grace(self) -> float:
        return float(self.options.get("startup_grace") or 300)

    def behaviour(self, name: str, default: Any) -> Any:
        v = self.options.get(name)
        return default if v is None else v

    def _executor(self):
        import submitit

        if self.executor is None:
            folder = Path(self.rush.run_dir) / "submitit"
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
        executor = self._executor()
        credentials = str(self.rush.credentials_file())
        opts = dict(options)
        seconds = parse_duration(self.options.get("time") or self.options.get("walltime"))
        if seconds:
            opts["walltime"] = seconds
            opts["walltime_margin"] = self._slurm.walltime_margin(seconds)
        n = len(worker_ids)
        with without_secret_variables():  # submitit's sbatch exports this process's environment
            jobs = executor.map_array(
                submitit_worker, [self.rush.network_id] * n, [start_id] * n, worker_ids, [credentials] * n, [opts] * n
            )
        self._slurm.submissions += 1
        records = []
        for wid, job in zip(worker_ids, jobs):
            self.jobs[wid] = job
            records.append(LaunchRecord(
                worker_id=wid, launcher=self.name, job_id=str(job.job_id), start_id=start_id,
                extra={"managed": self.managed, "stderr": str(job.paths.stderr), "job_name": executor.parameters.get("name", "")},
            ))
        return records

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        if not self.managed:
            return {}
        return self._slurm.poll(records)

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        if self.managed:
            self._slurm.kill(records)
            return
        for rec in records:
            job = self.jobs.get(rec.worker_id)
            if job is not None:
                job.cancel(check=False)

    def stderr_tail(self, worker_id: str, n: int = 20) -> str:
        rec = self.rush._records.get(worker_id)
        path = rec.extra.get("stderr") if rec else None
        try:
            return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:]) if path else ""
        except OSError:
            return ""

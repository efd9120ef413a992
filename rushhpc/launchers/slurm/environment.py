"""What a process learns from SLURM's environment about the job it runs in.

A worker registers its job id, node, array index and restart count so that the manager's
reconciler can match it with what ``squeue``/``sacct`` say. Only this module reads
SLURM's variables for that; the worker finds it through `rushhpc.launchers.registry.job_environment`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class SlurmEnvironment:
    """The SLURM job this process runs in.

    ``job_id`` is the id ``squeue`` shows: ``<array job>_<task>`` for an array task, else
    ``SLURM_JOB_ID``; ``restart`` is ``SLURM_RESTART_COUNT`` (how often the job was requeued:
    a requeued job may bring its worker back).

    Example:
        >>> SlurmEnvironment.search({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2"}).job_id
        '10_2'
    """

    scheduler = "slurm"

    job_id: str
    node: str = ""
    array_index: str = ""
    restart: str = "0"

    @classmethod
    def search(cls, env: Mapping[str, str] | None = None) -> SlurmEnvironment | None:
        """The job described by ``env`` (default: this process's environment), or None outside a SLURM job.

        Example:
            >>> SlurmEnvironment.search({}) is None
            True
        """
        env = os.environ if env is None else env
        job_id = env.get("SLURM_JOB_ID")
        if not job_id:
            return None
        array_job, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        return cls(job_id=f"{array_job}_{task}" if array_job and task else job_id,
                   node=env.get("SLURMD_NODENAME", ""), array_index=task or "",
                   restart=env.get("SLURM_RESTART_COUNT", "0"))

    def fields(self) -> dict[str, str]:
        """The fields a worker stores in its hash (``job_id``, ``scheduler``, ``node``, ``array_index``, ``restart``).

        Example:
            >>> SlurmEnvironment("7", node="n1").fields()["scheduler"]
            'slurm'
        """
        return {"job_id": self.job_id, "scheduler": self.scheduler, "node": self.node,
                "array_index": self.array_index, "restart": self.restart}


# what rushhpc.launchers.registry.job_environment asks this folder for
ENVIRONMENT = SlurmEnvironment

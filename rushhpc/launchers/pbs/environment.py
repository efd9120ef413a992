"""What a process learns from PBS's environment about the job it runs in.

A worker registers its job id, node and array index so that the manager's reconciler can
match it with what ``qstat`` says. Only this module reads PBS's variables for that; the
worker finds it through `rushhpc.launchers.registry.job_environment`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class PbsEnvironment:
    """The PBS job this process runs in: ``PBS_JOBID``, ``PBS_ARRAY_INDEX``, and this host as its node
    (PBS sets no variable naming the execution host of the process).

    Example:
        >>> PbsEnvironment.search({"PBS_JOBID": "41[3].pbs", "PBS_ARRAY_INDEX": "3"}).array_index
        '3'
    """

    scheduler = "pbs"

    job_id: str
    node: str = ""
    array_index: str = ""

    @classmethod
    def search(cls, env: Mapping[str, str] | None = None) -> PbsEnvironment | None:
        """The job described by ``env`` (default: this process's environment), or None outside a PBS job.

        Example:
            >>> PbsEnvironment.search({}) is None
            True
        """
        env = os.environ if env is None else env
        job_id = env.get("PBS_JOBID")
        if not job_id:
            return None
        return cls(job_id=job_id, node=socket.gethostname(), array_index=env.get("PBS_ARRAY_INDEX", ""))

    def fields(self) -> dict[str, str]:
        """The fields a worker stores in its hash (``job_id``, ``scheduler``, ``node``, ``array_index``).

        Example:
            >>> PbsEnvironment("41.pbs").fields()["scheduler"]
            'pbs'
        """
        return {"job_id": self.job_id, "scheduler": self.scheduler, "node": self.node,
                "array_index": self.array_index}


# what rushhpc.launchers.registry.job_environment asks this folder for
ENVIRONMENT = PbsEnvironment

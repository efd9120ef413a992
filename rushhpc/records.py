"""Launch records and job statuses: what a launcher reports, what the network stores.

Plain data, shared by the network layer (which stores records in ``{net}:launches``) and
the launchers (which make them), so neither needs to import the other.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson

from .states import JobState


@dataclasses.dataclass
class LaunchRecord:
    """What is known of one launched worker before (and after) it registers.

    ``extra`` holds launcher-specific facts (script path, stderr path, host, pid,
    ``managed`` for batch jobs) and the reconciler's tracking (misses, times, ``done``).
    A record is everything a new manager needs to rebuild a launcher's view of its jobs.
    """

    worker_id: str
    launcher: str
    job_id: str | None = None
    submitted_at: float = dataclasses.field(default_factory=time.time)
    start_id: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def dumps(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def loads(cls, text: str | bytes) -> "LaunchRecord":
        d = orjson.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def managed(self) -> bool:
        """A batch job whose scheduler state decides whether the worker is lost."""
        return bool(self.extra.get("managed"))


@dataclasses.dataclass
class JobStatus:
    """A launcher's view of one worker's job: a `JobState`, a reason, and the raw answer.

    A finished status carries a ``reason``: completed, failed, cancelled, timeout,
    out_of_memory, node_fail, preempted, or failed_to_start.
    """

    state: JobState | str
    reason: str = ""
    raw: str = ""
    exit_code: int | None = None

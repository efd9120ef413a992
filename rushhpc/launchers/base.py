"""The launcher interface: start N workers, report their jobs' states, kill them.

Each launcher is one file with one small subclass (as in dask-jobqueue). The
manager hands a launcher a start id and the worker ids it wants; the launcher
starts ``python -m rushhpc worker ...`` for each, however its backend does it,
and returns one `LaunchRecord` per worker, which the manager stores in Redis.
"""

from __future__ import annotations

import dataclasses
import secrets
import shlex
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from ..rush import Rush


@dataclasses.dataclass
class LaunchRecord:
    """What the manager knows of one launched worker before it registers."""

    worker_id: str
    launcher: str
    job_id: str | None = None
    submitted_at: float = dataclasses.field(default_factory=time.time)
    start_id: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class JobStatus:
    """A launcher's view of one worker's job: a worker state and a reason, plus the raw state."""

    state: str  # pending, held, starting, running, suspended, finishing, finished
    reason: str = ""
    raw: str = ""
    exit_code: int | None = None


def new_worker_id() -> str:
    """A fresh worker id, e.g. ``w-3f9a1c0d2b7e``."""
    return "w-" + secrets.token_hex(6)


def worker_argv(
    rush: "Rush",
    start_id: str,
    worker_id: str | None,
    credentials: str | None,
    options: dict[str, Any],
    python: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of one worker process: ``python -m rushhpc worker ...`` (no secret in it)."""
    argv = [python or sys.executable, "-m", "rushhpc", "worker", "--network", rush.network_id, "--start-id", start_id]
    if worker_id:
        argv += ["--worker-id", worker_id]
    if credentials:
        argv += ["--credentials", str(credentials)]
    if options.get("heartbeat_period") is not None:
        argv += ["--heartbeat-period", str(options["heartbeat_period"])]
    if options.get("heartbeat_expire") is not None:
        argv += ["--heartbeat-expire", str(options["heartbeat_expire"])]
    argv += list(extra)
    return argv


def shell_join(argv: Sequence[str]) -> str:
    """Quote argv for a POSIX shell: safe against spaces, quotes and ``$`` in any value."""
    return " ".join(shlex.quote(str(a)) for a in argv)


class Launcher(ABC):
    """Base class of launchers. Subclasses set `name` and implement the three methods."""

    name = "base"

    def __init__(self, rush: "Rush", options: dict[str, Any] | None = None):
        self.rush = rush
        self.options = dict(options or {})

    @property
    def log_dir(self) -> Path:
        d = Path(self.rush.run_dir) / "workers"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def make_worker_ids(self, n: int) -> list[str]:
        """Ids for ``n`` new workers (batch launchers derive them from the array index)."""
        return [new_worker_id() for _ in range(n)]

    @abstractmethod
    def launch(self, start_id: str, worker_ids: list[str], options: dict[str, Any]) -> list[LaunchRecord]:
        """Start one worker per id; return their records."""

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        """States of these workers' jobs, in one query. Default: no scheduler to ask."""
        return {}

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        """Kill these workers' processes or jobs (after the Redis kill list was tried)."""

    def stderr_tail(self, worker_id: str, n: int = 20) -> str:
        """Last lines of a worker's stderr file, if the launcher keeps one."""
        path = self.log_dir / f"{worker_id}.err"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


"""The launcher contract: what every way of starting workers provides.

A launcher starts ``python -m rushhpc worker ...`` (a `WorkerSpec`) for each worker id it
is given, however its backend does it, and returns one `LaunchRecord` per worker; the
network stores the records in Redis. Later it answers, for a batch of records, what its
backend says about their jobs (`poll`), and kills them (`kill`).

A launcher receives a narrow `LaunchContext` (the network id, its run directory, its
credentials file and signing key file, its stored records), never the manager. A new manager attaching to a
network builds a fresh launcher from the same plan and hands it the stored records: every
method must work from records alone (`adopt` may rebuild backend handles from them).

Each launcher is one small subclass in its own file (as in dask-jobqueue); the registry
of names is `rushhpc.launchers.registry`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from rushhpc import defaults
from rushhpc.core.records import JobStatus, LaunchRecord
from rushhpc.core.spec import WorkerSpec, new_worker_id, shell_join


class LaunchContext(Protocol):
    """What a launcher may know of the network it starts workers for."""

    network_id: str

    @property
    def run_dir(self) -> Path: ...

    def credentials_file(self) -> Path: ...

    def signing_key_file(self) -> Path: ...

    def store_records(self, records: Sequence[LaunchRecord]) -> None: ...

    def record(self, worker_id: str) -> LaunchRecord | None: ...

    def worker_field(self, worker_ids: Sequence[str], field: str) -> list[str | None]: ...


class Launcher(ABC):
    """Base class of launchers.

    A subclass sets `name` and implements `launch`; batch launchers also `poll` (one
    scheduler query for all given records) and `kill`. `startup_grace`, `vanish_grace`
    and `managed` tell the reconciler how to read the answers; `render` exists where a
    batch script is submitted (`renders` says so).

    Example:
        >>> class EchoLauncher(Launcher):
        ...     name = "echo"
        ...     def launch(self, start_id, worker_ids, options):
        ...         return [LaunchRecord(w, self.name, start_id=start_id) for w in worker_ids]
    """

    name: str = "base"
    renders: bool = False  # has `render` (a batch script a user can read before submission)
    # When a job ends: a `managed` launcher's jobs have a scheduler state that decides
    # whether a worker is lost (`poll` + `rushhpc.manager.reconcile`); an unmanaged one reports
    # ended processes it started (`ended`), and heartbeats decide for the rest.
    managed: bool = False
    # What the scheduler writes into a job's stderr when it kills the job for its memory,
    # where the job's state does not say so (SLURM without cgroups ends it FAILED, signal 9).
    out_of_memory_pattern: re.Pattern[str] | None = None
    calls: int = 0  # backend commands run (queries, submissions, kills): for tests and bench
    # What a launcher that runs a Python function in each job (submitit) submits: the worker's body,
    # `rushhpc.worker.main.run_worker`, set by the manager that builds the launcher. Injected, because the
    # launchers are below the worker layer and must not import it; launchers that run the command line ignore it.
    worker_entry: Callable[[WorkerSpec], int] | None = None
    submissions: int = 0

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        self.context = context
        self.options: dict[str, Any] = dict(options or {})

    # ------------------------------------------------------------ what the reconciler reads
    def behaviour(self, name: str, default: Any) -> Any:
        """A launcher option that is not a resource (``startup_grace``, ``poll_interval``...)."""
        v = self.options.get(name)
        return default if v is None else v

    @property
    def startup_grace(self) -> float:
        """Seconds a running job may take before its worker registers."""
        return float(self.behaviour("startup_grace", defaults.STARTUP_GRACE))

    @property
    def vanish_grace(self) -> float:
        """Seconds a job may be missing from every answer before its worker is lost."""
        return float(self.behaviour("vanish_grace", defaults.VANISH_GRACE))

    @property
    def log_dir(self) -> Path:
        d = Path(self.context.run_dir) / "workers"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    # ------------------------------------------------------------ the contract
    def make_worker_ids(self, n: int) -> list[str]:
        """Ids for ``n`` new workers (batch launchers derive them from the array index)."""
        return [new_worker_id() for _ in range(n)]

    def spec(self, start_id: str, worker_id: str | None, options: dict[str, Any], **fields: Any) -> WorkerSpec:
        """The `WorkerSpec` of one worker this launcher starts."""
        fields.setdefault("credentials", str(self.context.credentials_file()))
        fields.setdefault("signing_key", str(self.context.signing_key_file()))
        fields.setdefault("launcher", self.name)
        return WorkerSpec.from_options(self.context.network_id, start_id, options, worker_id=worker_id, **fields)

    @abstractmethod
    def launch(self, start_id: str, worker_ids: list[str], options: dict[str, Any]) -> list[LaunchRecord]:
        """Start one worker per id; return their records (stored by the caller)."""

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        """Worker id -> its job's status, for these records, in one backend query.
        A record absent from the answer means the backend does not know the job."""
        return {}

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        """Kill these workers' processes or jobs (after the Redis kill list was tried).
        Best effort; a job that already ended is success."""

    def usage(self, records: Sequence[LaunchRecord]) -> dict[str, Any]:
        """Worker id -> `rushhpc.core.records.Usage` (allocation start, end, cores, GPUs) where the
        backend keeps accounts, in one query. Default: none (Redis timestamps are used)."""
        return {}

    def adopt(self, records: Sequence[LaunchRecord]) -> None:
        """Rebuild backend handles from stored records (a manager attaching to a network)."""

    def render(self, start_id: str, worker_prefix: str, n: int, offset: int = 0,
               options: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> str:
        """The batch script for ``n`` workers (only where `renders`)."""
        raise NotImplementedError(f"the {self.name} launcher submits no batch script")

    def ended(self) -> dict[str, int]:
        """Worker id -> exit code of workers whose process this launcher saw end (local only)."""
        return {}

    def forget(self, worker_ids: Sequence[str]) -> None:
        """Drop backend handles of workers whose fate is recorded."""

    def owned_workers(self) -> list[str]:
        """Workers this launcher started that must not outlive the manager (stopped at `close`)."""
        return []

    def close(self) -> None:
        """The manager is closing: release backend handles; kill processes that must not outlive it."""

    def ran_out_of_memory(self, stderr_tail: str) -> bool:
        """Whether a job's stderr says the scheduler killed it for exceeding its memory."""
        return bool(self.out_of_memory_pattern and self.out_of_memory_pattern.search(stderr_tail))

    def stderr_tail(self, worker_id: str, n: int = 20) -> str:
        """Last lines of a worker's stderr: the record's ``stderr`` path, else the log dir's file."""
        rec = self.context.record(worker_id)
        path = Path(rec.extra["stderr"]) if rec is not None and rec.extra.get("stderr") else \
            Path(self.context.run_dir) / "workers" / f"{worker_id}.err"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


__all__ = ["JobStatus", "LaunchContext", "LaunchRecord", "Launcher", "WorkerSpec", "new_worker_id",
           "shell_join"]

"""`WorkerSpec`: everything one worker process needs to know, in one place.

Launchers turn a spec into an argv (``python -m rushhpc worker ...``), the CLI turns the
argv back into a spec, and `rushhpc.worker.main.run_worker` runs it. No secret is ever part of
it: Redis is named by a 0600 credentials file, or by ``RUSHHPC_REDIS_URL`` in the
worker's environment, and the key that signs the worker configuration by the path of its
0600 file (``--signing-key``).
"""

from __future__ import annotations

import dataclasses
import secrets
import shlex
import sys
from typing import Any, Sequence


def new_worker_id() -> str:
    """A fresh worker id, e.g. ``w-3f9a1c0d2b7e``."""
    return "w-" + secrets.token_hex(6)


def shell_join(argv: Sequence[str]) -> str:
    """Quote argv for a POSIX shell: safe against spaces, quotes and ``$`` in any value."""
    return " ".join(shlex.quote(str(a)) for a in argv)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """One worker: which network and configuration, its id, heartbeat, launcher, walltime.

    Example:
        >>> spec = WorkerSpec("sweep-1", "5d1e0c", worker_id="w-1", credentials="/run/creds.json")
        >>> spec.argv(python="python3")[:4]
        ['python3', '-m', 'rushhpc', 'worker']
    """

    network_id: str
    start_id: str
    worker_id: str | None = None
    credentials: str | None = None  # path of a 0600 credentials file; None: RUSHHPC_REDIS_URL
    signing_key: str | None = None  # path of the 0600 signing key file; None: the default (rushhpc.store.signing)
    heartbeat_period: float | None = None
    heartbeat_expire: float | None = None
    launcher: str = "script"
    managed: bool = False  # its batch job's scheduler state decides whether it is lost
    watch_pid: int | None = None  # stop when this process (the manager) exits
    walltime: float | None = None  # seconds the job may run
    walltime_margin: float | None = None  # stop taking tasks this long before the end

    def replace(self, **changes: Any) -> "WorkerSpec":
        """A copy with these fields changed."""
        return dataclasses.replace(self, **changes)

    def argv(self, python: str | None = None) -> list[str]:
        """``python -m rushhpc worker ...`` for this spec (no secret in it)."""
        argv = [python or sys.executable, "-m", "rushhpc", "worker", "--network", self.network_id,
                "--start-id", self.start_id]
        if self.worker_id:
            argv += ["--worker-id", self.worker_id]
        if self.credentials:
            argv += ["--credentials", str(self.credentials)]
        if self.signing_key:
            argv += ["--signing-key", str(self.signing_key)]
        for flag, value in (("--heartbeat-period", self.heartbeat_period),
                            ("--heartbeat-expire", self.heartbeat_expire),
                            ("--walltime", self.walltime), ("--walltime-margin", self.walltime_margin),
                            ("--watch-pid", self.watch_pid)):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--launcher", self.launcher]
        if self.managed:
            argv.append("--managed")
        return argv

    def command(self, python: str | None = None) -> str:
        """`argv` quoted for a shell."""
        return shell_join(self.argv(python))

    @classmethod
    def from_options(cls, network_id: str, start_id: str, options: dict[str, Any], **fields: Any) -> "WorkerSpec":
        """A spec from a start call's options (heartbeat settings) and launcher-given fields."""
        return cls(network_id=network_id, start_id=start_id, heartbeat_period=options.get("heartbeat_period"),
                   heartbeat_expire=options.get("heartbeat_expire"), **fields)

"""Launchers: one file each, behind `rushhpc.launchers.base.Launcher`."""

from __future__ import annotations

from ..errors import RushConfigError
from .base import JobStatus, Launcher, LaunchRecord


def get_launcher(worker_type: str) -> type[Launcher]:
    """The launcher class for a ``worker_type`` (local, slurm, pbs, submitit, ssh)."""
    if worker_type == "local":
        from .local import LocalLauncher

        return LocalLauncher
    raise RushConfigError(
        f"worker_type {worker_type!r} has no launcher in this version; available: local"
    )


__all__ = ["JobStatus", "Launcher", "LaunchRecord", "get_launcher"]

"""Launchers: one file each, behind `rushhpc.launchers.base.Launcher`."""

from __future__ import annotations

from ..errors import RushConfigError
from .base import JobStatus, Launcher, LaunchRecord


def get_launcher(worker_type: str) -> type[Launcher]:
    """The launcher class for a ``worker_type`` (local, slurm, pbs, submitit, ssh)."""
    if worker_type == "local":
        from .local import LocalLauncher

        return LocalLauncher
    if worker_type == "slurm":
        from .slurm import SlurmLauncher

        return SlurmLauncher
    if worker_type == "pbs":
        from .pbs import PbsLauncher

        return PbsLauncher
    if worker_type == "submitit":
        from .submitit import SubmititLauncher

        return SubmititLauncher
    if worker_type == "ssh":
        from .ssh import SshLauncher

        return SshLauncher
    raise RushConfigError(
        f"unknown worker_type {worker_type!r}; available: local, slurm, pbs, submitit, ssh"
    )


__all__ = ["JobStatus", "Launcher", "LaunchRecord", "get_launcher"]

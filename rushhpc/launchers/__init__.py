"""Launchers: one file each, behind `rushhpc.launchers.base.Launcher`; names in `rushhpc.launchers.registry`."""

from __future__ import annotations

from rushhpc.core.records import JobStatus, LaunchRecord
from rushhpc.launchers.base import LaunchContext, Launcher
from rushhpc.launchers.registry import launcher_class


def get_launcher(worker_type: str) -> type[Launcher]:
    """The launcher class for a ``worker_type`` (local, slurm, pbs, submitit, ssh, or a plugin's)."""
    cls: type[Launcher] = launcher_class(worker_type)
    return cls


__all__ = ["JobStatus", "LaunchContext", "Launcher", "LaunchRecord", "get_launcher"]

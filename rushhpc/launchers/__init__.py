"""Launchers: one file each, behind `rushhpc.launchers.base.Launcher`; names in `rushhpc.launchers.registry`."""

from __future__ import annotations

from rushhpc.core.records import JobStatus, LaunchRecord
from rushhpc.launchers.base import LaunchContext, Launcher

__all__ = ["JobStatus", "LaunchContext", "Launcher", "LaunchRecord"]

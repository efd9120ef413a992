"""The one registry of launchers: worker type name -> the class that starts such workers.

Used by the plan (which names are valid), the manager (which class to build), the CLI
(choices) and the worker (whether its job is watched by a scheduler). Classes are
imported only when used, so naming a launcher costs nothing.

A third party adds a launcher with an entry point in the group ``rushhpc.launchers``::

    [project.entry-points."rushhpc.launchers"]
    htcondor = "rushhpc_htcondor:CondorLauncher"

The class must implement `rushhpc.launchers.base.Launcher`.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Mapping, Protocol

from rushhpc.errors import RushConfigError

ENTRY_POINT_GROUP = "rushhpc.launchers"

BUILTIN: dict[str, str] = {
    "local": "rushhpc.launchers.local:LocalLauncher",
    "slurm": "rushhpc.launchers.slurm.launcher:SlurmLauncher",
    "pbs": "rushhpc.launchers.pbs.launcher:PbsLauncher",
    "submitit": "rushhpc.launchers.submitit:SubmititLauncher",
    "ssh": "rushhpc.launchers.ssh:SshLauncher",
    "srun": "rushhpc.launchers.srun:SrunLauncher",
}

# Not a launcher: the plan may name it, and `Rush.worker_script` prints a command instead.
SCRIPT = "script"


@lru_cache(maxsize=1)
def launchers() -> dict[str, str]:
    """Every known launcher: the built-in ones, then those of installed entry points.

    Example:
        >>> sorted(launchers())[:3]
        ['local', 'pbs', 'slurm']
    """
    out = dict(BUILTIN)
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            out.setdefault(ep.name, ep.value)
    except Exception:  # noqa: BLE001 - a broken third-party package must not break the built-ins
        pass
    return out


def worker_types() -> tuple[str, ...]:
    """Names a plan's ``worker_type`` may take (every launcher, and ``script``)."""
    return (*launchers(), SCRIPT)


def check_worker_type(name: Any, where: str = "worker_type") -> str:
    """Return ``name`` if it is a known worker type, else a `RushConfigError` listing them.

    Example:
        >>> check_worker_type("slurm")
        'slurm'
    """
    if name not in worker_types():
        hint = " (R's rush 'mirai' workers are local processes here: use 'local')" if name == "mirai" else ""
        raise RushConfigError(f"unknown {where} {name!r}{hint}; available: {', '.join(worker_types())}")
    return str(name)


def launcher_class(name: str) -> Any:
    """The launcher class registered under ``name``.

    Example:
        >>> launcher_class("local").__name__
        'LocalLauncher'
    """
    target = launchers().get(name)
    if target is None:
        check_worker_type(name)
        raise RushConfigError(f"worker_type {name!r} starts no workers itself: use rush.worker_script(...)")
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise RushConfigError(f"launcher {name!r} ({target}) cannot be loaded: {e}") from None


def job_environment_modules() -> list[str]:
    """Where each built-in scheduler's job environment lives: ``environment.py`` beside its ``launcher.py``.

    A scheduler folder (``launchers/slurm/``) holds its launcher, states, template and environment, so
    registering the launcher in `BUILTIN` is all it takes; the first environment that applies wins.

    Example:
        >>> job_environment_modules()
        ['rushhpc.launchers.slurm.environment', 'rushhpc.launchers.pbs.environment']
    """
    out = []
    for target in BUILTIN.values():
        module = target.partition(":")[0]
        if module.endswith(".launcher"):
            out.append(module.rpartition(".")[0] + ".environment")
    return out


class JobEnvironment(Protocol):
    """The batch job a process runs in, as one scheduler's environment describes it."""

    def fields(self) -> dict[str, str]:
        """What a worker registers: ``job_id``, ``scheduler``, ``node``, ``array_index`` (and more a scheduler knows)."""
        ...


def job_environment(env: Mapping[str, str] | None = None) -> JobEnvironment | None:
    """The scheduler job this process runs in (``env``: default this process's environment), or None outside one.

    Example:
        >>> job_environment({"PBS_JOBID": "41.pbs"}).fields()["scheduler"]
        'pbs'
    """
    for module in job_environment_modules():
        found = importlib.import_module(module).ENVIRONMENT.search(env)
        if found is not None:
            return found
    return None

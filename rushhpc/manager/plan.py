"""The process-wide plan, as rush::rush_plan: defaults a manager reads when it is not given them.

`rush_plan` sets it, ``RUSHHPC_CONFIG`` names a YAML file holding it, `current_plan` reads the
one in force. A `Rush` copies the plan when it is made.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from rushhpc.core.liveness import validate_heartbeat
from rushhpc.errors import RushConfigError
from rushhpc.launchers.registry import check_worker_type
from rushhpc.store.connection import RedisConfig, as_config


@dataclasses.dataclass
class Plan:
    """The process-wide plan (`rush_plan`, or the YAML file named by ``RUSHHPC_CONFIG``).

    Fields left None take the defaults of `rushhpc.defaults` where they are used.

    Example:
        >>> Plan(n_workers=4, worker_type="slurm").worker_type
        'slurm'
    """

    n_workers: int | None = None
    config: RedisConfig | None = None
    worker_type: str = "local"
    log_thresholds: dict[str, str | int] | None = None
    large_objects_path: str | None = None
    start_worker_timeout: float | None = None
    heartbeat_period: float | None = None
    heartbeat_expire: float | None = None
    launcher_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_object_size: int | None = None
    run_dir: str | None = None
    signing_key_file: str | None = None
    source: str = dataclasses.field(default="", repr=False, compare=False)  # where it was read from

    def __post_init__(self) -> None:
        where = f"plan file {self.source}: " if self.source else ""
        try:
            check_worker_type(self.worker_type or "local")
        except RushConfigError as e:
            raise RushConfigError(where + str(e)) from None
        self.worker_type = self.worker_type or "local"
        n = self.n_workers
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise RushConfigError(f"{where}n_workers must be a positive integer, got {n!r}")
        try:
            validate_heartbeat(self.heartbeat_period, self.heartbeat_expire)
        except RushConfigError as e:
            raise RushConfigError(where + str(e)) from None
        self.config = as_config(self.config)
        self.launcher_options = dict(self.launcher_options or {})
        if self.large_objects_path is not None:
            self.large_objects_path = str(self.large_objects_path)
        if self.run_dir is not None:
            self.run_dir = str(self.run_dir)
        if self.signing_key_file is not None:
            self.signing_key_file = str(Path(self.signing_key_file).expanduser().absolute())

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}


PLAN_KEYS = tuple(f.name for f in dataclasses.fields(Plan) if f.name != "source")

_PLAN: Plan | None = None


def rush_plan(
    n_workers: int | None = None,
    config: RedisConfig | str | dict | None = None,
    worker_type: str = "local",
    log_thresholds: dict[str, str | int] | None = None,
    large_objects_path: str | os.PathLike | None = None,
    start_worker_timeout: float | None = None,
    heartbeat_period: float | None = None,
    heartbeat_expire: float | None = None,
    launcher_options: dict[str, Any] | None = None,
    max_object_size: int | None = None,
    run_dir: str | os.PathLike | None = None,
    signing_key_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Set the process-wide plan that `rsh()` and `start_workers()` use.

    ``signing_key_file`` is the 0600 file holding the key that signs worker configurations
    (default ``$RUSHHPC_SIGNING_KEY_FILE``, else ``<run_dir>/signing.key``); created on first
    start when missing.

    Example:
        >>> rush_plan(n_workers=4, config="redis://127.0.0.1:6379", heartbeat_period=5)
        >>> rush = rsh("sweep-1")
        >>> rush.start_workers(my_loop)   # 4 local workers
    """
    global _PLAN
    _PLAN = Plan(
        n_workers=n_workers, config=as_config(config), worker_type=worker_type, log_thresholds=log_thresholds,
        large_objects_path=str(large_objects_path) if large_objects_path else None,
        start_worker_timeout=start_worker_timeout, heartbeat_period=heartbeat_period,
        heartbeat_expire=heartbeat_expire, launcher_options=dict(launcher_options or {}),
        max_object_size=max_object_size, run_dir=str(run_dir) if run_dir else None,
        signing_key_file=str(signing_key_file) if signing_key_file else None,
    )
    return _PLAN.as_dict()


def current_plan() -> Plan:
    """The plan in force as a `Plan` (an empty one when none is set).

    Example:
        >>> current_plan().worker_type
        'local'
    """
    if _PLAN is not None:
        return _PLAN
    path = os.environ.get("RUSHHPC_CONFIG")
    if path:
        return load_plan_file(path)
    return Plan()


def rush_config() -> dict[str, Any]:
    """The plan in force (from `rush_plan` or the ``RUSHHPC_CONFIG`` YAML file), or ``{}``.

    Example:
        >>> rush_plan(n_workers=2); rush_config()["n_workers"]
        2
    """
    if _PLAN is None and not os.environ.get("RUSHHPC_CONFIG"):
        return {}
    return current_plan().as_dict()


def remove_rush_plan() -> None:
    """Forget the plan set by `rush_plan` (an ``RUSHHPC_CONFIG`` file still applies)."""
    global _PLAN
    _PLAN = None


def rush_available() -> bool:
    """True while a plan is in force."""
    return bool(rush_config())


def load_plan_file(path: str | os.PathLike) -> Plan:
    """Read a YAML plan (the arguments of `rush_plan`); errors name the file and the key."""
    import yaml  # here: a worker process never reads a plan file (0.9 MiB per worker, issue 12)

    p = Path(path).expanduser()
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise RushConfigError(f"cannot read plan file {p} (RUSHHPC_CONFIG): {e.strerror}") from None
    except yaml.YAMLError as e:
        raise RushConfigError(f"plan file {p}{yaml_position(e)} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise RushConfigError(f"plan file {p} must hold a mapping of rush_plan arguments")
    unknown = sorted(set(data) - set(PLAN_KEYS))
    if unknown:
        raise RushConfigError(f"plan file {p}: unknown key(s) {unknown}; known: {list(PLAN_KEYS)}")
    data = {k: v for k, v in data.items() if v is not None}
    return Plan(**data, source=str(p))


def yaml_position(error: Exception) -> str:
    """', line L, column C' of a YAML error (1-based), or '' when PyYAML gives no position."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def yaml_problem(error: Exception) -> str:
    """A YAML error's problem without PyYAML's ``in "<unicode string>"`` position lines."""
    parts = [getattr(error, "context", None), getattr(error, "problem", None)]
    text = "; ".join(str(x) for x in parts if x)
    return text or str(error)

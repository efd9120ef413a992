"""The sweep file's schema: its keys, their types and defaults, and the validated config (`SweepConfig`).

Strategies and their keys come from the registry (`rushhpc.sweeps.strategies`); the defaults' values
from `rushhpc.defaults` (its "Sweeps" section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rushhpc import defaults
from rushhpc.errors import RushConfigError
from rushhpc.sweeps import strategies


class SweepConfigError(RushConfigError):
    """A sweep file (or an override) is invalid. The message names the file, the key path and
    what was expected; the command line prints it as one line and exits with code 2."""


TOP_KEYS: tuple[str, ...] = (
    "objective", "metric", "direction", "space", "strategy", "budget", "timeout", "retries",
    "max_failures", "workers", "redis", "output", "seed", "name", "progress", "progress_interval",
    "pythonpath", "fidelity",
)
FIDELITY_KEYS = ("name", "min", "max")
BUDGET_KEYS = ("evaluations", "walltime", "target", "fidelity")
WORKER_KEYS = (
    "n", "adapt", "launcher", "resources", "heartbeat_period", "heartbeat_expire", "restarts", "start_timeout",
    "stop_grace", "gpus_per_worker",
)
ADAPT_KEYS = ("min", "max", "idle_timeout", "backlog")
REDIS_KEYS = ("url", "host", "port", "db", "username", "password_file", "tls")
PARAM_TYPES = ("float", "int", "categorical", "fixed")
PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step", "when", "resolution"),
    "int": ("type", "low", "high", "log", "step", "when", "resolution"),
    "categorical": ("type", "choices", "when"),
    "fixed": ("type", "value", "when"),
}
ALL_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "value", "when", "resolution")
LAUNCHERS = ("local", "srun", "slurm", "pbs", "submitit", "ssh")
PROGRESS = ("auto", "rich", "plain", "none")
TOP_KEYS += ("constraints", "reference_point")  # several metrics (rushhpc.sweeps.config.objectives)

# Keys whose value is free-form (no schema below them).
FREE_FORM = {("workers", "resources"), ("strategy", "options")}

# What a key left out of the sweep file is (workers.restarts: workers.n; output: runs/<the file's name>).
DEFAULTS: dict[str, Any] = {
    "metric": defaults.SWEEP_METRIC,
    "direction": defaults.SWEEP_DIRECTION,
    "strategy": defaults.SWEEP_STRATEGY,
    "retries": defaults.SWEEP_RETRIES,
    "redis": defaults.SWEEP_REDIS,
    "progress": defaults.SWEEP_PROGRESS,
    "progress_interval": defaults.SWEEP_PROGRESS_INTERVAL,
    "workers.n": defaults.SWEEP_WORKERS,
    "workers.launcher": defaults.SWEEP_LAUNCHER,
    "workers.start_timeout": defaults.START_WORKER_TIMEOUT,
    "workers.stop_grace": defaults.SWEEP_STOP_GRACE,
    "workers.adapt.min": defaults.SWEEP_ADAPT_MIN,
    "workers.adapt.idle_timeout": defaults.SWEEP_ADAPT_IDLE_TIMEOUT,
}


def strategy_keys(name: Any) -> tuple[str, ...]:
    """The keys ``strategy:`` may hold for this strategy (``name`` only for one not registered)."""
    try:
        return ("name", *strategies.get(str(name)).keys)
    except KeyError:
        return ("name",)


def fmt(value: Any) -> str:
    """A value as an error message shows it (cut at 80 characters)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


@dataclass
class SweepConfig:
    """A validated, normalised sweep configuration.

    ``data`` is the normalised mapping (what ``config.yaml`` holds), ``source`` names where it
    came from (a file path, or ``<dict>``), ``base_dir`` is the folder relative paths of the
    objective are resolved against (the YAML file's folder).

    Example:
        >>> cfg = load_config("examples/sweep_branin.yaml")  # doctest: +SKIP
        >>> cfg.strategy, cfg["budget"]["evaluations"]       # doctest: +SKIP
        ('random', 50)
    """

    data: dict[str, Any]
    source: str
    base_dir: Path
    cwd: Path
    objective_kind: str = "module"  # module | file | callable
    objective_fn: Any = None  # the function itself, when a Python caller passed one (sent to workers pickled)
    seed_was_chosen: bool = False
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def strategy(self) -> str:
        return self.data["strategy"]["name"]

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        return self.data["space"]

    @property
    def output(self) -> Path:
        return Path(self.data["output"])

    def fingerprint(self) -> dict[str, Any]:
        """What fixes the set of points: a resumed sweep must agree on all of it."""
        d = self.data
        fp = {"space": d["space"], "strategy": d["strategy"], "seed": d["seed"]}
        if strategies.get(d["strategy"]["name"]).budget_fixes_points:
            fp["evaluations"] = d["budget"]["evaluations"]
        if d.get("fidelity") is not None:  # asha, hyperband: the rungs
            fp["fidelity"] = d["fidelity"]
        return fp

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None)

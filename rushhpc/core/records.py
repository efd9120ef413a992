"""Launch records and job statuses: what a launcher reports, what the network stores.

Plain data, shared by the network layer (which stores records in ``{net}:launches``) and
the launchers (which make them), so neither needs to import the other.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson

from rushhpc.core.states import JobState


@dataclasses.dataclass
class LaunchRecord:
    """What is known of one launched worker before (and after) it registers.

    ``extra`` holds launcher-specific facts (script path, stderr path, host, pid,
    ``managed`` for batch jobs) and the reconciler's tracking (misses, times, ``done``).
    A record is everything a new manager needs to rebuild a launcher's view of its jobs.
    """

    worker_id: str
    launcher: str
    job_id: str | None = None
    submitted_at: float = dataclasses.field(default_factory=time.time)
    start_id: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def dumps(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def loads(cls, text: str | bytes) -> "LaunchRecord":
        d = orjson.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def managed(self) -> bool:
        """A batch job whose scheduler state decides whether the worker is lost."""
        return bool(self.extra.get("managed"))


@dataclasses.dataclass
class JobStatus:
    """A launcher's view of one worker's job: a `JobState`, a reason, and the raw answer.

    A finished status carries a ``reason``: completed, failed, cancelled, timeout,
    out_of_memory, node_fail, preempted, or failed_to_start.
    """

    state: JobState | str
    reason: str = ""
    raw: str = ""
    exit_code: int | None = None


SWEEP_FIELDS = ("name", "strategy", "metric", "direction", "evaluations", "walltime", "target", "seed", "config",
                "output", "started_at", "objectives")


def _opt_float(v: str | None) -> float | None:
    return float(v) if v not in (None, "") else None


@dataclasses.dataclass
class Usage:
    """What a scheduler says one job was allocated (``Launcher.usage``, e.g. SLURM's sacct), which
    `rushhpc.manager.accounting` sets against what the job's tasks used.

    Example:
        >>> Usage(start=1700000000.0, end=1700003600.0, cpus=4).cpus
        4
    """

    start: float | None = None  # Unix seconds
    end: float | None = None
    cpus: int = 1
    gpus: int = 0


@dataclasses.dataclass
class SweepInfo:
    """What a sweep network is (``{net}:sweep``): written once by ``rushhpc sweep`` when it
    starts, read by the CLI, the dashboard and notebooks to name the metric and its direction.

    ``evaluations``, ``walltime`` (s) and ``target`` are the sweep's budget (None: not set);
    ``config`` is the sweep file (``<dict>`` for a sweep given as a mapping in Python),
    ``output`` the results folder, ``started_at`` Unix seconds. Several metrics: ``metric`` and ``direction``
    joined by ``,`` (``"loss,latency"``); ``objectives`` is JSON of the constraints and reference point, if any.

    Example:
        >>> SweepInfo("branin", "tpe", "y", "minimize", evaluations=100).describe()
        'sweep branin: tpe, minimize y, budget 100 evaluations'
    """

    name: str
    strategy: str
    metric: str
    direction: str
    evaluations: int | None = None
    walltime: float | None = None
    target: float | None = None
    seed: int | None = None
    config: str | None = None
    output: str | None = None
    started_at: float | None = None
    objectives: str | None = None  # several metrics or constraints: JSON {"constraints", "reference_point"}

    def to_hash(self) -> dict[str, str]:
        """The hash fields stored in Redis (plain strings; '' for None)."""
        return {k: "" if v is None else str(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> "SweepInfo":
        """From the stored hash; unknown fields are ignored, missing ones are None."""
        def opt(k: str) -> str | None:
            v = h.get(k)
            return v if v not in (None, "") else None

        ev, seed = opt("evaluations"), opt("seed")
        return cls(
            name=h.get("name", ""), strategy=h.get("strategy", ""), metric=h.get("metric", ""),
            direction=h.get("direction", ""), evaluations=int(ev) if ev is not None else None,
            walltime=_opt_float(opt("walltime")), target=_opt_float(opt("target")),
            seed=int(seed) if seed is not None else None, config=opt("config"), output=opt("output"),
            started_at=_opt_float(opt("started_at")), objectives=opt("objectives"),
        )

    def describe(self) -> str:
        """One line: name, strategy, direction and metric, budget."""
        budget = []
        if self.evaluations is not None:
            budget.append(f"{self.evaluations} evaluations")
        if self.walltime is not None:
            budget.append(f"walltime {self.walltime:g} s")
        if self.target is not None:
            budget.append(f"target {self.target:g}")
        return (f"sweep {self.name}: {self.strategy}, {self.direction} {self.metric}"
                + (f", budget {', '.join(budget)}" if budget else ""))

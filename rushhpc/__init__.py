"""rushhpc: decentralized parallel computing on HPC clusters (a Python port of R's rush).

Example:
    >>> from rushhpc import rsh, queue_loop
    >>> rush = rsh("demo")
    >>> rush.start_local_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x * x})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Imported on first use (PEP 562): a worker process imports `rushhpc.worker`, which must
# not pull in pandas and the manager (tens of MiB per worker process on a node).
_EXPORTS = {
    "RedisConfig": "config",
    "redis_config": "config",
    "remove_rush_plan": "config",
    "rush_available": "config",
    "rush_config": "config",
    "rush_plan": "config",
    "RushConfigError": "errors",
    "RushError": "errors",
    "RushNetworkLostError": "errors",
    "RushPayloadError": "errors",
    "RushTimeoutError": "errors",
    "RushWorkerError": "errors",
    "queue_loop": "loops",
    "command_loop": "loops",
    "Network": "network",
    "sweep": "sweeps",
    "Rush": "rush",
    "rsh": "rush",
    "RushWorker": "worker",
    "WorkerStopped": "worker",
}

__all__ = [
    "Network", "RedisConfig", "Rush", "RushConfigError", "RushError", "RushPayloadError", "RushTimeoutError",
    "RushNetworkLostError", "RushWorker", "RushWorkerError", "WorkerStopped", "__version__", "command_loop", "queue_loop",
    "redis_config",
    "remove_rush_plan", "rsh", "rush_available", "rush_config", "rush_plan", "sweep",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rushhpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from .config import (
        RedisConfig,
        redis_config,
        remove_rush_plan,
        rush_available,
        rush_config,
        rush_plan,
    )
    from .errors import (
        RushConfigError,
        RushError,
        RushPayloadError,
        RushTimeoutError,
        RushWorkerError,
    )
    from .loops import command_loop, queue_loop
    from .network import Network
    from .rush import Rush, rsh
    from .sweeps import sweep
    from .worker import RushWorker, WorkerStopped

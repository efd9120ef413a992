"""rushhpc: decentralized parallel computing on HPC clusters (a Python port of R's rush).

Example:
    >>> from rushhpc import rsh, queue_loop
    >>> rush = rsh("demo")
    >>> rush.start_local_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x * x})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rushhpc._version import __version__

# Imported on first use (PEP 562): a worker process imports `rushhpc.worker.api`, which must
# not pull in pandas and the manager (tens of MiB per worker process on a node).
_EXPORTS = {
    "RedisConfig": "store.connection",
    "redis_config": "store.connection",
    "remove_rush_plan": "manager.plan",
    "rush_available": "manager.plan",
    "rush_config": "manager.plan",
    "rush_plan": "manager.plan",
    "RushConfigError": "errors",
    "RushError": "errors",
    "RushNetworkLostError": "errors",
    "RushPayloadError": "errors",
    "RushTimeoutError": "errors",
    "RushWorkerError": "errors",
    "queue_loop": "worker.loops",
    "command_loop": "worker.loops",
    "Network": "network.view",
    "sweep": "sweeps",
    "Rush": "manager.rush",
    "rsh": "manager.rush",
    "RushWorker": "worker.api",
    "WorkerStopped": "worker.api",
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
    from rushhpc.errors import RushConfigError, RushError, RushPayloadError, RushTimeoutError, RushWorkerError
    from rushhpc.manager.plan import remove_rush_plan, rush_available, rush_config, rush_plan
    from rushhpc.manager.rush import Rush, rsh
    from rushhpc.network.view import Network
    from rushhpc.store.connection import RedisConfig, redis_config
    from rushhpc.sweeps import sweep
    from rushhpc.worker.api import RushWorker, WorkerStopped
    from rushhpc.worker.loops import command_loop, queue_loop

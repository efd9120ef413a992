"""rushhpc: decentralized parallel computing on HPC clusters (a Python port of R's rush).

Example:
    >>> from rushhpc import rsh, queue_loop
    >>> rush = rsh("demo")
    >>> rush.start_local_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x * x})
"""

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
from .loops import queue_loop
from .rush import Rush, __version__, rsh
from .worker import RushWorker, WorkerStopped

__all__ = [
    "RedisConfig",
    "Rush",
    "RushConfigError",
    "RushError",
    "RushPayloadError",
    "RushTimeoutError",
    "RushWorker",
    "RushWorkerError",
    "WorkerStopped",
    "__version__",
    "queue_loop",
    "redis_config",
    "remove_rush_plan",
    "rsh",
    "rush_available",
    "rush_config",
    "rush_plan",
]

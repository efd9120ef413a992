"""Worker loops shipped with rushhpc. A worker loop is any function ``loop(rush, **args)``."""

from __future__ import annotations

import traceback
from typing import Any, Callable

from . import defaults


def queue_loop(rush: Any, fun: Callable[..., dict[str, Any]], timeout: float = 1.0, stop_when_empty: bool = False,
               prefetch: int = defaults.QUEUE_PREFETCH) -> None:
    """Pop queued tasks and evaluate ``fun(**xs)`` until the worker is terminated.

    ``fun`` returns a dict of results (a number is stored as ``{"y": value}``).
    An exception fails the task with its traceback; the worker goes on.
    With ``stop_when_empty`` the worker ends when the queue stays empty for ``timeout``.
    ``prefetch`` > 1 claims that many tasks per pop (`RushWorker.pop_task`): one Redis round
    trip per task instead of two, for short tasks; but a worker then holds up to
    ``prefetch - 1`` tasks others could run (keep 1 for long or uneven tasks). Prefetched
    tasks a worker never started go back to the queue when it stops or is lost.

    Example:
        >>> rush.start_local_workers(queue_loop, n_workers=4, fun=lambda x: {"y": x ** 2})
        >>> rush.push_tasks([{"x": i} for i in range(100)])
    """
    while not rush.terminated:
        task = rush.pop_task(timeout=timeout, prefetch=prefetch) if prefetch > 1 else rush.pop_task(timeout=timeout)
        if task is None:
            if stop_when_empty:
                return
            continue
        try:
            ys = fun(**task["xs"])
        except Exception:  # noqa: BLE001 - the task fails, the worker lives on
            rush.fail_tasks([task["key"]], [{"message": traceback.format_exc()}])
            continue
        if not isinstance(ys, dict):
            ys = {"y": ys}
        rush.finish_tasks([task["key"]], [ys])

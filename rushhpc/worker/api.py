"""The worker's API: `RushWorker`, what a worker loop ``loop(rush, **args)`` may call, and nothing else.

A worker is composed, not derived from the network view or the manager: `RushWorker` is a
facade over one `WorkerSession` (`rushhpc.worker.session`: its connection, registration,
heartbeat and the Lua step of each task call) and reads the network's tasks through the
session's `Network` view. It cannot delete a network, store launch records, kill or mark
other workers: those belong to the manager (`rushhpc.Rush`). The process that runs a
launched worker is `rushhpc.worker.main.run_worker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from rushhpc.core.states import TASK_STATES, LostReason
from rushhpc.network.view import Network
from rushhpc.store.connection import RedisConfig
from rushhpc.worker.session import WorkerSession, WorkerStopped

if TYPE_CHECKING:
    import subprocess

    import pandas as pd

__all__ = ["RushWorker", "WorkerStopped", "worker_over"]


class RushWorker:
    """A worker of a network: what a worker loop ``loop(rush, **args)`` receives. Run in-process
    for debugging and tests, or by ``python -m rushhpc worker``.

    Creating one registers it as running. It needs a Redis (``config``, or
    ``RUSHHPC_REDIS_URL``): a worker never starts one. A worker built by hand creates its
    network when no manager has yet (like rush's ``RushWorker$new``); a launched worker
    (``python -m rushhpc worker``, ``create_network=False``) is refused when its network does
    not exist, e.g. because it was reset meanwhile. An in-process worker runs a
    heartbeat only when given ``heartbeat_period``. With ``deferred_replies=True`` (what
    worker processes use) ``push_running_tasks``, ``finish_tasks`` and ``fail_tasks``
    return without waiting for Redis's reply; it is read with the next call, and
    discarded results are then logged rather than returned.

    Its members are the worker's API only: take, create and report tasks (`pop_task`,
    `pop_tasks`, `push_running_tasks`, `push_tasks`, `finish_tasks`, `fail_tasks`), know when
    to stop (`terminated`, `set_terminated`, `deadline`, `typical_duration`), and read the
    network's tasks (`fetch_*`, `n_*`, `task_rows`). Anything else (workers, launch records,
    logs, deleting the network) goes through a manager or a view:
    ``Network.open(rush.network_id, rush.config)``.

    Example:
        >>> w = RushWorker("sweep-1", config="redis://127.0.0.1:6379")
        >>> keys = w.push_running_tasks([{"x": 1}])
        >>> w.finish_tasks(keys, [{"y": 2}])
    """

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | dict | None = None,
        worker_id: str | None = None,
        heartbeat_period: float | None = None,
        heartbeat_expire: float | None = None,
        *,
        launcher: str = "manual",
        watch_pid: int | None = None,
        walltime: float | None = None,
        walltime_margin: float | None = None,
        deferred_replies: bool = False,
        managed: bool = False,
        create_network: bool = True,
    ):
        self._s = WorkerSession(
            network_id, config, worker_id, heartbeat_period, heartbeat_expire, launcher=launcher, watch_pid=watch_pid,
            walltime=walltime, walltime_margin=walltime_margin, deferred_replies=deferred_replies, managed=managed,
            create_network=create_network,
        )
        self._net: Network = self._s.net

    def __repr__(self) -> str:
        return f"<RushWorker {self._s.worker_id} network={self._s.spec.network_id!r}>"

    # ------------------------------------------------------------------ who, and when it stops
    @property
    def worker_id(self) -> str:
        """This worker's id (``w-`` and random hex unless one was given).

        Example:
            >>> rush.worker_id
            'w-3f9c2a41d07e'
        """
        return self._s.worker_id

    @property
    def network_id(self) -> str:
        """The network this worker belongs to.

        Example:
            >>> rush.network_id
            'sweep-1'
        """
        return self._s.spec.network_id

    @property
    def config(self) -> RedisConfig:
        """Where Redis is: open your own view with ``Network.open(rush.network_id, rush.config)``.

        Example:
            >>> rush.config.address
            '127.0.0.1:6379'
        """
        return self._s.net.config

    @property
    def deadline(self) -> float | None:
        """When (epoch seconds) this batch worker stops taking tasks: its walltime minus the
        margin; None without a walltime.

        Example:
            >>> rush.deadline - time.time()
            3480.2
        """
        return self._s.deadline

    @property
    def stop_reason(self) -> str:
        """Why this worker stopped taking tasks when it chose to (its walltime), else ``""``.

        Example:
            >>> rush.stop_reason
            'walltime: 40 s left, a typical task needs 95 s'
        """
        return self._s.stop_reason

    @property
    def heartbeat_process(self) -> subprocess.Popen | None:
        """The heartbeat process beside this worker (None for an in-process worker without ``heartbeat_period``).

        Example:
            >>> rush.heartbeat_process.poll() is None
            True
        """
        return self._s.heartbeat

    @property
    def terminated(self) -> bool:
        """True once the manager asked this worker to terminate, or it is no longer running
        (killed, lost): the loop should return. Read from Redis at most every 20 ms.

        Example:
            >>> while not rush.terminated: ...
        """
        return self._s.terminated

    def set_terminated(self, reason: str = LostReason.TERMINATED.value) -> None:
        """Mark this worker terminated (its loop is done). Tasks it left running fail;
        prefetched tasks it never started go back to the queue.

        Example:
            >>> rush.set_terminated()
        """
        self._s.set_terminated(reason)

    def typical_duration(self) -> float | None:
        """Median duration (s) of the tasks this worker saw finish (its own, and the network's
        latest when it started); None before it has seen any.

        Example:
            >>> rush.typical_duration()
            2.5
        """
        return self._s.typical_duration()

    # ------------------------------------------------------------------ its tasks
    def pop_task(self, timeout: float | None = 1, prefetch: int = 1) -> dict[str, Any] | None:
        """Take the next queued task: ``{"key": ..., "xs": {...}}`` (and ``"xs_extra"``), or
        None when the queue stays empty for ``timeout`` seconds (0 or None: do not wait),
        or when this worker should stop (see `terminated`).

        While the queue has tasks, one atomic step pops and claims. On an empty queue
        the worker blocks on it (``BLMOVE`` into its pending list, then a claim), so a
        crash between the two steps leaves the task findable (`detect_lost_workers`
        requeues it).

        ``prefetch`` > 1: when this worker holds no prefetched task, the same step claims up
        to that many; the next calls serve them without a pop of their own (the next
        `finish_tasks`/`fail_tasks` call marks the next one started, so a task that crashes
        its worker still uses up a retry). Prefetched tasks run under this worker but are not
        started (`fetch_running_tasks` shows them without ``started_at``): when the worker
        stops or is lost before starting them, they go back to the queue, no retry used up.

        Example:
            >>> task = rush.pop_task(timeout=5)
            >>> if task: rush.finish_tasks([task["key"]], [{"y": f(**task["xs"])}])
        """
        return self._s.pop_task(timeout, prefetch)

    def pop_tasks(self, n: int, timeout: float | None = 1) -> list[dict[str, Any]]:
        """Take up to ``n`` queued tasks in one atomic step, all started, to evaluate as a batch
        and report with one `finish_tasks` call. Waits up to ``timeout`` seconds for one when the
        queue is empty; ``[]`` when none came or this worker should stop. Each is a running task
        of this worker: if the worker is lost, they are retried or failed like any running task.

        Example:
            >>> tasks = rush.pop_tasks(100)
            >>> rush.finish_tasks([t["key"] for t in tasks], [{"y": f(**t["xs"])} for t in tasks])
        """
        return self._s.pop_tasks(n, timeout)

    def push_running_tasks(self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None,
                           max_tasks: int | None = None) -> list[str]:
        """Create tasks this worker evaluates itself (the propose/evaluate/report pattern).

        ``max_tasks`` caps the network's tasks (every state, ``n_tasks``): the tasks are created
        only if the network then holds at most ``max_tasks``, all or none, in one atomic step,
        and ``[]`` is returned when they were not. Workers sharing a budget of evaluations pass
        it here, so however many race for the last slots, exactly the budget is created. A
        capped call waits for its reply (the worker must know whether to evaluate).

        Example:
            >>> keys = rush.push_running_tasks([{"x1": 0.3, "x2": 4.1}])
            >>> if not rush.push_running_tasks([{"x1": 0.5, "x2": 1.0}], max_tasks=100):
            ...     return  # the budget's tasks exist
        """
        return self._s.push_running_tasks(xss, xss_extra, max_tasks)

    def finish_tasks(
        self, keys: Sequence[str] | str, yss: Sequence[dict], yss_extra: Sequence[dict] | None = None
    ) -> list[str]:
        """Report results. A task is finished only if it is still running under this worker
        (first writer wins); late results are discarded, logged, and their keys returned.

        Example:
            >>> rush.finish_tasks(keys, [{"y": 0.39}])
        """
        return self._s.finish_tasks(keys, yss, yss_extra)

    def fail_tasks(self, keys: Sequence[str] | str, conditions: Sequence[Any] | None = None) -> list[str]:
        """Mark tasks failed with a condition each (str, exception or dict with "message").

        Example:
            >>> rush.fail_tasks([task["key"]], [traceback.format_exc()])
        """
        return self._s.fail_tasks(keys, conditions)

    def close(self) -> None:
        """Stop the heartbeat and close the connection (reading the last deferred reply).

        Example:
            >>> w = RushWorker("sweep-1", config=cfg); ...; w.close()
        """
        self._s.close()

    # ------------------------------------------------------------------ reads of the network's tasks
    def push_tasks(self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None, max_retries: int = 0,
                   expected_duration: float | Sequence[float] | None = None) -> list[str]:
        """Queue tasks for any worker of the network (`Rush.push_tasks`); returns their keys.

        Example:
            >>> rush.push_tasks([{"x": 1}, {"x": 2}])
        """
        return self._net.push_tasks(xss, xss_extra, max_retries=max_retries, expected_duration=expected_duration)

    def fetch_task(self, key: str) -> dict[str, Any] | None:
        """One task, flat (its inputs, outputs and fields), or None.

        Example:
            >>> rush.fetch_task(key)["y"]
        """
        return self._net.fetch_task(key)

    def fetch_tasks(self) -> pd.DataFrame:
        """Every task of the network, one row each.

        Example:
            >>> rush.fetch_tasks()
        """
        return self._net.fetch_tasks()

    def fetch_queued_tasks(self) -> pd.DataFrame:
        """The queued tasks.

        Example:
            >>> rush.fetch_queued_tasks()
        """
        return self._net.fetch_queued_tasks()

    def fetch_running_tasks(self) -> pd.DataFrame:
        """The running tasks (of every worker).

        Example:
            >>> rush.fetch_running_tasks()
        """
        return self._net.fetch_running_tasks()

    def fetch_finished_tasks(self, reset_cache: bool = False) -> pd.DataFrame:
        """The finished tasks, read incrementally (only new ones come from Redis).

        Example:
            >>> rush.fetch_finished_tasks()["y"].min()
        """
        return self._net.fetch_finished_tasks(reset_cache=reset_cache)

    def fetch_failed_tasks(self) -> pd.DataFrame:
        """The failed tasks with their conditions.

        Example:
            >>> rush.fetch_failed_tasks()
        """
        return self._net.fetch_failed_tasks()

    def fetch_new_tasks(self, timeout: float = 0) -> pd.DataFrame:
        """Tasks finished since this worker's last call (waits up to ``timeout`` seconds for one).

        Example:
            >>> rush.fetch_new_tasks(timeout=1)
        """
        return self._net.fetch_new_tasks(timeout=timeout)

    def task_rows(self, states: Sequence[str] = TASK_STATES, limit: int | None = None) -> list[dict[str, Any]]:
        """Tasks in ``states`` as flat dicts (no pandas), oldest first; ``limit``: the last that many.

        Example:
            >>> rush.task_rows(states=("running", "finished"))
        """
        return self._net.task_rows(states=states, limit=limit)

    @property
    def n_tasks(self) -> int:
        """Tasks of the network in every state.

        Example:
            >>> rush.n_tasks
        """
        return self._net.n_tasks

    @property
    def n_queued_tasks(self) -> int:
        """Queued tasks.

        Example:
            >>> rush.n_queued_tasks
        """
        return self._net.n_queued_tasks

    @property
    def n_running_tasks(self) -> int:
        """Running tasks (of every worker).

        Example:
            >>> rush.n_running_tasks
        """
        return self._net.n_running_tasks

    @property
    def n_finished_tasks(self) -> int:
        """Finished tasks.

        Example:
            >>> rush.n_finished_tasks
        """
        return self._net.n_finished_tasks

    @property
    def n_failed_tasks(self) -> int:
        """Failed tasks.

        Example:
            >>> rush.n_failed_tasks
        """
        return self._net.n_failed_tasks


def worker_over(session: WorkerSession) -> RushWorker:
    """The `RushWorker` facade over a session built by hand (`rushhpc.worker.main.run_worker` keeps the
    session to end the worker, and hands the facade to the loop).

    Example:
        >>> session = WorkerSession("sweep-1", cfg, deferred_replies=True); loop(worker_over(session), **args)
    """
    worker = RushWorker.__new__(RushWorker)
    worker._s = session
    worker._net = session.net
    return worker

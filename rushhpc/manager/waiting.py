"""How a manager waits: for workers to register (`wait_for_workers`) and tasks to end (`wait_for_tasks`).

A wait polls Redis with a deadline and fails early, with the first failure's words, when what
it waits for can no longer come: a local worker died before registering, the workers failed,
no worker is left to run the tasks. `rushhpc.manager.rush.Rush` holds a `Waiter` and forwards
its two public methods.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from rushhpc import defaults
from rushhpc.core.states import TERMINAL_TASK_STATES, WorkerState
from rushhpc.errors import RushConfigError, RushTimeoutError, RushWorkerError
from rushhpc.manager.plan import Plan
from rushhpc.manager.starting import Launchers
from rushhpc.network.view import Network


class Waiter:
    """The waits of one manager.

    ``detect`` finds lost workers (`Rush.detect_lost_workers`); ``network_lost`` is the error
    when the network is gone; ``monitored`` says whether a monitor thread detects lost workers
    (then a wait does not); ``replacing`` whether an adapter or the monitor still starts workers
    (then a wait does not give up when none runs).

    Example:
        >>> Waiter(network, plan, launchers, rush.detect_lost_workers, lost_error,
        ...        lambda: False, lambda: False).wait_for_tasks(keys, timeout=60)
    """

    def __init__(self, network: Network, plan: Plan, launchers: Launchers, detect: Callable[[], list[str]],
                 network_lost: Callable[[], Exception], monitored: Callable[[], bool], replacing: Callable[[], bool]):
        self.network = network
        self.plan = plan
        self.launchers = launchers
        self.detect = detect
        self.network_lost = network_lost
        self.monitored = monitored
        self.replacing = replacing

    def wait_for_workers(
        self, n: int | None = None, worker_ids: Sequence[str] | None = None, timeout: float | None = None,
        progress: bool | None = None,
    ) -> None:
        """Block until ``n`` workers have registered, or these ``worker_ids`` (all of them, or
        with ``n`` too, any ``n`` of them, as in rush).

        Raises `RushConfigError` at once when ``n`` exceeds the number of ``worker_ids``,
        `RushTimeoutError` after ``timeout`` (default: the plan's ``start_worker_timeout``,
        60 s) and `RushWorkerError` at once when a local worker died before registering (with
        the tail of its stderr) and too few are left to come.

        Example:
            >>> rush.wait_for_workers(n=4, timeout=120)
            >>> rush.wait_for_workers(n=1, worker_ids=ids)  # the first of these to register
        """
        from rushhpc.manager.display import progress as progress_bar

        if timeout is None:
            timeout = float(defaults.START_WORKER_TIMEOUT if self.plan.start_worker_timeout is None
                            else self.plan.start_worker_timeout)
        if isinstance(worker_ids, str):
            worker_ids = [worker_ids]
        wanted = set(worker_ids) if worker_ids is not None else None
        if wanted is not None and n is not None and n > len(wanted):
            raise RushConfigError(
                f"wait_for_workers(n={n}, worker_ids=...): n exceeds the {len(wanted)} worker id(s) given, so the "
                "wait could never end; pass n <= len(worker_ids), or more worker_ids"
            )
        if wanted is None and n is None:
            wanted = self.network.launched_ids
        need = n if n is not None else len(wanted or ())
        with progress_bar(need, "workers", enabled=progress, unit="worker") as bar:
            self._wait_for_workers(n, wanted, timeout, bar)

    def _wait_for_workers(self, n: int | None, wanted: set[str] | None, timeout: float, bar: Any) -> None:
        deadline = time.monotonic() + timeout
        last_detect = 0.0
        need = n if n is not None else len(wanted or ())

        def too_few(ok: set[str], gone: set[str]) -> bool:
            """Whether the listed workers that registered and those that may still come are fewer
            than ``need`` once ``gone`` (failed, died unregistered) are out."""
            assert wanted is not None
            return len(wanted & ok) + len(wanted - ok - gone) < need

        while True:
            launched = self.network.launched_ids
            registered = self.network.registered_ids(launched)
            failed = set(self.network.connector.smembers(self.network.keys.workers_in(WorkerState.FAILED)))
            ok = registered - failed  # a worker whose loop raised is not one to wait for
            bar.set(len(ok if wanted is None else wanted & ok))
            if wanted is not None:
                if len(wanted & ok) >= need:
                    return
            elif n is not None and len(ok) >= n:
                return
            ended = self.launchers.ended()
            if failed:
                # raise at once when the workers that failed leave too few that can still come
                may_come = {w for w in (wanted if wanted is not None else launched) if w not in registered
                            and w not in ended}
                if wanted is not None and wanted & failed and too_few(ok, failed | (set(ended) - registered)):
                    raise self._failure_error(wanted & failed, "wait_for_workers")
                if wanted is None and n is not None and len(ok) + len(may_come) < n:
                    raise self._failure_error(failed, f"wait_for_workers({n}): {len(ok)} worker(s) running or done")
            dead = {w: c for w, c in ended.items() if w not in registered}
            if wanted is not None:
                dead = {w: c for w, c in dead.items() if w in wanted}
                if dead and not too_few(ok, failed | set(dead)):
                    dead = {}  # enough of the listed workers may still come
            if dead:
                wid, code = next(iter(dead.items()))
                raise RushWorkerError(
                    f"worker {wid} exited with code {code} before registering. Its stderr ends with:\n"
                    + (self.launchers.stderr_tail(wid) or "(empty)")
                )
            if launched and time.monotonic() - last_detect > defaults.WAIT_DETECT_INTERVAL:
                last_detect = time.monotonic()
                self.detect()
                unstarted = self.network.never_started(wanted if wanted is not None else launched)
                if unstarted and wanted is not None and not too_few(ok, failed | set(unstarted)):
                    unstarted = {}  # enough of the listed workers may still come
                if unstarted:
                    wid, reason = next(iter(unstarted.items()))
                    tail = self.launchers.stderr_tail(wid, 20)
                    raise RushWorkerError(
                        f"{len(unstarted)} worker(s) failed to start, e.g. {wid}: {reason}. "
                        f"Its stderr ends with:\n{tail or '(empty)'}"
                    )
            if time.monotonic() > deadline:
                have = len(registered if wanted is None else wanted & registered)
                raise RushTimeoutError(
                    f"only {have} of {need} workers registered within {timeout:g} s. Check the workers' "
                    f"stderr in {self.network.run_dir / 'workers'} and that they can reach Redis at "
                    f"{self.network.config.address}."
                )
            time.sleep(defaults.WAIT_WORKERS_POLL)

    def _failure_error(self, failed: set[str], intro: str) -> RushWorkerError:
        """A `RushWorkerError` naming the first of these failed (or lost) workers and the end of
        its traceback, or of its stderr for a lost one."""
        ids = sorted(failed)
        with self.network.connector.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hmget(self.network.keys.worker(wid), ["state", "reason", "stopped_at"])
            rows = pipe.execute()
        first, (state, reason, _) = min(zip(ids, rows), key=lambda r: float(r[1][2] or "inf"))
        lines = str(reason or state or WorkerState.FAILED).strip().splitlines() or [WorkerState.FAILED.value]
        tail = "\n".join(lines[-12:])
        if state == WorkerState.LOST:  # the reason is short (process_died, heartbeat): its stderr says more
            tail = f"its stderr ends with:\n{self.launchers.stderr_tail(first, 12) or '(empty)'}"
        states = sorted({r[0] or WorkerState.FAILED.value for r in rows})
        return RushWorkerError(
            f"{intro}: {len(ids)} worker(s) {' or '.join(states)}, the first {first} ({state}): {lines[-1]}\n{tail}\n"
            f"Fix the worker loop and start workers again (rush.worker_info or `rushhpc workers "
            f"{self.network.network_id}` shows every worker's reason)."
        )

    def _all_workers_failed(self, n_tasks: int) -> RushWorkerError | None:
        """An error when no worker can run the tasks waited for: none is running, pending or starting,
        none ended in order (terminated, killed), and those that ran failed or were lost (crashed).
        None otherwise, also while a monitor replaces lost workers or an adapter starts new ones."""
        with self.network.connector.pipeline(transaction=False) as pipe:
            for st in (WorkerState.RUNNING, WorkerState.PENDING, WorkerState.TERMINATED, WorkerState.KILLED):
                pipe.scard(self.network.keys.workers_in(st))
            pipe.smembers(self.network.keys.workers_in(WorkerState.FAILED))
            pipe.smembers(self.network.keys.workers_in(WorkerState.LOST))
            pipe.smembers(self.network.keys.workers)
            *busy, failed, lost, registered = pipe.execute()
        if any(busy) or not (failed or lost):
            return None
        ended = self.launchers.ended()
        if any(w not in registered and w not in ended for w in self.network.launched_ids):
            return None  # a worker this manager started has not registered yet
        if self.replacing():
            return None  # the adapter, or the monitor's replacements, start workers for the queue
        return self._failure_error(set(failed) | set(lost), f"{n_tasks} task(s) cannot finish, no worker of "
                                                            f"network {self.network.network_id} is running")

    def wait_for_tasks(
        self, keys: Sequence[str], timeout: float | None = None, detect_lost_workers: bool = True,
        progress: bool | None = None,
    ) -> None:
        """Block until every task in ``keys`` is finished or failed. Runs
        `detect_lost_workers` as it polls (so a dead worker cannot hang the wait), unless a
        monitor (`start_monitor`) does. Raises
        `RushWorkerError` at once when no worker is left to run them because every worker
        failed (the first failure named), `RushTimeoutError` after ``timeout``. ``progress``:
        a progress bar (default: on in a terminal or Jupyter, off otherwise; see `rushhpc.manager.display`).

        Example:
            >>> rush.wait_for_tasks(keys, timeout=600)
        """
        from rushhpc.manager.display import progress as progress_bar

        keys = [keys] if isinstance(keys, str) else list(keys)
        with progress_bar(len(keys), "tasks", enabled=progress) as bar:
            self._wait_for_tasks(keys, timeout, detect_lost_workers, bar)

    def _wait_for_tasks(self, keys: list[str], timeout: float | None, detect_lost_workers: bool, bar: Any) -> None:
        total = len(keys)
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep = defaults.WAIT_TASKS_POLL_MIN
        last_detect = 0.0
        no_worker = False  # the last check found none left: read the tasks once more, then raise
        while True:
            with self.network.connector.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hget(self.network.keys.task(k), "state")
                states = pipe.execute()
            if None in states and not self.network.exists():
                raise self.network_lost()
            keys = [k for k, s in zip(keys, states) if s is not None and s not in TERMINAL_TASK_STATES]
            bar.set(total - len(keys))
            if not keys:
                return
            if no_worker:
                error = self._all_workers_failed(len(keys))
                if error is not None:
                    raise error
                no_worker = False
            now = time.monotonic()
            if now - last_detect > defaults.WAIT_DETECT_INTERVAL:
                # with a monitor running, finding lost workers is its job: it replaces only those it found
                if detect_lost_workers and not self.monitored():
                    self.detect()
                last_detect = now
                if self._all_workers_failed(len(keys)) is not None:
                    # the detection may just have failed the tasks of the worker it found lost
                    no_worker = True
                    continue
            if deadline is not None and now > deadline:
                raise RushTimeoutError(f"{len(keys)} task(s) still not finished after {timeout:g} s")
            time.sleep(sleep)
            sleep = min(defaults.WAIT_TASKS_POLL_MAX, sleep * 2)


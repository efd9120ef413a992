"""The manager: `Rush` (and `rsh`), the Python counterpart of rush's manager.

A `Rush` holds a network view (`rushhpc.network.view.Network`, ``rush.network``) and the
parts that start, watch and stop workers: its launchers and `Starter`
(`rushhpc.manager.starting`), its `Waiter` (`rushhpc.manager.waiting`), a `Reconciler` for
batch jobs and an optional background `Monitor`. The view's public members are the manager's
too (``rush.push_tasks`` is ``rush.network.push_tasks``). It reads its settings from the plan
it is given (`rushhpc.manager.plan.Plan`; the process-wide one, `rush_plan`, by default) and
holds no state that matters beyond caches and process handles: a new manager that opens the
same network id sees, and can act on, everything.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import weakref
from typing import TYPE_CHECKING, Any, Callable

import redis

from rushhpc import defaults, lifecycle
from rushhpc.core.records import LaunchRecord
from rushhpc.errors import RushConfigError, RushError
from rushhpc.launchers.base import Launcher
from rushhpc.launchers.registry import SCRIPT, check_worker_type
from rushhpc.manager.adapt import Adapter, AdaptPolicy
from rushhpc.manager.plan import Plan, current_plan
from rushhpc.manager.reconcile import Reconciler
from rushhpc.manager.starting import Launchers, Starter
from rushhpc.manager.stopping import Stopper
from rushhpc.manager.supervise import Monitor
from rushhpc.manager.waiting import Waiter
from rushhpc.network import startargs
from rushhpc.network.delegate import method, prop
from rushhpc.network.launches import Launches
from rushhpc.network.tasks import TaskStore
from rushhpc.network.view import Network, remove_run_files
from rushhpc.network.workers import Workers
from rushhpc.store.connection import RedisConfig, as_config, env_config
from rushhpc.store.keys import validate_id
from rushhpc.store.protocol import Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

log = logging.getLogger("rushhpc")


class Rush:
    """The manager of one network: starts and watches workers, pushes and fetches tasks.

    With no Redis configured (argument, plan, ``RUSHHPC_REDIS_URL``), or with
    ``config="embedded"``, it starts a private embedded one; `Rush.attach` never does.
    ``plan`` (a `Plan`) holds its defaults (worker type, launcher options, timeouts, ...);
    without one it copies the process-wide plan (`rush_plan`, ``RUSHHPC_CONFIG``).
    ``keep_logs=True`` keeps the workers' output files in the run directory when `reset` (or
    the end of the embedded Redis) removes the rest of it.

    Example:
        >>> rush = rsh("sweep-1")                       # embedded Redis if none is configured
        >>> rush.start_local_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x * x})
        >>> rush.wait_for_workers(2)
        >>> keys = rush.push_tasks([{"x": i} for i in range(10)])
        >>> rush.wait_for_tasks(keys)
        >>> rush.fetch_finished_tasks()
        >>> Rush("sweep-2", plan=Plan(worker_type="slurm", launcher_options={"time": "01:00:00"}))
    """

    def __init__(
        self,
        network_id: str | None = None,
        config: RedisConfig | str | dict | None = None,
        run_dir: str | os.PathLike | None = None,
        *,
        plan: Plan | None = None,
        must_exist: bool = False,
        keep_logs: bool = False,
    ):
        if plan is not None and not isinstance(plan, Plan):
            raise RushConfigError(f"plan must be a rushhpc.manager.plan.Plan (or None: the rush_plan one), "
                                  f"got {type(plan).__name__}")
        plan = plan if plan is not None else current_plan()
        nid = validate_id(network_id) if network_id is not None else "net-" + secrets.token_hex(6)
        want_embedded = isinstance(config, str) and config == "embedded"
        cfg = None if want_embedded else (as_config(config) or plan.config or env_config())
        self.embedded = cfg is None
        if cfg is None:
            if must_exist:
                raise RushConfigError(
                    "no Redis is configured: name the network's Redis with --redis URL (and --password-file), "
                    "RUSHHPC_REDIS_URL, or a plan file (RUSHHPC_CONFIG)"
                )
            from rushhpc.server.embedded import embedded_redis

            cfg = embedded_redis()
        self._reset_here = False  # this manager's reset deleted the network; its next push or start makes it again
        self.network = Network(nid, cfg, run_dir=run_dir or plan.run_dir, signing_key_file=plan.signing_key_file,
                               before_push=self._before_push)
        self.network_id, self.config, self.keys = nid, cfg, self.network.keys
        if must_exist and not self.network.exists():
            Network.open(nid, cfg, client=self.network.connector)  # raises, naming the networks there
        self._plan: Plan = plan
        self.keep_logs = keep_logs  # what `reset` (and the end of an embedded Redis) leaves in the run dir
        self._launchers = Launchers(self.network, plan)
        self._starter = Starter(self.network, plan, self._launchers, self.create, functools.partial(_MANAGERS.add, self))
        self._monitor: Monitor | None = None
        self.adapter: Adapter | None = None
        options = plan.launcher_options
        self._reconciler = Reconciler(self.network, self.launcher, options.get("poll_interval"),
                                      options.get("max_poll_interval"), plan.heartbeat_expire, plan.heartbeat_period)
        self._stopper = Stopper(self.network, self._launchers, self._reconciler, lambda: self._reset_here)
        self._waiter = Waiter(self.network, plan, self._launchers, self.detect_lost_workers, self._stopper.network_lost,
                              lambda: self._monitor is not None, self._replacing)
        self.create()
        if self.embedded:
            # the private Redis ends with this process, and every network on it: so do their run dirs
            from rushhpc.server.embedded import at_stop

            at_stop(functools.partial(remove_run_files, self.run_dir, self.network.signing_key_path, keep_logs))
        _MANAGERS.add(self)
        lifecycle.at_exit(lifecycle.MANAGERS, _close_managers)

    @classmethod
    def attach(cls, network_id: str, config: RedisConfig | str | dict | None = None,
               run_dir: str | os.PathLike | None = None, *, plan: Plan | None = None) -> "Rush":
        """A manager of an existing network (e.g. after the first manager died): it sees its
        workers and tasks and can stop them. Never starts a Redis; a missing network is an error.

        Example:
            >>> rush = Rush.attach("sweep-1", config="redis://login1:6379")
            >>> rush.stop_workers(type="terminate")
        """
        return cls(network_id, config, run_dir, plan=plan, must_exist=True)

    def create(self) -> None:
        """Write the network's meta hash (idempotent); after this manager's own `reset`, the
        network exists again."""
        self.network.create()
        self._reset_here = False

    def _before_push(self) -> None:
        if self._reset_here:
            self.create()

    def __repr__(self) -> str:
        from rushhpc.manager.display import manager_repr

        shown: Any = self  # display.py reads the view's members, and ``embedded``, on the manager itself
        return manager_repr(shown)

    def _repr_html_(self) -> str:
        from rushhpc.manager.display import manager_html

        shown: Any = self
        return manager_html(shown)

    # ------------------------------------------------------------------ the network view's connection
    @property
    def connector(self) -> Any:
        """The network view's Redis client (`reconnect` makes a new one)."""
        return self.network.connector

    @connector.setter
    def connector(self, client: Any) -> None:
        self.network.connector = client

    @property
    def protocol(self) -> Protocol:
        """The network view's Lua protocol (`rushhpc.store.protocol.Protocol`)."""
        return self.network.protocol

    @property
    def run_dir(self) -> "Path":
        """This network's folder for worker logs, scripts and the credentials file."""
        return self.network.run_dir

    # ------------------------------------------------------------------ launchers
    def launcher(self, worker_type: str) -> Launcher:
        """The launcher of this manager for ``worker_type``, built from the plan on first use.

        Example:
            >>> rush.launcher("local").processes[worker_id].pid
        """
        return self._launchers.get(worker_type)

    def launchers(self) -> list[Launcher]:
        """The launchers this manager has built so far (one per worker type it started or polled).

        Example:
            >>> [launcher.name for launcher in rush.launchers()]
            ['local']
        """
        return self._launchers.all()

    @property
    def monitor(self) -> Monitor | None:
        """The background monitor (`start_monitor`), or None when none runs.

        Example:
            >>> rush.start_monitor(keep_workers=True); rush.monitor.replacements
            []
        """
        return self._monitor

    # ------------------------------------------------------------------ starting (manager/starting.py)
    start_workers = method("_starter", Starter.start_workers)
    start_local_workers = method("_starter", Starter.start_local_workers)
    worker_script = method("_starter", Starter.worker_script)
    render_script = method("_starter", Starter.render_script)
    replace_workers = method("_starter", Starter.replace_workers)
    check_client_capacity = method("_starter", Starter.check_client_capacity)

    # ------------------------------------------------------------------ waiting (manager/waiting.py)
    wait_for_workers = method("_waiter", Waiter.wait_for_workers)
    wait_for_tasks = method("_waiter", Waiter.wait_for_tasks)

    def _replacing(self) -> bool:
        """Whether the adapter, or the monitor's replacements, still start workers for the queue."""
        monitor = self._monitor
        return monitor is not None and ((self.adapter is not None and not self.adapter.paused)
                                        or (monitor.keep_workers and monitor.restart_budget > 0))

    # ------------------------------------------------------------------ stopping and detecting (manager/stopping.py)
    stop_workers = method("_stopper", Stopper.stop_workers)
    detect_lost_workers = method("_stopper", Stopper.detect_lost_workers)

    def reset(self, workers: bool = True, keep_logs: bool | None = None) -> None:
        """Delete the network from Redis. ``workers=True`` kills every running worker first
        and removes what the network has in its run directory on this machine (credentials
        file, signing key, batch scripts and the workers' output files; ``keep_logs=True``,
        default the manager's ``keep_logs``, keeps the output files). ``workers=False``
        deletes tasks and logs only, and running workers go on.

        The manager stays usable: its next push or start creates the network again.

        Example:
            >>> rush.reset()
            >>> keys = rush.push_tasks([{"x": 1}])   # the same network id, empty again
        """
        self.stop_monitor()
        if not workers:
            self.network.delete(workers=False)
            return
        self.stop_workers(type="kill")
        launched = self._stopper.kill_starting()
        start_ids = [k.rsplit(":", 1)[1] for k in self.network.connector.scan_iter(match=self.network.keys.start("*"))]
        self.network.delete(workers=True)
        self._reset_here = True
        startargs.remove_files(self.network.keys, start_ids, self._plan.large_objects_path)
        with self._launchers.lock:
            # every worker of the deleted network is settled, also one whose process is still
            # ending (a terminated worker exits after it reported): a later wait must not name it
            for launcher in self._launchers.all():
                launcher.forget(sorted(launched | set(launcher.ended())))
        self.network.remove_run_dir(self.keep_logs if keep_logs is None else keep_logs)

    # ------------------------------------------------------------------ accounting
    def accounting(self) -> tuple["pd.DataFrame", dict[str, Any]]:
        """Per worker: cores, GPUs, allocated, busy and idle seconds, core-hours; and network
        totals (core-hours allocated and busy, idle share, preempted and failed-start time).
        Batch allocations come from the scheduler's accounts (one query per launcher).

        Example:
            >>> table, totals = rush.accounting()
            >>> totals["busy_share"]
            0.93
        """
        import pandas as pd

        from rushhpc.manager.accounting import COLUMNS, usage_table

        by_launcher: dict[str, list[LaunchRecord]] = {}
        for rec in self.network.records().values():
            by_launcher.setdefault(rec.launcher, []).append(rec)
        usage: dict[str, Any] = {}
        for name, recs in by_launcher.items():
            try:
                usage.update(self._launchers.get(name).usage(recs))
            except RushError as e:
                log.warning("accounting: %s launcher: %s; using Redis timestamps", name, e)
        rows, totals = usage_table(self.network, usage)
        return pd.DataFrame(rows, columns=COLUMNS), totals

    # ------------------------------------------------------------------ adaptive workers
    def adapt(self, worker_loop: Callable | None, minimum: int = 0, maximum: int | None = None,
              idle_timeout: float = defaults.ADAPT_IDLE_TIMEOUT, backlog: int | None = None,
              max_failures: int = defaults.ADAPT_MAX_FAILURES,
              interval: float = defaults.MONITOR_INTERVAL, **options_and_args: Any) -> Adapter:
        """Keep between ``minimum`` and ``maximum`` workers, following the queue (see `rushhpc.manager.adapt`).

        Starts (or reconfigures) the background monitor; `stop_monitor` stops adapting and
        leaves the workers running. Workers are started with the plan's launcher, like
        `start_workers`; every other keyword is as in `start_workers`. With ``worker_loop=None``
        new workers are started like the network's most recently launched one (what
        ``rushhpc monitor --adapt`` does).

        Example:
            >>> rush.adapt(queue_loop, minimum=0, maximum=32, idle_timeout=120, fun=objective)
        """
        if maximum is None:
            maximum = self._plan.n_workers
        if maximum is None:
            raise RushConfigError("adapt: how many workers at most? Pass maximum=... or set rush_plan(n_workers=...)")
        policy = AdaptPolicy(minimum=minimum, maximum=maximum, idle_timeout=idle_timeout, backlog=backlog,
                             max_failures=max_failures)
        if worker_loop is None:
            records = [r for r in self.network.records().values() if r.start_id]
            if not records:
                raise RushConfigError(f"adapt: network {self.network_id} has no launched worker to start more like; "
                                      "start workers first, or pass a worker loop")
            last = max(records, key=lambda r: r.submitted_at)
            worker_type, start_id, options = last.launcher, last.start_id, dict(last.extra.get("options") or {})
        else:
            worker_type = check_worker_type(self._plan.worker_type)
            if worker_type == SCRIPT:
                raise RushConfigError("adapt needs a launcher: worker_type 'script' starts no workers")
            start_id, options = self._starter.prepare(worker_loop, options_and_args)
        launcher = self._launchers.get(worker_type)
        adapter = Adapter(self.network, policy, lambda n: self._starter.launch(launcher.name, start_id, n, options),
                          lambda ids, reason: self.network.request_terminate(ids, reason), self._launchers.ended)
        self.adapter = adapter
        self.start_monitor(interval=interval, adapter=adapter)
        return adapter

    # ------------------------------------------------------------------ monitor
    def start_monitor(self, interval: float = defaults.MONITOR_INTERVAL, keep_workers: bool = False,
                      restart_budget: int = defaults.RESTART_BUDGET, adapter: Adapter | None = None) -> None:
        """Run `detect_lost_workers` (and, for batch workers, reconciliation with the
        scheduler) every ``interval`` seconds in a background thread. With
        ``keep_workers=True`` it starts a replacement for each lost worker, at most
        ``restart_budget`` in all. Stopped by `stop_monitor`, `reset` and `close`.

        Example:
            >>> rush.start_monitor(interval=5, keep_workers=True)
        """
        self.stop_monitor()
        self._monitor = Monitor(self, interval=interval, keep_workers=keep_workers, restart_budget=restart_budget,
                                adapter=adapter)
        self._monitor.start()

    def stop_monitor(self) -> None:
        """Stop the background monitor (workers keep running)."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the monitor and the local workers this manager started (unless detached).

        A closed manager leaves the exit hook's list (until it starts workers again): closing it
        once more at exit would ask Redis again, and wait for it in vain when Redis was stopped.
        """
        _MANAGERS.discard(self)
        self.stop_monitor()
        for launcher in self._launchers.all():
            try:
                mine = [w for w in launcher.owned_workers() if w in set(self.network.running_worker_ids)]
                if mine:
                    self.stop_workers(type="kill", worker_ids=mine)
            except redis.RedisError:
                pass  # Redis is gone: the processes are still killed below
            try:
                launcher.close()
            except OSError as e:
                log.warning("closing the %s launcher: %s", launcher.name, e)

    def __enter__(self) -> "Rush":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the network view's members (network/view.py)
    check_schema = method("network", Network.check_schema)
    credentials_file = method("network", Network.credentials_file)
    delete = method("network", Network.delete)
    exists = method("network", Network.exists)
    meta = method("network", Network.meta)
    reconnect = method("network", Network.reconnect)
    remove_run_dir = method("network", Network.remove_run_dir)
    set_sweep_info = method("network", Network.set_sweep_info)
    signing_key = method("network", Network.signing_key)
    signing_key_file = method("network", Network.signing_key_file)
    signing_key_path = prop("network", Network.signing_key_path)
    sweep_info = method("network", Network.sweep_info)
    # its parts' (network/tasks.py, workers.py, launches.py), read on the part directly
    counts_by_state = method("network.tasks", TaskStore.counts_by_state)
    empty_queue = method("network.tasks", TaskStore.empty_queue)
    failed_tasks = prop("network.tasks", TaskStore.failed_tasks)
    fetch_failed_tasks = method("network.tasks", TaskStore.fetch_failed_tasks)
    fetch_finished_tasks = method("network.tasks", TaskStore.fetch_finished_tasks)
    fetch_new_tasks = method("network.tasks", TaskStore.fetch_new_tasks)
    fetch_queued_tasks = method("network.tasks", TaskStore.fetch_queued_tasks)
    fetch_running_tasks = method("network.tasks", TaskStore.fetch_running_tasks)
    fetch_task = method("network.tasks", TaskStore.fetch_task)
    fetch_tasks = method("network.tasks", TaskStore.fetch_tasks)
    fetch_tasks_with_state = method("network.tasks", TaskStore.fetch_tasks_with_state)
    finished_tasks = prop("network.tasks", TaskStore.finished_tasks)
    is_failed_task = method("network.tasks", TaskStore.is_failed_task)
    is_running_task = method("network.tasks", TaskStore.is_running_task)
    log_rows = method("network.tasks", TaskStore.log_rows)
    n_failed_tasks = prop("network.tasks", TaskStore.n_failed_tasks)
    n_finished_tasks = prop("network.tasks", TaskStore.n_finished_tasks)
    n_queued_tasks = prop("network.tasks", TaskStore.n_queued_tasks)
    n_running_tasks = prop("network.tasks", TaskStore.n_running_tasks)
    n_tasks = prop("network.tasks", TaskStore.n_tasks)
    print_log = method("network.tasks", TaskStore.print_log)
    push_failed_tasks = method("network.tasks", TaskStore.push_failed_tasks)
    push_finished_tasks = method("network.tasks", TaskStore.push_finished_tasks)
    push_tasks = method("network.tasks", TaskStore.push_tasks)
    queued_tasks = prop("network.tasks", TaskStore.queued_tasks)
    read_log = method("network.tasks", TaskStore.read_log)
    recent_durations = method("network.tasks", TaskStore.recent_durations)
    reset_cache = method("network.tasks", TaskStore.reset_cache)
    running_tasks = prop("network.tasks", TaskStore.running_tasks)
    task_rows = method("network.tasks", TaskStore.task_rows)
    tasks_with_state = method("network.tasks", TaskStore.tasks_with_state)
    failed_worker_ids = prop("network.workers", Workers.failed_worker_ids)
    heartbeat_ages = method("network.workers", Workers.heartbeat_ages)
    killed_worker_ids = prop("network.workers", Workers.killed_worker_ids)
    lost_worker_ids = prop("network.workers", Workers.lost_worker_ids)
    mark_workers = method("network.workers", Workers.mark_workers)
    n_running_workers = prop("network.workers", Workers.n_running_workers)
    n_workers = prop("network.workers", Workers.n_workers)
    never_started = method("network.workers", Workers.never_started)
    registered_ids = method("network.workers", Workers.registered_ids)
    request_terminate = method("network.workers", Workers.request_terminate)
    running_worker_ids = prop("network.workers", Workers.running_worker_ids)
    send_kill = method("network.workers", Workers.send_kill)
    settle_released = method("network.workers", Workers.settle_released)
    terminated_worker_ids = prop("network.workers", Workers.terminated_worker_ids)
    worker_counts = method("network.workers", Workers.worker_counts)
    worker_field = method("network.workers", Workers.worker_field)
    worker_ids = prop("network.workers", Workers.worker_ids)
    worker_ids_in = method("network.workers", Workers.worker_ids_in)
    worker_info = prop("network.workers", Workers.worker_info)
    worker_rows = method("network.workers", Workers.worker_rows)
    worker_states = method("network.workers", Workers.worker_states)
    active_records = method("network.launches", Launches.active_records)
    launched_ids = prop("network.launches", Launches.launched_ids)
    record = method("network.launches", Launches.record)
    records = method("network.launches", Launches.records)
    save_record = method("network.launches", Launches.save_record)
    store_records = method("network.launches", Launches.store_records)

_MANAGERS: "weakref.WeakSet[Rush]" = weakref.WeakSet()


def _close_managers() -> None:
    for m in list(_MANAGERS):
        try:
            m.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def rsh(network_id: str | None = None, config: RedisConfig | str | dict | None = None, *,
        network: str | None = None, keep_logs: bool = False, plan: Plan | None = None) -> Rush:
    """Connect to a network (a new random id when none is given). ``network=`` is the
    spelling of R's rush (``rsh(network = "...")``). ``keep_logs=True`` keeps the workers'
    output files when `Rush.reset` or the end of the embedded Redis removes the run directory.
    ``plan``: the manager's `Plan` (default: the process-wide one, `rush_plan`).

    Example:
        >>> rush = rsh("sweep-1", config="redis://127.0.0.1:6379")
        >>> rush = rsh("sweep-2", plan=Plan(n_workers=4, worker_type="slurm"))
    """
    if network is not None:
        if network_id is not None and network_id != network:
            raise RushConfigError(f"rsh(): network_id {network_id!r} and network {network!r} disagree; pass one")
        network_id = network
    return Rush(network_id=network_id, config=config, keep_logs=keep_logs, plan=plan)

"""The manager: `Rush` (and `rsh`), the Python counterpart of rush's manager.

A `Rush` object is a view of one network in Redis. It holds no state that
matters beyond caches and process handles: a new manager that connects to the
same network id sees everything.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import time
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import orjson
import redis

from . import startargs
from .config import (
    DEFAULT_MAX_OBJECT_SIZE,
    DEFAULT_START_WORKER_TIMEOUT,
    RedisConfig,
    as_config,
    env_config,
    heartbeat_settings,
    rush_config,
    write_credentials,
)
from .errors import RushConfigError, RushError, RushTimeoutError, RushWorkerError
from .launchers.base import Launcher, LaunchRecord, shell_join, worker_argv
from .layout import Keys, Scripts, validate_id
from .reconcile import Reconciler
from .tables import WORKER_COLUMNS
from .tasks import TaskStore

if TYPE_CHECKING:
    import pandas as pd

from . import __version__

log = logging.getLogger("rushhpc")


def _default_run_root() -> Path:
    return Path(os.environ.get("RUSHHPC_RUN_DIR", Path.home() / ".rushhpc" / "runs")).expanduser()


class Rush(TaskStore):
    """The manager of one network: starts and watches workers, pushes and fetches tasks.

    Example:
        >>> rush = rsh("sweep-1")                       # embedded Redis if none is configured
        >>> rush.start_local_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x * x})
        >>> rush.wait_for_workers(2)
        >>> keys = rush.push_tasks([{"x": i} for i in range(10)])
        >>> rush.wait_for_tasks(keys)
        >>> rush.fetch_finished_tasks()
    """

    def __init__(
        self,
        network_id: str | None = None,
        config: RedisConfig | str | dict | None = None,
        run_dir: str | os.PathLike | None = None,
    ):
        plan = rush_config()
        self.network_id = validate_id(network_id) if network_id is not None else "net-" + secrets.token_hex(6)
        cfg = as_config(config) or plan.get("config") or env_config()
        self.embedded = cfg is None
        if cfg is None:
            from .embedded import embedded_redis

            cfg = embedded_redis()
        self.config: RedisConfig = cfg
        self.keys = Keys(self.network_id)
        self._plan = plan
        root = Path(run_dir or plan.get("run_dir") or _default_run_root()).expanduser()
        self.run_dir = root / self.network_id
        self.connector: redis.Redis = cfg.connect()
        self.scripts = Scripts(self.connector)
        self._credentials_written = False
        self._launchers: dict[str, Launcher] = {}
        self._records: dict[str, LaunchRecord] = {}
        self._init_caches()
        self._monitor = None
        self._reconciler = Reconciler(self)
        self._check_meta()
        _MANAGERS.add(self)

    # ------------------------------------------------------------------ basics
    def __repr__(self) -> str:
        return f"<{type(self).__name__} network={self.network_id!r} redis={self.config}>"

    def _check_meta(self) -> None:
        """Record the Redis server's run id; a change means Redis restarted under this network."""
        try:
            run_id = self.connector.info("server").get("run_id", "")
        except redis.ResponseError:  # INFO may be disabled by an ACL
            return
        k = self.keys.meta
        old = self.connector.hget(k, "redis_run_id")
        if old is None:
            self.connector.hset(k, mapping={"redis_run_id": run_id, "created_at": time.time(), "version": __version__})
        elif old != run_id:
            self.connector.hset(k, "redis_run_id", run_id)
            warnings.warn(
                f"Redis at {self.config.address} restarted since network {self.network_id!r} was created "
                "(its run id changed). Without persistence (appendonly yes) tasks and workers may be lost.",
                RuntimeWarning,
                stacklevel=3,
            )

    def reconnect(self) -> None:
        """Open a fresh connection (after a Redis restart or a network change)."""
        self.connector = self.config.connect()
        self.scripts = Scripts(self.connector)

    def _plan_get(self, name: str, default: Any = None) -> Any:
        value = self._plan.get(name)
        return default if value is None else value

    def credentials_file(self) -> Path:
        """The 0600 file holding the Redis URL that workers read, (re)written by this manager
        on first use: a file left by an earlier run may name another Redis."""
        path = self.run_dir / "credentials.json"
        if not self._credentials_written:
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_credentials(path, self.config)
            self._credentials_written = True
        return path

    # ------------------------------------------------------------------ workers
    def _launcher(self, worker_type: str) -> Launcher:
        if worker_type not in self._launchers:
            from .launchers import get_launcher

            options = dict(self._plan_get("launcher_options", {}))
            self._launchers[worker_type] = get_launcher(worker_type)(self, options)
        return self._launchers[worker_type]

    def _prepare_start(self, worker_loop: Callable, options_and_args: dict[str, Any]) -> tuple[str, dict]:
        options, args = startargs.split_options(options_and_args)
        period = options.get("heartbeat_period", self._plan.get("heartbeat_period"))
        expire = options.get("heartbeat_expire", self._plan.get("heartbeat_expire"))
        options["heartbeat_period"], options["heartbeat_expire"] = heartbeat_settings(period, expire)
        options.setdefault("log_thresholds", self._plan.get("log_thresholds"))
        blob = startargs.dump(worker_loop, args, options)
        start_id = startargs.store(
            self.connector,
            self.keys,
            blob,
            int(self._plan_get("max_object_size", DEFAULT_MAX_OBJECT_SIZE)),
            self._plan.get("large_objects_path"),
        )
        return start_id, options

    def _start(self, worker_type: str, worker_loop: Callable, n_workers: int | None, options_and_args: dict) -> list[str]:
        n = n_workers if n_workers is not None else self._plan.get("n_workers")
        if n is None:
            raise RushConfigError(
                "how many workers? Pass n_workers=... or set rush_plan(n_workers=...)"
            )
        if not isinstance(n, int) or n < 1:
            raise RushConfigError(f"n_workers must be a positive integer, got {n!r}")
        start_id, options = self._prepare_start(worker_loop, options_and_args)
        return self._launch(worker_type, start_id, n, options)

    def _launch(self, worker_type: str, start_id: str, n: int, options: dict[str, Any]) -> list[str]:
        launcher = self._launcher(worker_type)
        records = launcher.launch(start_id, launcher.make_worker_ids(n), options)
        for r in records:
            r.extra["options"] = options  # so a monitor can start a replacement the same way
        self._store_records(records)
        return [r.worker_id for r in records]

    def _replace_workers(self, worker_ids: Sequence[str]) -> list[str]:
        """Start one new worker for each of these (lost) workers, the way they were started."""
        groups: dict[tuple[str, str], tuple[int, dict]] = {}
        for wid in worker_ids:
            rec = self._records.get(wid)
            if rec is None:
                text = self.connector.hget(self.keys.launches, wid)
                rec = LaunchRecord(**orjson.loads(text)) if text else None
            if rec is not None and rec.start_id:
                n, _ = groups.get((rec.launcher, rec.start_id), (0, {}))
                groups[(rec.launcher, rec.start_id)] = (n + 1, rec.extra.get("options", {}))
        new: list[str] = []
        for (name, start_id), (n, options) in groups.items():
            ids = self._launch(name, start_id, n, options)
            log.warning("started %d replacement worker(s) through %s: %s", n, name, ", ".join(ids))
            new += ids
        return new

    def _store_records(self, records: Sequence[LaunchRecord]) -> None:
        if not records:
            return
        mapping = {r.worker_id: orjson.dumps(r.__dict__).decode() for r in records}
        with self.connector.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.launches, mapping=mapping)
            for r in records:
                if not r.extra.get("managed"):
                    continue
                # batch workers exist from their submission on, as `pending`, until they register
                pipe.hset(self.keys.worker(r.worker_id), mapping={
                    "worker_id": r.worker_id, "state": "pending", "launcher": r.launcher,
                    "job_id": r.job_id or "", "submitted_at": r.submitted_at, "managed": "1",
                })
                pipe.sadd(self.keys.workers_in("pending"), r.worker_id)
                pipe.sadd(self.keys.active_launches, r.worker_id)
            pipe.execute()
        for r in records:
            self._records[r.worker_id] = r

    def start_workers(self, worker_loop: Callable, n_workers: int | None = None, **options_and_args: Any) -> list[str]:
        """Start workers with the plan's launcher (``worker_type``, default local).

        Keywords ``heartbeat_period``, ``heartbeat_expire``, ``log_thresholds`` and
        ``launcher_options`` (overrides the plan's, e.g. ``{"time": "01:00:00"}``) are
        options; every other keyword is passed to ``worker_loop``.

        Example:
            >>> rush_plan(n_workers=4, worker_type="local")
            >>> ids = rush.start_workers(queue_loop, fun=objective)
        """
        worker_type = self._plan_get("worker_type", "local")
        if worker_type == "script":
            raise RushConfigError("worker_type 'script': call rush.worker_script(...) and run its output yourself")
        return self._start(worker_type, worker_loop, n_workers, options_and_args)

    def start_local_workers(
        self, worker_loop: Callable, n_workers: int | None = None, **options_and_args: Any
    ) -> list[str]:
        """Start ``n_workers`` worker processes on this machine; returns their ids.

        Example:
            >>> ids = rush.start_local_workers(queue_loop, n_workers=2, fun=objective, heartbeat_period=5)
        """
        return self._start("local", worker_loop, n_workers, options_and_args)

    def worker_script(self, worker_loop: Callable, **options_and_args: Any) -> str:
        """A shell command that starts one worker of this network anywhere that reaches Redis.

        The Redis password is never in it: the command names a 0600 credentials file in
        the run directory, or, with ``credentials="env"``, expects ``RUSHHPC_REDIS_URL``
        in the worker's environment. ``python=`` sets the interpreter.

        Example:
            >>> print(rush.worker_script(queue_loop, fun=objective))
            /usr/bin/python3 -m rushhpc worker --network sweep-1 --start-id 5d1e... --credentials ...
        """
        python = options_and_args.pop("python", None)
        credentials = options_and_args.pop("credentials", "file")
        if credentials not in ("file", "env"):
            raise RushConfigError("credentials must be 'file' (a 0600 file in the run directory) or 'env'")
        start_id, options = self._prepare_start(worker_loop, options_and_args)
        creds = str(self.credentials_file()) if credentials == "file" else None
        return shell_join(worker_argv(self, start_id, None, creds, options, python=python, extra=["--launcher", "script"]))

    def render_script(self, worker_loop: Callable, n_workers: int = 1, worker_type: str | None = None,
                      **options_and_args: Any) -> str:
        """The exact batch script `start_workers` would submit for ``n_workers`` (SLURM, PBS).

        Example:
            >>> print(rush.render_script(queue_loop, n_workers=10, worker_type="slurm", fun=objective))
        """
        worker_type = worker_type or self._plan_get("worker_type", "local")
        launcher = self._launcher(worker_type)
        if not hasattr(launcher, "render"):
            raise RushConfigError(f"worker_type {worker_type!r} submits no batch script; use slurm or pbs")
        start_id, options = self._prepare_start(worker_loop, options_and_args)
        prefix = launcher.make_worker_ids(1)[0].rsplit("-", 1)[0]
        return launcher.render(start_id, prefix, n_workers, 0, options, options.get("launcher_options"))

    def _local_dead(self) -> dict[str, int]:
        launcher = self._launchers.get("local")
        return launcher.dead() if launcher is not None else {}

    def wait_for_workers(
        self, n: int | None = None, worker_ids: Sequence[str] | None = None, timeout: float | None = None
    ) -> None:
        """Block until ``n`` workers (or these ``worker_ids``) have registered.

        Raises `RushTimeoutError` after ``timeout`` (default: the plan's
        ``start_worker_timeout``, 60 s) and `RushWorkerError` at once when a
        local worker died before registering, with the tail of its stderr.

        Example:
            >>> rush.wait_for_workers(n=4, timeout=120)
        """
        if timeout is None:
            timeout = float(self._plan_get("start_worker_timeout", DEFAULT_START_WORKER_TIMEOUT))
        wanted = set(worker_ids) if worker_ids is not None else None
        if wanted is None and n is None:
            wanted = set(self._records)
        deadline = time.monotonic() + timeout
        last_detect = 0.0
        while True:
            registered = self._registered_ids()
            if wanted is not None:
                missing = wanted - registered
                if not missing and (n is None or len(wanted & registered) >= n):
                    return
            elif len(registered) >= n:
                return
            dead = {w: c for w, c in self._local_dead().items() if w not in registered}
            if wanted is not None:
                dead = {w: c for w, c in dead.items() if w in wanted}
            if dead:
                wid, code = next(iter(dead.items()))
                raise RushWorkerError(
                    f"worker {wid} exited with code {code} before registering. Its stderr ends with:\n"
                    + (self._launchers["local"].stderr_tail(wid) or "(empty)")
                )
            if self._records and time.monotonic() - last_detect > 1.0:
                last_detect = time.monotonic()
                self.detect_lost_workers()
                failed = self._never_started(wanted)
                if failed:
                    wid, reason = next(iter(failed.items()))
                    rec = self._records.get(wid)
                    tail = self._launcher(rec.launcher).stderr_tail(wid) if rec else ""
                    raise RushWorkerError(
                        f"{len(failed)} worker(s) failed to start, e.g. {wid}: {reason}. "
                        f"Its stderr ends with:\n{tail or '(empty)'}"
                    )
            if time.monotonic() > deadline:
                have = len(registered if wanted is None else wanted & registered)
                need = n if n is not None else len(wanted or ())
                raise RushTimeoutError(
                    f"only {have} of {need} workers registered within {timeout:g} s. Check the workers' "
                    f"stderr in {self.run_dir / 'workers'} and that they can reach Redis at {self.config.address}."
                )
            time.sleep(0.05)

    def _registered_ids(self) -> set[str]:
        """Workers that registered at least once (a pending batch worker that was declared lost did not)."""
        with self.connector.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.workers)
            pipe.smembers(self.keys.workers_in("lost"))
            pipe.smembers(self.keys.workers_in("killed"))
            ids, lost, killed = pipe.execute()
        ended = (lost | killed) & set(self._records)
        if ended:
            never = self._never_started(ended)
            ids -= set(never)
        return ids

    def _never_started(self, among: Iterable[str] | None) -> dict[str, str]:
        """Worker id -> reason, for launched workers that ended without ever registering."""
        ids = [w for w in (among if among is not None else self._records) if w in self._records]
        if not ids:
            return {}
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hmget(self.keys.worker(wid), ["state", "pid", "reason"])
            rows = pipe.execute()
        return {w: r[2] or r[0] for w, r in zip(ids, rows) if r[0] in ("lost", "killed") and not r[1]}

    def wait_for_tasks(
        self, keys: Sequence[str], timeout: float | None = None, detect_lost_workers: bool = True
    ) -> None:
        """Block until every task in ``keys`` is finished or failed. Runs
        `detect_lost_workers` as it polls (so a dead worker cannot hang the wait).

        Example:
            >>> rush.wait_for_tasks(keys, timeout=600)
        """
        keys = list(keys)
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep = 0.005
        last_detect = 0.0
        while True:
            with self.connector.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hget(self.keys.task(k), "state")
                states = pipe.execute()
            keys = [k for k, s in zip(keys, states) if s not in ("finished", "failed", None)]
            if not keys:
                return
            now = time.monotonic()
            if detect_lost_workers and now - last_detect > 1.0:
                self.detect_lost_workers()
                last_detect = now
            if deadline is not None and now > deadline:
                raise RushTimeoutError(f"{len(keys)} task(s) still not finished after {timeout:g} s")
            time.sleep(sleep)
            sleep = min(0.1, sleep * 2)

    @property
    def worker_info(self) -> pd.DataFrame:
        """One row per worker: id, state, pid, hostname, heartbeat, launcher, job id, reason...

        ``state`` is the worker's (running, terminated, killed, lost, failed), or for batch
        workers not registered yet, their job's (pending, held, starting); a running
        worker whose job is suspended shows ``suspended``. ``job_state`` is the
        scheduler's view at the last poll.
        """
        rows = []
        for flat in self.scripts.worker_info(
            keys=[self.keys.workers, self.keys.workers_in("pending")], args=[self.keys.prefix]
        ):
            h = dict(zip(flat[0::2], flat[1::2]))
            state = h.get("state")
            job_state = h.get("job_state") or None
            if state == "pending" and job_state in ("held", "starting", "running"):
                state = "held" if job_state == "held" else "starting"
            elif state == "running" and job_state == "suspended":
                state = "suspended"
            rows.append(
                {
                    "worker_id": h.get("worker_id"),
                    "state": state,
                    "job_state": job_state,
                    "pid": int(h["pid"]) if h.get("pid") else None,
                    "hostname": h.get("hostname"),
                    "node": h.get("node") or None,
                    "heartbeat": "heartbeat_expire" in h,
                    "heartbeat_alive": h.get("heartbeat_alive") == "1",
                    "heartbeat_pid": int(h["heartbeat_pid"]) if h.get("heartbeat_pid") else None,
                    "launcher": h.get("launcher"),
                    "job_id": h.get("job_id") or None,
                    "reason": h.get("reason") or None,
                    "started_at": float(h["started_at"]) if h.get("started_at") else None,
                    "stopped_at": float(h["stopped_at"]) if h.get("stopped_at") else None,
                }
            )
        import pandas as pd

        df = pd.DataFrame(rows, columns=WORKER_COLUMNS)
        for t in ("started_at", "stopped_at"):
            df[t] = pd.to_datetime(df[t], unit="s", utc=True)
        return df.sort_values("started_at", kind="stable").reset_index(drop=True)

    @property
    def worker_ids(self) -> list[str]:
        """Ids of every worker that registered."""
        return sorted(self.connector.smembers(self.keys.workers))

    def _worker_ids_in(self, state: str) -> list[str]:
        return sorted(self.connector.smembers(self.keys.workers_in(state)))

    @property
    def running_worker_ids(self) -> list[str]:
        return self._worker_ids_in("running")

    @property
    def terminated_worker_ids(self) -> list[str]:
        return self._worker_ids_in("terminated")

    @property
    def killed_worker_ids(self) -> list[str]:
        return self._worker_ids_in("killed")

    @property
    def lost_worker_ids(self) -> list[str]:
        return self._worker_ids_in("lost")

    @property
    def failed_worker_ids(self) -> list[str]:
        return self._worker_ids_in("failed")

    @property
    def n_workers(self) -> int:
        return int(self.connector.scard(self.keys.workers))

    @property
    def n_running_workers(self) -> int:
        return int(self.connector.scard(self.keys.workers_in("running")))

    def _mark_workers(
        self, state: str, items: Iterable[tuple[str, str, str]], retry: bool, source: str = "running"
    ) -> list[str]:
        """Move running (or pending) workers to ``state``; returns the ids that changed (first verdict stands)."""
        args: list[str] = [self.keys.prefix, state, "1" if retry else "0"]
        for wid, reason, message in items:
            args += [wid, reason, message]
        if len(args) == 3:
            return []
        out = self.scripts.stop_workers(keys=[self.keys.workers_in(source)], args=args)
        for wid, failed, requeued in out:
            if failed or requeued:
                log.warning("worker %s %s: %s running task(s) failed, %s requeued", wid, state, failed, requeued)
        return [row[0] for row in out]

    def stop_workers(self, type: str = "kill", worker_ids: Sequence[str] | None = None) -> list[str]:
        """Stop running workers. ``"terminate"``: each finishes its task, then ends.
        ``"kill"``: marked killed (their running tasks fail with "worker was killed"),
        then killed through their process handle or heartbeat. Returns the ids acted on.

        Example:
            >>> rush.stop_workers(type="terminate")
            >>> rush.stop_workers(worker_ids=["w-3f9a1c0d2b7e"])
        """
        if type not in ("kill", "terminate"):
            raise RushError(f"type must be 'kill' or 'terminate', got {type!r}")
        running = set(self.running_worker_ids)
        pending = set(self._worker_ids_in("pending"))
        targets = list(worker_ids) if worker_ids is not None else sorted(running | pending)
        if type == "terminate":
            with self.connector.pipeline(transaction=False) as pipe:
                for wid in targets:
                    if wid in running:
                        pipe.hset(self.keys.worker(wid), "terminate", "1")
                pipe.execute()
            return [w for w in targets if w in running]
        changed = self._mark_workers("killed", ((w, "killed", "worker was killed") for w in targets if w in running), retry=False)
        changed += self._mark_workers("killed", ((w, "killed", "worker was killed") for w in targets if w in pending), retry=False, source="pending")
        if any(w not in self._records for w in targets):
            self._reconciler.records()
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in targets:
                pipe.rpush(self.keys.kill(wid), "kill")
                pipe.expire(self.keys.kill(wid), 3600)
            pipe.execute()
        by_launcher: dict[str, list[LaunchRecord]] = {}
        for wid in targets:
            rec = self._records.get(wid)
            if rec is not None:
                by_launcher.setdefault(rec.launcher, []).append(rec)
        for name, recs in by_launcher.items():
            self._launcher(name).kill(recs)
        return changed

    def detect_lost_workers(self, poll_scheduler: bool | None = None) -> list[str]:
        """Find workers that are gone and mark them lost: a heartbeat expired, a local
        process ended, or (batch workers) the scheduler's view says so (see
        `rushhpc.reconcile`). Their pending tasks go back to the queue; their running
        tasks are requeued while retries are left (``max_retries``), else failed.
        Returns the ids found lost by this call.

        The scheduler is asked at most once per call, for all jobs, and only when its
        poll interval has passed or a batch worker's heartbeat expired
        (``poll_scheduler=True`` forces, ``False`` skips).

        Example:
            >>> lost = rush.detect_lost_workers()
        """
        lost: list[str] = []
        dead = self._local_dead()
        if dead:
            with self.connector.pipeline(transaction=False) as pipe:
                pipe.smembers(self.keys.workers_in("running"))
                pipe.smembers(self.keys.workers)
                running, registered = pipe.execute()
            items = []
            for wid, code in dead.items():
                if wid in running:
                    how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
                    tail = self._launchers["local"].stderr_tail(wid, 5)
                    log.warning("worker %s process ended (%s) while running; stderr tail:\n%s", wid, how, tail)
                    items.append((wid, "process_died", f"worker {wid} was lost (process ended: {how})"))
            lost += self._mark_workers("lost", items, retry=True)
            # settled: not looked at again (unregistered ones stay for wait_for_workers' error)
            self._launchers["local"].forget(w for w in dead if w in registered)
        out, expired_managed, n_active = self.scripts.detect_lost(
            keys=[self.keys.workers_in("running"), self.keys.active_launches], args=[self.keys.prefix, "1"]
        )
        for wid, failed, requeued in out:
            log.warning("worker %s lost (heartbeat expired): %s task(s) failed, %s requeued", wid, failed, requeued)
            lost.append(wid)
        if poll_scheduler is not False and n_active:
            lost += self._reconciler.run(force=bool(poll_scheduler), urgent=bool(expired_managed))
        return lost

    def reset(self, workers: bool = True) -> None:
        """Delete the network from Redis. ``workers=True`` kills every running worker first;
        ``workers=False`` deletes tasks and logs only, and running workers go on.

        Example:
            >>> rush.reset()
        """
        self.stop_monitor()
        if workers:
            self.stop_workers(type="kill")
            pattern = self.keys.pattern
        else:
            pattern = None
        if pattern:
            self._delete_pattern(pattern)
            self._records.clear()
        else:
            for p in ("task:*", "queued", "running", "finished", "failed", "all_tasks", "log", "pending:*", "worker_tasks:*"):
                self._delete_pattern(self.keys.prefix + p)
        self.reset_cache()
        self._log_last_id = "-"

    def _delete_pattern(self, pattern: str) -> None:
        batch = []
        for k in self.connector.scan_iter(match=pattern, count=1000):
            batch.append(k)
            if len(batch) >= 1000:
                self.connector.unlink(*batch)
                batch = []
        if batch:
            self.connector.unlink(*batch)

    # ------------------------------------------------------------------ monitor
    def start_monitor(self, interval: float = 5.0, keep_workers: bool = False, restart_budget: int = 10) -> None:
        """Run `detect_lost_workers` (and, for batch workers, reconciliation with the
        scheduler) every ``interval`` seconds in a background thread. With
        ``keep_workers=True`` it starts a replacement for each lost worker, at most
        ``restart_budget`` in all. Stopped by `stop_monitor`, `reset` and `close`.

        Example:
            >>> rush.start_monitor(interval=5, keep_workers=True)
        """
        from .monitor import Monitor

        self.stop_monitor()
        self._monitor = Monitor(self, interval=interval, keep_workers=keep_workers, restart_budget=restart_budget)
        self._monitor.start()

    def stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the monitor and local workers this manager started (unless detached)."""
        self.stop_monitor()
        local = self._launchers.get("local")
        if local is not None and not local.options.get("detach"):
            try:
                running = set(self.running_worker_ids)
                mine = [w for w in local.processes if w in running]
                if mine:
                    self.stop_workers(type="kill", worker_ids=mine)
            except redis.RedisError:
                pass
            local.kill_all()

    def __enter__(self) -> "Rush":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_MANAGERS: "weakref.WeakSet[Rush]" = weakref.WeakSet()


@atexit.register
def _close_managers() -> None:
    for m in list(_MANAGERS):
        try:
            m.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def rsh(network_id: str | None = None, config: RedisConfig | str | dict | None = None) -> Rush:
    """Connect to a network (a new random id when none is given).

    Example:
        >>> rush = rsh("sweep-1", config="redis://127.0.0.1:6379")
    """
    return Rush(network_id=network_id, config=config)

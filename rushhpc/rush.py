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
from typing import Any, Callable, Iterable, Sequence

import orjson
import pandas as pd
import redis

from . import codec, startargs
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
from .layout import TASK_STATES, Keys, Scripts, validate_id
from .tables import LOG_COLUMNS, WORKER_COLUMNS, flatten, task_table

__version__ = "0.1.0"

log = logging.getLogger("rushhpc")

FETCH_CHUNK = 20_000  # keys per fetch script call: bounds how long Redis is busy
PUSH_CHUNK = 5_000


def _default_run_root() -> Path:
    return Path(os.environ.get("RUSHHPC_RUN_DIR", Path.home() / ".rushhpc" / "runs")).expanduser()


def new_keys(n: int) -> list[str]:
    """n fresh task keys (random, 128 bits, hex)."""
    return [os.urandom(16).hex() for _ in range(n)]


def _as_list(x: Any, n: int, what: str) -> list:
    if x is None:
        return [None] * n
    x = list(x)
    if len(x) != n:
        raise RushError(f"{what} has {len(x)} elements, expected {n} (one per task)")
    return x


class Rush:
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
        self._launchers: dict[str, Launcher] = {}
        self._records: dict[str, LaunchRecord] = {}
        self._finished_rows: list[dict] = []
        self._finished_df: pd.DataFrame | None = None
        self._new_offset = 0
        self._log_last_id = "-"
        self._monitor = None
        self._poll_floor = float(self._plan_get("launcher_options", {}).get("poll_interval") or 30.0)
        self._poll_max = float(self._plan_get("launcher_options", {}).get("max_poll_interval") or 180.0)
        self._poll_interval = self._poll_floor
        self._last_poll: float | None = None
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
        """The 0600 file holding the Redis URL that workers read (written on first use)."""
        path = self.run_dir / "credentials.json"
        if not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_credentials(path, self.config)
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
            launcher = self._launcher(name)
            records = launcher.launch(start_id, launcher.make_worker_ids(n), options)
            for r in records:
                r.extra["options"] = options
            self._store_records(records)
            new += [r.worker_id for r in records]
            log.warning("started %d replacement worker(s) through %s: %s", n, name, ", ".join(r.worker_id for r in records))
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
            self._batch_records()
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
            running = set(self.running_worker_ids)
            items = []
            for wid, code in dead.items():
                if wid in running:
                    how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
                    tail = self._launchers["local"].stderr_tail(wid, 5)
                    log.warning("worker %s process ended (%s) while running; stderr tail:\n%s", wid, how, tail)
                    items.append((wid, "process_died", f"worker {wid} was lost (process ended: {how})"))
            lost += self._mark_workers("lost", items, retry=True)
        out, expired_managed = self.scripts.detect_lost(
            keys=[self.keys.workers_in("running")], args=[self.keys.prefix, "1"]
        )
        for wid, failed, requeued in out:
            log.warning("worker %s lost (heartbeat expired): %s task(s) failed, %s requeued", wid, failed, requeued)
            lost.append(wid)
        if poll_scheduler is not False:
            lost += self._reconcile(force=bool(poll_scheduler), urgent=bool(expired_managed))
        return lost

    # ------------------------------------------------------------------ batch jobs
    def _batch_records(self) -> dict[str, LaunchRecord]:
        """Launch records of batch workers whose fate is not settled, read from Redis
        (so a new manager reattaching to the network knows them too)."""
        out = {}
        for wid, text in self.connector.hgetall(self.keys.launches).items():
            d = orjson.loads(text)
            if not d.get("extra", {}).get("managed") or d.get("extra", {}).get("done"):
                continue
            rec = self._records.get(wid) or LaunchRecord(**d)
            rec.extra = d.get("extra", {})
            self._records[wid] = rec
            out[wid] = rec
        return out

    def _poll_due(self, force: bool, urgent: bool) -> bool:
        now = time.monotonic()
        floor = self._poll_floor
        if force or self._last_poll is None:
            return True
        if urgent and now - self._last_poll >= min(floor, 1.0):
            return True
        return now - self._last_poll >= self._poll_interval

    def _reconcile(self, force: bool = False, urgent: bool = False) -> list[str]:
        """Poll each batch launcher once (all its jobs in one query) and apply `reconcile.decide`."""
        from .reconcile import decide

        if not self._poll_due(force, urgent) and not force:
            return []
        records = self._batch_records()
        if not records:
            return []
        self._last_poll = time.monotonic()
        by_launcher: dict[str, list[LaunchRecord]] = {}
        for rec in records.values():
            by_launcher.setdefault(rec.launcher, []).append(rec)
        statuses = {}
        for name, recs in by_launcher.items():
            statuses.update(self._launcher(name).poll(recs))
        info = {row["worker_id"]: row for row in self._worker_hashes(list(records))}
        now = time.time()
        lost: list[str] = []
        changed = False
        with self.connector.pipeline(transaction=False) as pipe:
            for wid, rec in records.items():
                w = info.get(wid)
                launcher = self._launcher(rec.launcher)
                expire = float((w or {}).get("heartbeat_expire") or self._plan_get("heartbeat_expire", 60))
                d = decide(wid, rec.extra, w, (w or {}).get("heartbeat_alive") == "1", statuses.get(wid), now,
                           launcher.startup_grace, expire, float(launcher.behaviour("vanish_grace", 60)))
                if d.job_state and (w or {}).get("job_state") != d.job_state:
                    pipe.hset(self.keys.worker(wid), "job_state", d.job_state)
                    changed = True
                if d.lost_reason:
                    tail = launcher.stderr_tail(wid, 10)
                    msg = d.message + (f"; stderr ends with: {tail.splitlines()[-1]}" if tail else "")
                    source = "pending" if (w or {}).get("state", "pending") == "pending" else "running"
                    if self._mark_workers("lost", [(wid, d.lost_reason, msg)], retry=True, source=source):
                        lost.append(wid)
                        log.warning("worker %s lost (%s)%s", wid, d.lost_reason, ":\n" + tail if tail else "")
                    changed = True
                if d.cancel_job:  # after the verdict: a killed worker must not get its own word in first
                    launcher.kill([rec])
                if d.refine_reason:
                    pipe.hset(self.keys.worker(wid), "reason", d.refine_reason)
                if d.track or d.done:
                    rec.extra.update(d.track)
                    if d.done:
                        rec.extra["done"] = True
                    pipe.hset(self.keys.launches, wid, orjson.dumps(rec.__dict__).decode())
            pipe.execute()
        # Adaptive polling: back off while nothing changes, return to the floor when something does.
        self._poll_interval = self._poll_floor if changed else min(self._poll_max, self._poll_interval * 1.5)
        return lost

    def _worker_hashes(self, worker_ids: Sequence[str]) -> list[dict]:
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hgetall(self.keys.worker(wid))
                pipe.exists(self.keys.heartbeat(wid))
            res = pipe.execute()
        out = []
        for wid, h, alive in zip(worker_ids, res[0::2], res[1::2]):
            if h:
                h = dict(h, heartbeat_alive="1" if alive else "0")
                h.setdefault("worker_id", wid)
                out.append(h)
        return out

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

    # ------------------------------------------------------------------ tasks in
    def _encode_tasks(self, xss: Sequence[dict], xss_extra: Sequence[dict] | None) -> tuple[list[str], list[str], list[str]]:
        if isinstance(xss, dict):
            raise RushError("xss must be a list of dicts, one per task: wrap a single task as [xs]")
        xss = list(xss)
        extras = _as_list(xss_extra, len(xss), "xss_extra")
        xs_json = [codec.encode_dict(xs, "xs") or "{}" for xs in xss]
        ex_json = [codec.encode_dict(e, "xs_extra") for e in extras]
        return new_keys(len(xss)), xs_json, ex_json

    def push_tasks(
        self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None, max_retries: int = 0
    ) -> list[str]:
        """Queue tasks for workers; returns their keys. ``max_retries``: how often a task
        whose worker was lost is requeued before it fails.

        Example:
            >>> keys = rush.push_tasks([{"x1": 1.0, "x2": 2.0}, {"x1": 3.0, "x2": 0.5}])
        """
        keys, xs_json, ex_json = self._encode_tasks(xss, xss_extra)
        for lo in range(0, len(keys), PUSH_CHUNK):
            args = [self.keys.prefix, str(int(max_retries))]
            for k, x, e in zip(keys[lo : lo + PUSH_CHUNK], xs_json[lo : lo + PUSH_CHUNK], ex_json[lo : lo + PUSH_CHUNK]):
                args += [k, x, e]
            self.scripts.push_tasks(keys=[self.keys.queued, self.keys.all_tasks], args=args)
        return keys

    def _push_final(self, state: str, xss, xss_extra, fields: list[tuple[str, str, str, str]]) -> list[str]:
        keys, xs_json, ex_json = self._encode_tasks(xss, xss_extra)
        dest = self.keys.finished if state == "finished" else self.keys.failed
        for lo in range(0, len(keys), PUSH_CHUNK):
            args = [self.keys.prefix, state]
            for i in range(lo, min(lo + PUSH_CHUNK, len(keys))):
                args += [keys[i], xs_json[i], ex_json[i], *fields[i]]
            self.scripts.push_final_tasks(keys=[dest, self.keys.all_tasks], args=args)
        return keys

    def push_finished_tasks(
        self,
        xss: Sequence[dict],
        yss: Sequence[dict],
        xss_extra: Sequence[dict] | None = None,
        yss_extra: Sequence[dict] | None = None,
    ) -> list[str]:
        """Record tasks evaluated elsewhere as finished (e.g. an initial design).

        Example:
            >>> rush.push_finished_tasks([{"x": 1}], [{"y": 1}])
        """
        yss = _as_list(yss, len(list(xss)), "yss")
        ye = _as_list(yss_extra, len(yss), "yss_extra")
        fields = [("ys", codec.encode_dict(y, "ys") or "{}", "ys_extra", codec.encode_dict(e, "ys_extra")) for y, e in zip(yss, ye)]
        return self._push_final("finished", xss, xss_extra, fields)

    def push_failed_tasks(
        self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None, conditions: Sequence[Any] | None = None
    ) -> list[str]:
        """Record tasks as failed, with a condition (message) each.

        Example:
            >>> rush.push_failed_tasks([{"x": -1}], conditions=["out of domain"])
        """
        conds = _as_list(conditions, len(list(xss)), "conditions")
        fields = [("condition", codec.condition(c), "", "") for c in conds]
        return self._push_final("failed", xss, xss_extra, fields)

    def empty_queue(self) -> int:
        """Fail every queued task with "Removed from queue"; returns how many.

        Example:
            >>> rush.empty_queue()
            12
        """
        return int(self.scripts.empty_queue(keys=[self.keys.queued, self.keys.failed], args=[self.keys.prefix, "Removed from queue"]))

    # ------------------------------------------------------------------ tasks out
    def _records_from(self, mode: str, *args: Any) -> list[dict]:
        text = self.scripts.fetch(args=[self.keys.prefix, mode, *args])
        return orjson.loads(text)

    def _fetch_states(self, states: Sequence[str]) -> list[dict]:
        for s in states:
            if s not in TASK_STATES:
                raise RushError(f"unknown task state {s!r}; states are {TASK_STATES}")
        return self._records_from("states", *states)

    def fetch_queued_tasks(self) -> pd.DataFrame:
        """Queued tasks (including those a worker popped but has not started)."""
        return task_table((flatten(r) for r in self._fetch_states(["queued"])), with_state=False)

    def fetch_running_tasks(self) -> pd.DataFrame:
        """Running tasks with the id of the worker running each."""
        return task_table((flatten(r) for r in self._fetch_states(["running"])), with_state=False)

    def fetch_failed_tasks(self) -> pd.DataFrame:
        """Failed tasks with their ``condition`` (the error message)."""
        return task_table((flatten(r) for r in self._fetch_states(["failed"])), with_state=False)

    def fetch_finished_tasks(self, reset_cache: bool = False) -> pd.DataFrame:
        """Finished tasks. Cached: each call reads only the tasks finished since the last.

        Example:
            >>> rush.fetch_finished_tasks()[["x1", "x2", "y", "worker_id"]]
        """
        if reset_cache:
            self.reset_cache()
        new = self._read_finished_from(len(self._finished_rows))
        if new or self._finished_df is None:
            self._finished_rows.extend(new)
            new_df = task_table(new, with_state=False)
            if self._finished_df is None or len(self._finished_df) == 0:
                self._finished_df = task_table(self._finished_rows, with_state=False)
            elif new:
                self._finished_df = pd.concat([self._finished_df, new_df], ignore_index=True)
        return self._finished_df

    def _read_finished_from(self, offset: int) -> list[dict]:
        rows: list[dict] = []
        while True:
            chunk = self._records_from("range", "finished", offset, offset + FETCH_CHUNK - 1)
            rows.extend(flatten(r) for r in chunk)
            if len(chunk) < FETCH_CHUNK:
                return rows
            offset += FETCH_CHUNK

    def fetch_new_tasks(self, timeout: float = 0) -> pd.DataFrame:
        """Finished tasks not returned by an earlier call of this method; waits up to
        ``timeout`` seconds for at least one.

        Example:
            >>> while (new := rush.fetch_new_tasks(timeout=5)).shape[0]: update_model(new)
        """
        deadline = time.monotonic() + timeout
        while True:
            n = int(self.connector.llen(self.keys.finished))
            if n > self._new_offset or time.monotonic() >= deadline:
                break
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        if n <= self._new_offset:
            return task_table([], with_state=False)
        if len(self._finished_rows) < n:
            self.fetch_finished_tasks()
        rows = self._finished_rows[self._new_offset : n]
        self._new_offset = n
        return task_table(rows, with_state=False)

    def fetch_tasks(self) -> pd.DataFrame:
        """Every task with its ``state``, read in one atomic step."""
        return self.fetch_tasks_with_state()

    def fetch_tasks_with_state(self, states: Sequence[str] = TASK_STATES) -> pd.DataFrame:
        """Tasks of these states with a ``state`` column, read in one atomic step, so
        every task appears exactly once.

        Example:
            >>> rush.fetch_tasks_with_state(states=["running", "finished"])
        """
        return task_table(flatten(r) for r in self._fetch_states(list(states)))

    def tasks_with_state(self, states: Sequence[str] = TASK_STATES) -> dict[str, list[str]]:
        """Task keys by state, read in one atomic step.

        Example:
            >>> rush.tasks_with_state(["queued", "running"])
            {'queued': [...], 'running': [...]}
        """
        for s in states:
            if s not in TASK_STATES:
                raise RushError(f"unknown task state {s!r}; states are {TASK_STATES}")
        rows = self.scripts.keys_with_state(args=[self.keys.prefix, *states])
        return {row[0]: list(row[1:]) for row in rows}

    def fetch_task(self, key: str) -> dict[str, Any] | None:
        """One task as a flat dict, or None."""
        recs = self._records_from("keys", key)
        return flatten(recs[0]) if recs else None

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

    def _counts(self) -> list[int]:
        return [int(x) for x in self.scripts.counts(args=[self.keys.prefix])]

    @property
    def n_queued_tasks(self) -> int:
        return self._counts()[0]

    @property
    def n_running_tasks(self) -> int:
        return self._counts()[1]

    @property
    def n_finished_tasks(self) -> int:
        return int(self.connector.llen(self.keys.finished))

    @property
    def n_failed_tasks(self) -> int:
        return int(self.connector.llen(self.keys.failed))

    @property
    def n_tasks(self) -> int:
        return int(self.connector.llen(self.keys.all_tasks))

    @property
    def queued_tasks(self) -> list[str]:
        return self.tasks_with_state(["queued"])["queued"]

    @property
    def running_tasks(self) -> list[str]:
        return self.tasks_with_state(["running"])["running"]

    @property
    def finished_tasks(self) -> list[str]:
        return self.tasks_with_state(["finished"])["finished"]

    @property
    def failed_tasks(self) -> list[str]:
        return self.tasks_with_state(["failed"])["failed"]

    def reset_cache(self) -> None:
        """Forget cached finished tasks (the next fetch reads all again)."""
        self._finished_rows = []
        self._finished_df = None
        self._new_offset = 0

    # ------------------------------------------------------------------ logs
    def _log_rows(self, start: str) -> list[dict]:
        rows = []
        for entry_id, fields in self.connector.xrange(self.keys.log, min=start):
            rows.append(
                {
                    "id": entry_id,
                    "worker_id": fields.get("worker_id"),
                    "level": fields.get("level"),
                    # the stream id is the Redis server's clock, shared by every node
                    "timestamp": int(entry_id.split("-")[0]) / 1000.0,
                    "logger": fields.get("logger"),
                    "msg": fields.get("msg"),
                }
            )
        return rows

    def read_log(self) -> pd.DataFrame:
        """Every log record the workers sent (up to the last 10,000).

        Example:
            >>> rush.read_log()[["worker_id", "level", "msg"]]
        """
        df = pd.DataFrame(self._log_rows("-"), columns=["id", *LOG_COLUMNS])
        df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
        return df[LOG_COLUMNS]

    def print_log(self) -> None:
        """Print log records that arrived since the last call."""
        start = "-" if self._log_last_id == "-" else "(" + self._log_last_id
        for row in self._log_rows(start):
            print(f"[{row['worker_id']}] {row['level']} {row['logger']}: {row['msg']}")
            self._log_last_id = row["id"]

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

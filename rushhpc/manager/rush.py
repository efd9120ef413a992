"""The manager: `Rush` (and `rsh`), the Python counterpart of rush's manager.

A `Rush` is a `rushhpc.network.view.Network` view that also starts, watches and stops
workers: it owns the launchers it builds from the plan, a `Reconciler` for batch jobs and
an optional background `Monitor`. It holds no state that matters beyond caches and process
handles: a new manager that opens the same network id sees, and can act on, everything.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import secrets
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence

import redis

from rushhpc import defaults, lifecycle
from rushhpc.core import codec
from rushhpc.core.records import LaunchRecord
from rushhpc.core.states import WorkerState
from rushhpc.errors import RushConfigError, RushError, RushNetworkLostError, RushTimeoutError, RushWorkerError
from rushhpc.launchers.base import Launcher
from rushhpc.launchers.registry import SCRIPT, check_worker_type, launcher_class
from rushhpc.manager.adapt import Adapter, AdaptPolicy
from rushhpc.manager.plan import Plan, current_plan
from rushhpc.manager.reconcile import Reconciler
from rushhpc.manager.supervise import Monitor
from rushhpc.network import startargs
from rushhpc.network.view import Network
from rushhpc.store.connection import RedisConfig, as_config, env_config, heartbeat_settings
from rushhpc.store.keys import validate_id

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("rushhpc")


class Rush(Network):
    """The manager of one network: starts and watches workers, pushes and fetches tasks.

    With no Redis configured (argument, plan, ``RUSHHPC_REDIS_URL``), or with
    ``config="embedded"``, it starts a private embedded one; `Rush.attach` never does.
    ``keep_logs=True`` keeps the workers' output files in the run directory when `reset` (or
    the end of the embedded Redis) removes the rest of it.

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
        *,
        must_exist: bool = False,
        keep_logs: bool = False,
    ):
        plan = current_plan()
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
        super().__init__(nid, cfg, run_dir=run_dir or plan.run_dir, signing_key_file=plan.signing_key_file)
        if must_exist and not self.exists():
            Network.open(nid, cfg, client=self.connector)  # raises, naming the networks there
        self._plan: Plan = plan
        self.keep_logs = keep_logs  # what `reset` (and the end of an embedded Redis) leaves in the run dir
        self._reset_here = False  # this manager's reset deleted the network; its next push or start makes it again
        self._launchers: dict[str, Launcher] = {}
        self._launch_lock = threading.RLock()  # launchers are shared with the monitor thread
        self._monitor: Monitor | None = None
        self.adapter: Adapter | None = None
        options = plan.launcher_options
        self._reconciler = Reconciler(self, self.launcher, options.get("poll_interval"),
                                      options.get("max_poll_interval"), plan.heartbeat_expire)
        self.create()
        if self.embedded:
            # the private Redis ends with this process, and every network on it: so do their run dirs
            from rushhpc.network.view import remove_run_files
            from rushhpc.server.embedded import at_stop

            at_stop(functools.partial(remove_run_files, self.run_dir, self._signing_key_file, keep_logs))
        _MANAGERS.add(self)
        lifecycle.at_exit(lifecycle.MANAGERS, _close_managers)

    @classmethod
    def attach(cls, network_id: str, config: RedisConfig | str | dict | None = None,
               run_dir: str | os.PathLike | None = None) -> "Rush":
        """A manager of an existing network (e.g. after the first manager died): it sees its
        workers and tasks and can stop them. Never starts a Redis; a missing network is an error.

        Example:
            >>> rush = Rush.attach("sweep-1", config="redis://login1:6379")
            >>> rush.stop_workers(type="terminate")
        """
        return cls(network_id, config, run_dir, must_exist=True)

    def create(self) -> None:
        """Write the network's meta hash (idempotent); after this manager's own `reset`, the
        network exists again."""
        super().create()
        self._reset_here = False

    def _before_push(self) -> None:
        if self._reset_here:
            self.create()

    def __repr__(self) -> str:
        from rushhpc.ui.notebook import manager_repr

        return manager_repr(self)

    def _repr_html_(self) -> str:
        from rushhpc.ui.notebook import manager_html

        return manager_html(self)

    def _plan_get(self, name: str, default: Any = None) -> Any:
        value = getattr(self._plan, name, None)
        return default if value is None else value

    # ------------------------------------------------------------------ launchers
    def launcher(self, worker_type: str) -> Launcher:
        """The launcher of this manager for ``worker_type``, built from the plan on first use."""
        with self._launch_lock:
            if worker_type not in self._launchers:
                options = dict(self._plan.launcher_options)
                launcher = launcher_class(worker_type)(self, options)
                # workers of this launcher that an earlier manager started: rebuild what can be
                stored = [r for r in self.records().values() if r.launcher == worker_type]
                if stored:
                    launcher.adopt(stored)
                self._launchers[worker_type] = launcher
            return self._launchers[worker_type]

    def _prepare_start(self, worker_loop: Callable, options_and_args: dict[str, Any]) -> tuple[str, dict]:
        options, args = startargs.split_options(options_and_args)
        period = options.get("heartbeat_period", self._plan.heartbeat_period)
        expire = options.get("heartbeat_expire", self._plan.heartbeat_expire)
        options["heartbeat_period"], options["heartbeat_expire"] = heartbeat_settings(period, expire)
        options.setdefault("log_thresholds", self._plan.log_thresholds)
        startargs.check_arguments(worker_loop, args)  # a misspelt argument fails here, not in every worker
        blob = startargs.dump(worker_loop, args, options)
        key = self.signing_key()  # a readable or broken key file fails before anything is written
        self.create()  # the network may have been reset since this manager was made
        start_id = startargs.store(
            self.connector,
            self.keys,
            blob,
            int(self._plan_get("max_object_size", defaults.MAX_OBJECT_SIZE)),
            self._plan.large_objects_path,
            key=key,
        )
        return start_id, options

    def _start(self, worker_type: str, worker_loop: Callable, n_workers: int | None, options_and_args: dict) -> list[str]:
        n = n_workers if n_workers is not None else self._plan.n_workers
        if n is None:
            raise RushConfigError(
                "how many workers? Pass n_workers=... or set rush_plan(n_workers=...)"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RushConfigError(f"n_workers must be a positive integer, got {n!r}")
        launcher = self.launcher(worker_type)  # an unknown or unusable launcher fails before anything is stored
        start_id, options = self._prepare_start(worker_loop, options_and_args)
        try:
            return self._launch(launcher.name, start_id, n, options)
        except BaseException:
            self._drop_unused_start(start_id)  # a launch refused before any worker: leave no start key
            raise

    def _drop_unused_start(self, start_id: str) -> None:
        try:
            if any(r.start_id == start_id for r in self.records().values()):
                return  # some workers were started (e.g. an earlier chunk): they need it
            self.connector.delete(self.keys.start(start_id))
            startargs.remove_files(self.keys, [start_id], self._plan.large_objects_path)
        except redis.RedisError:
            pass  # the original error matters more

    def check_client_capacity(self, n_workers: int) -> int | None:
        """Refuse a launch of ``n_workers`` that would need more client connections than Redis
        accepts (``maxclients``, which Redis itself lowers to its file-descriptor limit). Each
        worker holds about `defaults.CONNECTIONS_PER_WORKER` connections (its own, its heartbeat
        process's, its log handler's). Returns the connections left after the launch, or None when
        Redis does not say (an ACL user's connection, or ``INFO clients`` refused: the check is skipped).

        Example:
            >>> rush.check_client_capacity(1000)
            Traceback (most recent call last):
            RushConfigError: starting 1000 workers needs about 3000 more Redis connections ...
        """
        if self.config.username not in (None, "", "default"):
            # a network's ACL user (`rushhpc redis user`) may run neither INFO nor CONFIG: the
            # server's limits are its admin's business, and a refused call would fill the ACL log
            return None
        try:  # INFO clients says maxclients too, and needs no CONFIG permission
            clients = self.connector.info("clients")
            maxclients, connected = int(clients["maxclients"]), int(clients["connected_clients"])
        except (redis.ResponseError, KeyError, ValueError) as e:
            log.debug("maxclients check skipped: %s", e)
            return None
        need = n_workers * defaults.CONNECTIONS_PER_WORKER
        left = maxclients - connected - need
        if left < 0:
            raise RushConfigError(
                f"starting {n_workers} workers needs about {need} more Redis connections "
                f"({defaults.CONNECTIONS_PER_WORKER} per worker), but this Redis accepts {maxclients} clients "
                f"and {connected} are connected: raise maxclients (redis.conf or CONFIG SET maxclients N; Redis "
                "caps it to its open-file limit, so raise `ulimit -n` of the redis-server too), start fewer "
                "workers, or spread the work over several networks on several Redis servers (docs/scaling.md)"
            )
        return left

    def _launch(self, worker_type: str, start_id: str, n: int, options: dict[str, Any]) -> list[str]:
        self.check_client_capacity(n)
        with self._launch_lock:
            _MANAGERS.add(self)  # again, after a close(): the exit hook closes it
            launcher = self.launcher(worker_type)
            records = launcher.launch(start_id, launcher.make_worker_ids(n), options)
            for r in records:
                r.extra["options"] = options  # so a monitor can start a replacement the same way
            self.store_records(records)
        return [r.worker_id for r in records]

    def replace_workers(self, worker_ids: Sequence[str]) -> list[str]:
        """Start one new worker for each of these (lost) workers, the way they were started.

        A batch worker lost ``out_of_memory`` whose launcher options set ``mem_retry`` is replaced by a
        job asking more memory (`rushhpc.core.memory`): ``mem * mem_retry**k`` after the k-th out-of-memory end
        of its lineage, at most ``mem_max``; one already at ``mem_max`` is replaced at ``mem_max`` (the
        tasks' ``max_retries`` bound how often a hungry task is tried). The decision is logged, written in
        the new worker's hash (worker_info's ``mem`` and ``mem_retry_of``; ``mem_decision``) and on the
        tasks the lost job was running: a requeued one's ``xs_extra`` ``out_of_memory`` (a column of the task
        tables; a condition would mark it failed), a failed one's condition (after why it failed).

        Example:
            >>> rush.replace_workers(rush.lost_worker_ids)
        """
        ids = list(worker_ids)
        reasons = self.worker_field(ids, "reason") if ids else []
        groups: dict[tuple[str, str, str], tuple[int, dict, dict]] = {}
        new: list[str] = []
        for wid, reason in zip(ids, reasons):
            rec = self.record(wid)
            if rec is None or not rec.start_id:
                continue
            if reason == "out_of_memory":
                grown = self._replace_out_of_memory(wid, rec)
                if grown is not None:
                    new.append(grown)
                    continue
            # a replacement of a worker that asked more memory keeps its lineage (a later out-of-memory end
            # goes on from there)
            lineage: dict[str, Any] = {k: rec.extra[k] for k in ("mem_attempt", "mem_base") if k in rec.extra}
            group = (rec.launcher, rec.start_id, json.dumps(lineage, sort_keys=True))
            n, _, _ = groups.get(group, (0, {}, {}))
            groups[group] = (n + 1, rec.extra.get("options", {}), lineage)
        for (name, start_id, _), (n, options, lineage) in groups.items():
            started = self._launch(name, start_id, n, options)
            if lineage:
                self._note_lineage(started, lineage)
            log.warning("started %d replacement worker(s) through %s: %s", n, name, ", ".join(started))
            new += started
        return new

    def _note_lineage(self, worker_ids: Sequence[str], fields: dict[str, Any]) -> None:
        for wid in worker_ids:
            rec = self.record(wid)
            if rec is not None:
                rec.extra.update(fields)
                self.save_record(rec)

    def _replace_out_of_memory(self, worker_id: str, rec: LaunchRecord) -> str | None:
        """Replace a worker whose job ran out of memory with one asking more, when its launcher options
        set ``mem_retry``; the new worker's id, or None (no rule: an ordinary replacement)."""
        from rushhpc.core.memory import parse_memory
        from rushhpc.launchers.batch import BatchLauncher

        launcher = self.launcher(rec.launcher)
        if not isinstance(launcher, BatchLauncher):
            return None
        options = dict(rec.extra.get("options") or {})
        per_call = dict(options.get("launcher_options") or {})
        try:
            rule = launcher.memory_retry(per_call)  # checked at the start: this raises only if the plan changed
        except RushConfigError as e:
            log.warning("worker %s ran out of memory; replaced with the same memory: %s", worker_id, e)
            return None
        if rule is None:
            return None
        was = str({**launcher.options, **per_call}["mem"])
        attempt = int(rec.extra.get("mem_attempt") or 0) + 1
        base = int(rec.extra.get("mem_base") or rule.mem)  # the lineage's first mem, in MB
        mb, capped = dataclasses.replace(rule, mem=base).asked(attempt)
        at_max = rule.max_mb is not None and parse_memory(was) >= rule.max_mb
        text = launcher.memory_text(mb)
        options["launcher_options"] = {**per_call, "mem": text}
        [new] = self._launch(rec.launcher, rec.start_id, 1, options)
        if at_max:
            decision = (f"worker {worker_id} ran out of memory at mem_max ({was}): its replacement {new} asks "
                        f"mem={text} again (mem_max reached, mem_retry grows it no further)")
        else:
            decision = (f"worker {worker_id} ran out of memory with mem={was}: its replacement {new} asks "
                        f"mem={text} (mem_retry {rule.factor:g}, attempt {attempt}"
                        + (", capped at mem_max)" if capped else ")"))
        log.warning("%s", decision)
        self._note_lineage([new], {"mem_attempt": attempt, "mem_base": base, "mem_retry_of": worker_id})
        detail = {"worker": worker_id, "mem": was, "replacement": new, "replacement_mem": text,
                  "mem_retry": rule.factor, "attempt": attempt, "mem_max_reached": capped or at_max}
        keys = list(rec.extra.get("oom_tasks") or [])  # the tasks its job was running (the reconciler's note)
        with self.connector.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.worker(new), mapping={"mem": text, "mem_retry_of": worker_id,
                                                      "mem_attempt": attempt, "mem_decision": decision})
            for key in keys:
                pipe.hmget(self.keys.task(key), ["state", "condition", "xs_extra"])
            rows = pipe.execute()[1:]
        with self.connector.pipeline(transaction=False) as pipe:
            for key, (state, condition, extra) in zip(keys, rows):
                if state is None:
                    continue  # deleted meanwhile
                if state == "failed":  # no retry was left: it keeps why it failed, and says what was decided
                    parsed = codec.decode(condition)
                    old = str(parsed.get("message", "") if isinstance(parsed, dict) else parsed or "")
                    message = f"{old}; no retry left, not retried: {decision}" if old else decision
                    pipe.hset(self.keys.task(key), "condition",
                              codec.encode({"message": message, "out_of_memory": detail}, "condition"))
                    continue
                # requeued: a condition would mark it failed (only a failed task carries one, as in rush), so
                # the decision goes into its xs_extra, an ``out_of_memory`` column of the task tables
                data = codec.decode(extra) or {}
                if isinstance(data, dict):
                    data["out_of_memory"] = decision
                    pipe.hset(self.keys.task(key), "xs_extra", codec.encode_dict(data, "xs_extra"))
            pipe.execute()
        return new

    def start_workers(self, worker_loop: Callable, n_workers: int | None = None, **options_and_args: Any) -> list[str]:
        """Start workers with the plan's launcher (``worker_type``, default local).

        Keywords ``heartbeat_period``, ``heartbeat_expire``, ``log_thresholds`` and
        ``launcher_options`` (overrides the plan's, e.g. ``{"time": "01:00:00"}``) are
        options; every other keyword is passed to ``worker_loop``.

        Example:
            >>> rush_plan(n_workers=4, worker_type="local")
            >>> ids = rush.start_workers(queue_loop, fun=objective)
        """
        worker_type = check_worker_type(self._plan.worker_type)
        if worker_type == SCRIPT:
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
        in the worker's environment (and ``RUSHHPC_REDIS_CLUSTER=1`` for a Redis Cluster; the
        credentials file says so itself). ``python=`` sets the interpreter.

        Example:
            >>> print(rush.worker_script(queue_loop, fun=objective))
            /usr/bin/python3 -m rushhpc worker --network sweep-1 --start-id 5d1e... --credentials ...
        """
        from rushhpc.core.spec import WorkerSpec

        python = options_and_args.pop("python", None)
        credentials = options_and_args.pop("credentials", "file")
        if credentials not in ("file", "env"):
            raise RushConfigError("credentials must be 'file' (a 0600 file in the run directory) or 'env'")
        start_id, options = self._prepare_start(worker_loop, options_and_args)
        creds = str(self.credentials_file()) if credentials == "file" else None
        spec = WorkerSpec.from_options(self.network_id, start_id, options, credentials=creds,
                                       signing_key=str(self.signing_key_file()), launcher=SCRIPT)
        return spec.command(python)

    def render_script(self, worker_loop: Callable, n_workers: int = 1, worker_type: str | None = None,
                      **options_and_args: Any) -> str:
        """The exact batch script `start_workers` would submit for ``n_workers`` (SLURM, PBS).

        Example:
            >>> print(rush.render_script(queue_loop, n_workers=10, worker_type="slurm", fun=objective))
        """
        worker_type = check_worker_type(worker_type or self._plan.worker_type)
        launcher = self.launcher(worker_type) if worker_type != SCRIPT else None
        if launcher is None or not launcher.renders:
            raise RushConfigError(f"worker_type {worker_type!r} submits no batch script; use slurm or pbs")
        start_id, options = self._prepare_start(worker_loop, options_and_args)
        prefix = launcher.make_worker_ids(1)[0].rsplit("-", 1)[0]
        try:
            return launcher.render(start_id, prefix, n_workers, 0, options, options.get("launcher_options"))
        except BaseException:
            self._drop_unused_start(start_id)
            raise

    def _ended_processes(self) -> dict[str, int]:
        """Worker id -> exit code, for workers whose process one of this manager's launchers saw end."""
        out: dict[str, int] = {}
        with self._launch_lock:
            for launcher in self._launchers.values():
                out.update(launcher.ended())
        return out

    def _stderr_tail(self, worker_id: str, n: int = 20) -> str:
        rec = self.record(worker_id)
        if rec is None:
            return ""
        return self.launcher(rec.launcher).stderr_tail(worker_id, n)

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
        from rushhpc.ui.notebook import progress as progress_bar

        if timeout is None:
            timeout = float(self._plan_get("start_worker_timeout", defaults.START_WORKER_TIMEOUT))
        if isinstance(worker_ids, str):
            worker_ids = [worker_ids]
        wanted = set(worker_ids) if worker_ids is not None else None
        if wanted is not None and n is not None and n > len(wanted):
            raise RushConfigError(
                f"wait_for_workers(n={n}, worker_ids=...): n exceeds the {len(wanted)} worker id(s) given, so the "
                "wait could never end; pass n <= len(worker_ids), or more worker_ids"
            )
        if wanted is None and n is None:
            wanted = self.launched_ids
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
            launched = self.launched_ids
            registered = self.registered_ids(launched)
            failed = set(self.connector.smembers(self.keys.workers_in(WorkerState.FAILED)))
            ok = registered - failed  # a worker whose loop raised is not one to wait for
            bar.set(len(ok if wanted is None else wanted & ok))
            if wanted is not None:
                if len(wanted & ok) >= need:
                    return
            elif n is not None and len(ok) >= n:
                return
            ended = self._ended_processes()
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
                    + (self._stderr_tail(wid) or "(empty)")
                )
            if launched and time.monotonic() - last_detect > 1.0:
                last_detect = time.monotonic()
                self.detect_lost_workers()
                unstarted = self.never_started(wanted if wanted is not None else launched)
                if unstarted and wanted is not None and not too_few(ok, failed | set(unstarted)):
                    unstarted = {}  # enough of the listed workers may still come
                if unstarted:
                    wid, reason = next(iter(unstarted.items()))
                    tail = self._stderr_tail(wid, 20)
                    raise RushWorkerError(
                        f"{len(unstarted)} worker(s) failed to start, e.g. {wid}: {reason}. "
                        f"Its stderr ends with:\n{tail or '(empty)'}"
                    )
            if time.monotonic() > deadline:
                have = len(registered if wanted is None else wanted & registered)
                raise RushTimeoutError(
                    f"only {have} of {need} workers registered within {timeout:g} s. Check the workers' "
                    f"stderr in {self.run_dir / 'workers'} and that they can reach Redis at {self.config.address}."
                )
            time.sleep(0.05)

    def _failure_error(self, failed: set[str], intro: str) -> RushWorkerError:
        """A `RushWorkerError` naming the first of these failed (or lost) workers and the end of
        its traceback, or of its stderr for a lost one."""
        ids = sorted(failed)
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hmget(self.keys.worker(wid), ["state", "reason", "stopped_at"])
            rows = pipe.execute()
        first, (state, reason, _) = min(zip(ids, rows), key=lambda r: float(r[1][2] or "inf"))
        lines = (reason or state or "failed").strip().splitlines() or ["failed"]
        tail = "\n".join(lines[-12:])
        if state == "lost":  # the reason is short (process_died, heartbeat): its stderr says more
            tail = f"its stderr ends with:\n{self._stderr_tail(first, 12) or '(empty)'}"
        states = sorted({r[0] or "failed" for r in rows})
        return RushWorkerError(
            f"{intro}: {len(ids)} worker(s) {' or '.join(states)}, the first {first} ({state}): {lines[-1]}\n{tail}\n"
            f"Fix the worker loop and start workers again (rush.worker_info or `rushhpc workers "
            f"{self.network_id}` shows every worker's reason)."
        )

    def _all_workers_failed(self, n_tasks: int) -> RushWorkerError | None:
        """An error when no worker can run the tasks waited for: none is running, pending or starting,
        none ended in order (terminated, killed), and those that ran failed or were lost (crashed).
        None otherwise, also while a monitor replaces lost workers or an adapter starts new ones."""
        with self.connector.pipeline(transaction=False) as pipe:
            for st in (WorkerState.RUNNING, WorkerState.PENDING, WorkerState.TERMINATED, WorkerState.KILLED):
                pipe.scard(self.keys.workers_in(st))
            pipe.smembers(self.keys.workers_in(WorkerState.FAILED))
            pipe.smembers(self.keys.workers_in(WorkerState.LOST))
            pipe.smembers(self.keys.workers)
            *busy, failed, lost, registered = pipe.execute()
        if any(busy) or not (failed or lost):
            return None
        ended = self._ended_processes()
        if any(w not in registered and w not in ended for w in self.launched_ids):
            return None  # a worker this manager started has not registered yet
        monitor = self._monitor
        if monitor is not None and ((self.adapter is not None and not self.adapter.paused)
                                    or (monitor.keep_workers and monitor.restart_budget > 0)):
            return None  # the adapter, or the monitor's replacements, start workers for the queue
        return self._failure_error(set(failed) | set(lost), f"{n_tasks} task(s) cannot finish, no worker of "
                                                            f"network {self.network_id} is running")

    def wait_for_tasks(
        self, keys: Sequence[str], timeout: float | None = None, detect_lost_workers: bool = True,
        progress: bool | None = None,
    ) -> None:
        """Block until every task in ``keys`` is finished or failed. Runs
        `detect_lost_workers` as it polls (so a dead worker cannot hang the wait), unless a
        monitor (`start_monitor`) does. Raises
        `RushWorkerError` at once when no worker is left to run them because every worker
        failed (the first failure named), `RushTimeoutError` after ``timeout``. ``progress``:
        a progress bar (default: on in a terminal or Jupyter, off otherwise; see `rushhpc.ui.notebook`).

        Example:
            >>> rush.wait_for_tasks(keys, timeout=600)
        """
        from rushhpc.ui.notebook import progress as progress_bar

        keys = [keys] if isinstance(keys, str) else list(keys)
        with progress_bar(len(keys), "tasks", enabled=progress) as bar:
            self._wait_for_tasks(keys, timeout, detect_lost_workers, bar)

    def _wait_for_tasks(self, keys: list[str], timeout: float | None, detect_lost_workers: bool, bar: Any) -> None:
        total = len(keys)
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep = 0.005
        last_detect = 0.0
        no_worker = False  # the last check found none left: read the tasks once more, then raise
        while True:
            with self.connector.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hget(self.keys.task(k), "state")
                states = pipe.execute()
            if None in states and not self.exists():
                raise self._network_lost()
            keys = [k for k, s in zip(keys, states) if s not in ("finished", "failed", None)]
            bar.set(total - len(keys))
            if not keys:
                return
            if no_worker:
                error = self._all_workers_failed(len(keys))
                if error is not None:
                    raise error
                no_worker = False
            now = time.monotonic()
            if now - last_detect > 1.0:
                # with a monitor running, finding lost workers is its job: it replaces only those it found
                if detect_lost_workers and self._monitor is None:
                    self.detect_lost_workers()
                last_detect = now
                if self._all_workers_failed(len(keys)) is not None:
                    # the detection may just have failed the tasks of the worker it found lost
                    no_worker = True
                    continue
            if deadline is not None and now > deadline:
                raise RushTimeoutError(f"{len(keys)} task(s) still not finished after {timeout:g} s")
            time.sleep(sleep)
            sleep = min(0.1, sleep * 2)

    def stop_workers(self, type: str = "kill", worker_ids: Sequence[str] | str | None = None) -> list[str]:
        """Stop running workers. ``"terminate"``: each finishes its task, then ends.
        ``"kill"``: marked killed (their running tasks fail with "worker was killed"),
        then killed through their process handle, heartbeat or scheduler. Returns the ids
        acted on. Works on workers another manager started (the records are in Redis).

        Example:
            >>> rush.stop_workers(type="terminate")
            >>> rush.stop_workers(worker_ids=["w-3f9a1c0d2b7e"])
        """
        if type not in ("kill", "terminate"):
            raise RushError(f"type must be 'kill' or 'terminate', got {type!r}")
        if isinstance(worker_ids, str):
            worker_ids = [worker_ids]
        if worker_ids is not None:
            self._check_known(list(worker_ids))
        running = set(self.running_worker_ids)
        pending = set(self.worker_ids_in(WorkerState.PENDING))
        targets = list(worker_ids) if worker_ids is not None else sorted(running | pending)
        if type == "terminate":
            acted = [w for w in targets if w in running]
            self.request_terminate(acted)
            return acted
        msg = "worker was killed"
        changed = self.mark_workers(WorkerState.KILLED, [(w, "killed", msg) for w in targets if w in running],
                                    retry=False)
        changed += self.mark_workers(WorkerState.KILLED, [(w, "killed", msg) for w in targets if w in pending],
                                     retry=False, source=WorkerState.PENDING)
        self.send_kill(targets)
        by_launcher: dict[str, list[LaunchRecord]] = {}
        for rec in self.records(targets).values():
            by_launcher.setdefault(rec.launcher, []).append(rec)
        for name, recs in by_launcher.items():
            self.launcher(name).kill(recs)
        return changed

    def _check_known(self, worker_ids: list[str]) -> None:
        """Refuse worker ids this network never had (registered, pending or launched), naming its workers."""
        k = self.keys
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.sismember(k.workers, wid)
                pipe.hexists(k.launches, wid)
            seen = pipe.execute()
        unknown = [w for i, w in enumerate(worker_ids) if not (seen[2 * i] or seen[2 * i + 1])]
        if not unknown:
            return
        known = sorted(set(self.connector.smembers(k.workers)) | set(self.connector.hkeys(k.launches)))
        listed = (f"its workers: {', '.join(known[:10])}" + (f" and {len(known) - 10} more" if len(known) > 10 else "")
                  if known else "it has no worker")
        raise RushConfigError(
            f"no worker {', '.join(unknown[:10])} in network {self.network_id} ({listed}); rush.worker_info "
            f"(or `rushhpc workers {self.network_id}`) lists them"
        )

    def detect_lost_workers(self, poll_scheduler: bool | None = None) -> list[str]:
        """Find workers that are gone and mark them lost: a heartbeat expired, a local
        process ended, or (batch workers) the scheduler's view says so (see
        `rushhpc.manager.reconcile`). Their pending tasks go back to the queue; their running
        tasks are requeued while retries are left (``max_retries``), else failed.
        Returns the ids found lost by this call.

        The scheduler is asked at most once per call, for all jobs, and only when its
        poll interval has passed or a batch worker's heartbeat expired
        (``poll_scheduler=True`` forces, ``False`` skips).

        Example:
            >>> lost = rush.detect_lost_workers()
        """
        with self._launch_lock:  # one detection at a time (the monitor thread and the caller)
            lost: list[str] = []
            dead = self._ended_processes()
            if dead:
                with self.connector.pipeline(transaction=False) as pipe:
                    pipe.smembers(self.keys.workers_in(WorkerState.RUNNING))
                    pipe.smembers(self.keys.workers)
                    running, registered = pipe.execute()
                items = []
                for wid, code in dead.items():
                    if wid in running:
                        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
                        tail = self._stderr_tail(wid, 5)
                        log.warning("worker %s process ended (%s) while running; stderr tail:\n%s", wid, how, tail)
                        items.append((wid, "process_died", f"worker {wid} was lost (process ended: {how})"))
                lost += self.mark_workers(WorkerState.LOST, items, retry=True)
                # settled: not looked at again (unregistered ones stay for wait_for_workers' error)
                settled = [w for w in dead if w in registered]
                for launcher in self._launchers.values():
                    launcher.forget(settled)
            out, expired_managed, n_active, ending, exists = self.protocol.detect_lost()
            if not exists:
                if self._reset_here:
                    return lost  # this manager deleted it: nothing is running in it
                raise self._network_lost()
            for wid, failed, requeued in out:
                log.warning("worker %s lost (heartbeat expired): %s task(s) failed, %s requeued", wid, failed, requeued)
                lost.append(wid)
            if poll_scheduler is not False and n_active:
                # urgent: a batch worker went silent, or ended by itself (a SIGTERM from scancel, a
                # time limit) and its job's final state and reason are to be read within a poll
                lost += self._reconciler.run(force=bool(poll_scheduler), urgent=bool(expired_managed or ending))
            return lost

    def _network_lost(self) -> RushNetworkLostError:
        if self._reset_here:
            return RushNetworkLostError(
                f"network {self.network_id!r} was deleted by this manager's reset(): the tasks pushed before it "
                "are gone. Push tasks or start workers again to use the network (that creates it again)."
            )
        return RushNetworkLostError(
            f"network {self.network_id!r} is gone from Redis at {self.config.address}: Redis restarted without "
            "persistence or lost its data (configure appendonly yes), or the network was reset by another "
            "manager. Results fetched before are in your tables; the rest is lost."
        )

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
            self.delete(workers=False)
            return
        self.stop_workers(type="kill")
        records = self.records()
        launched = set(records)
        # and the workers still starting (launched, never registered): theirs is a deleted network
        ids = sorted(launched)
        starting = [w for w, state in zip(ids, self.worker_field(ids, "state")) if state is None]
        by_launcher: dict[str, list[LaunchRecord]] = {}
        for wid in starting:
            by_launcher.setdefault(records[wid].launcher, []).append(records[wid])
        for name, recs in by_launcher.items():
            try:
                self.launcher(name).kill(recs)
            except (RushError, OSError) as e:  # e.g. no plan for that launcher here: they find their network gone
                log.warning("reset: could not kill %d starting %s worker(s): %s", len(recs), name, e)
        start_ids = [k.rsplit(":", 1)[1] for k in self.connector.scan_iter(match=self.keys.start("*"))]
        self.delete(workers=True)
        self._reset_here = True
        startargs.remove_files(self.keys, start_ids, self._plan.large_objects_path)
        with self._launch_lock:
            # every worker of the deleted network is settled, also one whose process is still
            # ending (a terminated worker exits after it reported): a later wait must not name it
            for launcher in self._launchers.values():
                launcher.forget(sorted(launched | set(launcher.ended())))
        self.remove_run_dir(self.keep_logs if keep_logs is None else keep_logs)

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
        for rec in self.records().values():
            by_launcher.setdefault(rec.launcher, []).append(rec)
        usage: dict[str, Any] = {}
        for name, recs in by_launcher.items():
            try:
                usage.update(self.launcher(name).usage(recs))
            except RushError as e:
                log.warning("accounting: %s launcher: %s; using Redis timestamps", name, e)
        rows, totals = usage_table(self, usage)
        return pd.DataFrame(rows, columns=COLUMNS), totals

    # ------------------------------------------------------------------ adaptive workers
    def adapt(self, worker_loop: Callable | None, minimum: int = 0, maximum: int | None = None,
              idle_timeout: float = 60.0, backlog: int | None = None, max_failures: int = 3,
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
            records = [r for r in self.records().values() if r.start_id]
            if not records:
                raise RushConfigError(f"adapt: network {self.network_id} has no launched worker to start more like; "
                                      "start workers first, or pass a worker loop")
            last = max(records, key=lambda r: r.submitted_at)
            worker_type, start_id, options = last.launcher, last.start_id, dict(last.extra.get("options") or {})
        else:
            worker_type = check_worker_type(self._plan.worker_type)
            if worker_type == SCRIPT:
                raise RushConfigError("adapt needs a launcher: worker_type 'script' starts no workers")
            start_id, options = self._prepare_start(worker_loop, options_and_args)
        launcher = self.launcher(worker_type)
        adapter = Adapter(self, policy, lambda n: self._launch(launcher.name, start_id, n, options),
                          lambda ids, reason: self.request_terminate(ids, reason), self._ended_processes)
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
        with self._launch_lock:
            launchers = list(self._launchers.values())
        for launcher in launchers:
            try:
                mine = [w for w in launcher.owned_workers() if w in set(self.running_worker_ids)]
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


_MANAGERS: "weakref.WeakSet[Rush]" = weakref.WeakSet()


def _close_managers() -> None:
    for m in list(_MANAGERS):
        try:
            m.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def rsh(network_id: str | None = None, config: RedisConfig | str | dict | None = None, *,
        network: str | None = None, keep_logs: bool = False) -> Rush:
    """Connect to a network (a new random id when none is given). ``network=`` is the
    spelling of R's rush (``rsh(network = "...")``). ``keep_logs=True`` keeps the workers'
    output files when `Rush.reset` or the end of the embedded Redis removes the run directory.

    Example:
        >>> rush = rsh("sweep-1", config="redis://127.0.0.1:6379")
    """
    if network is not None:
        if network_id is not None and network_id != network:
            raise RushConfigError(f"rsh(): network_id {network_id!r} and network {network!r} disagree; pass one")
        network_id = network
    return Rush(network_id=network_id, config=config, keep_logs=keep_logs)

"""How a manager starts workers: its launchers, the signed start blob, launches and replacements.

`Launchers` holds the launchers one manager built from its plan (shared with its monitor
thread, hence the lock); `Starter` checks and stores a worker loop and its arguments
(`rushhpc.network.startargs`), launches workers through a launcher and records them in the
network, and starts replacements of lost workers (asking more memory after an out-of-memory
end, `rushhpc.core.memory`). `rushhpc.manager.rush.Rush` holds one of each and forwards the
public methods (`start_workers`, `replace_workers`, ...).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Any, Callable, Sequence

import redis

from rushhpc import defaults
from rushhpc.core import codec
from rushhpc.core.liveness import heartbeat_settings
from rushhpc.core.records import LaunchRecord
from rushhpc.core.states import LostReason, TaskState
from rushhpc.errors import RushConfigError
from rushhpc.launchers.base import Launcher
from rushhpc.launchers.registry import SCRIPT, check_worker_type, launcher_class
from rushhpc.manager.plan import Plan
from rushhpc.network import startargs
from rushhpc.network.view import Network
from rushhpc.worker.main import run_worker

log = logging.getLogger("rushhpc")
# The condition field and xs_extra column a memory-retry decision is written in, named after the reason.
_OOM_COLUMN = LostReason.OUT_OF_MEMORY.value


class Launchers:
    """The launchers of one manager, one per worker type, built from its plan on first use.

    Example:
        >>> Launchers(network, plan).get("local").name
        'local'
    """

    def __init__(self, network: Network, plan: Plan):
        self.network = network
        self.plan = plan
        self.built: dict[str, Launcher] = {}
        self.lock = threading.RLock()  # launchers are shared with the monitor thread

    def get(self, worker_type: str) -> Launcher:
        """The launcher for ``worker_type``, built from the plan on first use."""
        with self.lock:
            if worker_type not in self.built:
                options = dict(self.plan.launcher_options)
                launcher = launcher_class(worker_type)(self.network, options)
                launcher.worker_entry = run_worker  # what a launcher running Python in its jobs (submitit) submits
                # workers of this launcher that an earlier manager started: rebuild what can be
                stored = [r for r in self.network.records().values() if r.launcher == worker_type]
                if stored:
                    launcher.adopt(stored)
                self.built[worker_type] = launcher
            return self.built[worker_type]

    def all(self) -> list[Launcher]:
        """The launchers built so far."""
        with self.lock:
            return list(self.built.values())

    def ended(self) -> dict[str, int]:
        """Worker id -> exit code, for workers whose process one of these launchers saw end."""
        out: dict[str, int] = {}
        with self.lock:
            for launcher in self.built.values():
                out.update(launcher.ended())
        return out

    def stderr_tail(self, worker_id: str, n: int = 20) -> str:
        """The last ``n`` lines of a worker's stderr, as its launcher keeps it ("" when unknown)."""
        rec = self.network.record(worker_id)
        if rec is None:
            return ""
        return self.get(rec.launcher).stderr_tail(worker_id, n)


class Starter:
    """Starts workers of one network: `start_workers` and its kin, `replace_workers`.

    ``create_network`` (re)creates the network before a start is stored; ``on_launch`` runs
    before each launch (the manager registers for the exit hook again).

    Example:
        >>> Starter(network, plan, Launchers(network, plan), network.create, lambda: None).start_local_workers(
        ...     queue_loop, n_workers=2, fun=abs)
    """

    def __init__(self, network: Network, plan: Plan, launchers: Launchers, create_network: Callable[[], None],
                 on_launch: Callable[[], None]):
        self.network = network
        self.plan = plan
        self.launchers = launchers
        self.create_network = create_network
        self.on_launch = on_launch

    def prepare(self, worker_loop: Callable, options_and_args: dict[str, Any]) -> tuple[str, dict]:
        """Check, sign and store a worker loop with its arguments; returns (start id, rushhpc's options).

        Example:
            >>> start_id, options = starter.prepare(queue_loop, {"fun": abs, "heartbeat_period": 5})
        """
        options, args = startargs.split_options(options_and_args)
        period = options.get("heartbeat_period", self.plan.heartbeat_period)
        expire = options.get("heartbeat_expire", self.plan.heartbeat_expire)
        options["heartbeat_period"], options["heartbeat_expire"] = heartbeat_settings(period, expire)
        options.setdefault("log_thresholds", self.plan.log_thresholds)
        startargs.check_arguments(worker_loop, args)  # a misspelt argument fails here, not in every worker
        blob = startargs.dump(worker_loop, args, options)
        key = self.network.signing_key()  # a readable or broken key file fails before anything is written
        self.create_network()  # the network may have been reset since this manager was made
        start_id = startargs.store(
            self.network.connector,
            self.network.keys,
            blob,
            int(defaults.MAX_OBJECT_SIZE if self.plan.max_object_size is None else self.plan.max_object_size),
            self.plan.large_objects_path,
            key=key,
        )
        return start_id, options

    def start(self, worker_type: str, worker_loop: Callable, n_workers: int | None, options_and_args: dict) -> list[str]:
        """Start ``n_workers`` (default: the plan's) through ``worker_type``'s launcher; returns their ids.

        Example:
            >>> starter.start("local", queue_loop, 2, {"fun": abs})
        """
        n = n_workers if n_workers is not None else self.plan.n_workers
        if n is None:
            raise RushConfigError(
                "how many workers? Pass n_workers=... or set rush_plan(n_workers=...)"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RushConfigError(f"n_workers must be a positive integer, got {n!r}")
        launcher = self.launchers.get(worker_type)  # an unknown or unusable launcher fails before anything is stored
        start_id, options = self.prepare(worker_loop, options_and_args)
        try:
            return self.launch(launcher.name, start_id, n, options)
        except BaseException:
            self.drop_unused(start_id)  # a launch refused before any worker: leave no start key
            raise

    def drop_unused(self, start_id: str) -> None:
        """Delete a start blob no launched worker uses (a launch refused before any worker started)."""
        try:
            if any(r.start_id == start_id for r in self.network.records().values()):
                return  # some workers were started (e.g. an earlier chunk): they need it
            self.network.connector.delete(self.network.keys.start(start_id))
            startargs.remove_files(self.network.keys, [start_id], self.plan.large_objects_path)
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
        if self.network.config.username not in (None, "", "default"):
            # a network's ACL user (`rushhpc redis user`) may run neither INFO nor CONFIG: the
            # server's limits are its admin's business, and a refused call would fill the ACL log
            return None
        try:  # INFO clients says maxclients too, and needs no CONFIG permission
            clients = self.network.connector.info("clients")
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

    def launch(self, worker_type: str, start_id: str, n: int, options: dict[str, Any]) -> list[str]:
        """Launch ``n`` workers of a stored start through ``worker_type``'s launcher and record them.

        Example:
            >>> starter.launch("local", start_id, 2, options)
        """
        self.check_client_capacity(n)
        with self.launchers.lock:
            self.on_launch()  # again, after a close(): the exit hook closes it
            launcher = self.launchers.get(worker_type)
            records = launcher.launch(start_id, launcher.make_worker_ids(n), options)
            for r in records:
                r.extra["options"] = options  # so a monitor can start a replacement the same way
            self.network.store_records(records)
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
        reasons = self.network.worker_field(ids, "reason") if ids else []
        groups: dict[tuple[str, str, str], tuple[int, dict, dict]] = {}
        new: list[str] = []
        for wid, reason in zip(ids, reasons):
            rec = self.network.record(wid)
            if rec is None or not rec.start_id:
                continue
            if reason == LostReason.OUT_OF_MEMORY:
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
            started = self.launch(name, start_id, n, options)
            if lineage:
                self._note_lineage(started, lineage)
            log.warning("started %d replacement worker(s) through %s: %s", n, name, ", ".join(started))
            new += started
        return new

    def _note_lineage(self, worker_ids: Sequence[str], fields: dict[str, Any]) -> None:
        for wid in worker_ids:
            rec = self.network.record(wid)
            if rec is not None:
                rec.extra.update(fields)
                self.network.save_record(rec)

    def _replace_out_of_memory(self, worker_id: str, rec: LaunchRecord) -> str | None:
        """Replace a worker whose job ran out of memory with one asking more, when its launcher options
        set ``mem_retry``; the new worker's id, or None (no rule: an ordinary replacement)."""
        from rushhpc.core.memory import parse_memory
        from rushhpc.launchers.batch import BatchLauncher

        launcher = self.launchers.get(rec.launcher)
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
        [new] = self.launch(rec.launcher, rec.start_id, 1, options)
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
        with self.network.connector.pipeline(transaction=False) as pipe:
            pipe.hset(self.network.keys.worker(new), mapping={"mem": text, "mem_retry_of": worker_id,
                                                      "mem_attempt": attempt, "mem_decision": decision})
            for key in keys:
                pipe.hmget(self.network.keys.task(key), ["state", "condition", "xs_extra"])
            rows = pipe.execute()[1:]
        with self.network.connector.pipeline(transaction=False) as pipe:
            for key, (state, condition, extra) in zip(keys, rows):
                if state is None:
                    continue  # deleted meanwhile
                if state == TaskState.FAILED:  # no retry was left: it keeps why it failed, and says what was decided
                    parsed = codec.decode(condition)
                    old = str(parsed.get("message", "") if isinstance(parsed, dict) else parsed or "")
                    message = f"{old}; no retry left, not retried: {decision}" if old else decision
                    pipe.hset(self.network.keys.task(key), "condition",
                              codec.encode({"message": message, _OOM_COLUMN: detail}, "condition"))
                    continue
                # requeued: a condition would mark it failed (only a failed task carries one, as in rush), so
                # the decision goes into its xs_extra, an ``out_of_memory`` column of the task tables
                data = codec.decode(extra) or {}
                if isinstance(data, dict):
                    data[_OOM_COLUMN] = decision
                    pipe.hset(self.network.keys.task(key), "xs_extra", codec.encode_dict(data, "xs_extra"))
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
        worker_type = check_worker_type(self.plan.worker_type)
        if worker_type == SCRIPT:
            raise RushConfigError("worker_type 'script': call rush.worker_script(...) and run its output yourself")
        return self.start(worker_type, worker_loop, n_workers, options_and_args)

    def start_local_workers(
        self, worker_loop: Callable, n_workers: int | None = None, **options_and_args: Any
    ) -> list[str]:
        """Start ``n_workers`` worker processes on this machine; returns their ids.

        Example:
            >>> ids = rush.start_local_workers(queue_loop, n_workers=2, fun=objective, heartbeat_period=5)
        """
        return self.start("local", worker_loop, n_workers, options_and_args)

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
        start_id, options = self.prepare(worker_loop, options_and_args)
        creds = str(self.network.credentials_file()) if credentials == "file" else None
        spec = WorkerSpec.from_options(self.network.network_id, start_id, options, credentials=creds,
                                       signing_key=str(self.network.signing_key_file()), launcher=SCRIPT)
        return spec.command(python)

    def render_script(self, worker_loop: Callable, n_workers: int = 1, worker_type: str | None = None,
                      **options_and_args: Any) -> str:
        """The exact batch script `start_workers` would submit for ``n_workers`` (SLURM, PBS).

        Example:
            >>> print(rush.render_script(queue_loop, n_workers=10, worker_type="slurm", fun=objective))
        """
        worker_type = check_worker_type(worker_type or self.plan.worker_type)
        launcher = self.launchers.get(worker_type) if worker_type != SCRIPT else None
        if launcher is None or not launcher.renders:
            raise RushConfigError(f"worker_type {worker_type!r} submits no batch script; use slurm or pbs")
        start_id, options = self.prepare(worker_loop, options_and_args)
        prefix = launcher.make_worker_ids(1)[0].rsplit("-", 1)[0]
        try:
            return launcher.render(start_id, prefix, n_workers, 0, options, options.get("launcher_options"))
        except BaseException:
            self.drop_unused(start_id)
            raise


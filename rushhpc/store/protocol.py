"""The Lua protocol: every state change of a network is one script, one round trip.

The scripts live in ``rushhpc/store/lua/*.lua`` (package data) with their shared helpers
(``base.lua``: the prefix check, the server clock, one command for a list of members;
``claim.lua``: claiming a task; ``helpers.lua``: release of a stopping worker's tasks,
worker stop; ``fetch_helpers.lua``: task records as JSON). Each script gets only the helpers
it uses: Redis makes every helper function again, as a closure, on each call of a script
(issue 12 counts the server's CPU per task). `Protocol` binds them to one Redis client
and one network and gives each a typed method, so no caller builds KEYS or ARGV by hand.

Every fixed key of the network a script touches (queue, running set, finished and failed
lists, worker sets by state, meta, ...) is passed in KEYS, so a Redis Cluster client routes
the call to the network's slot and the script declares what it changes. The per-item keys
whose names are data, known only inside the script (the hash of a task key popped from the
queue, the hash of a worker id read from a set) or many per call (the task hashes of a batch),
are built in the script from the ``{network}:`` hash tag of KEYS[1] (`base.lua`), so they
are in KEYS[1]'s slot by construction; tests/backends/test_redis_cluster.py checks both rules on
every script and runs the whole protocol on a real cluster.

`SCHEMA_VERSION` is written into the network's meta hash when the network is created; a
manager or worker speaking another version refuses the network with a message.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache
from importlib import resources
from typing import Any, Callable, NamedTuple, Sequence

import redis

from rushhpc import defaults
from rushhpc.core.states import CancelCause, Release, TaskState, WorkerState
from rushhpc.store.connection import RedisClient, is_cluster, node_client
from rushhpc.store.keys import Keys
from rushhpc.store.wire import pack_head

# 3: a running task without started_at is prefetched (claimed ahead, not started): a worker
# that stops gives it back uncounted; a version-2 script would count or fail it.
SCHEMA_VERSION = "3"

# The cancel cause a stop writes on the tasks it fails (their CANCEL_FIELD), by the workers' new state:
# a killed worker's running tasks were stopped by a manager, not evaluated (the point is to be done again);
# a lost or failed worker's were.
_CANCEL_ON_STOP: dict[str, CancelCause] = {WorkerState.KILLED: CancelCause.WORKER_KILLED}

# script name -> the helper files prepended to it
_INCLUDES: dict[str, tuple[str, ...]] = {
    "push_tasks": ("base",),
    "push_running_tasks": ("base",),
    "pop_task": ("base", "claim"),
    "claim_task": ("base", "claim"),
    "finish_tasks": ("base",),
    "push_final_tasks": ("base",),
    "empty_queue": ("base",),
    "register_worker": ("base",),
    "stop_workers": ("base", "helpers"),
    "detect_lost": ("base", "helpers"),
    "settle_released": ("base",),
    "give_back": ("base",),
    "heartbeat": (),
    "fetch": ("base", "fetch_helpers"),
    "keys_with_state": ("base", "fetch_helpers"),
    "counts": ("base",),
    "asha_claim": ("base",),
    "asha_finish": ("base",),
}


def source(name: str) -> str:
    """The full Lua source of one script, helpers included.

    With ``RUSHHPC_STRICT_SCRIPTS=1`` it starts with a ``#!lua`` shebang: Redis 7 then
    refuses (``Script attempted to access keys that do not hash to the same slot``) any key
    a script touches outside the slot of the KEYS it declared, on a single server as on a
    cluster. A check for tests and operators; Redis 6.2 does not know shebangs.

    Example:
        >>> "redis.call('TIME')" in source("push_tasks")
        True
    """
    return _source(name, os.environ.get(STRICT_ENV) == "1")


STRICT_ENV = "RUSHHPC_STRICT_SCRIPTS"


@cache
def _source(name: str, strict: bool) -> str:
    files = resources.files("rushhpc.store.lua")
    parts = ["#!lua"] if strict else []
    parts += [files.joinpath(f"{inc}.lua").read_text() for inc in _INCLUDES[name]]
    parts.append(files.joinpath(f"{name}.lua").read_text())
    return "\n".join(parts)


class Call(NamedTuple):
    """One script call, ready to send: the worker's deferred path sends it without waiting.

    ``head``/``n_head``: the command, sha and KEYS packed once (`rushhpc.store.wire.pack_head`),
    for the worker's lean path; empty for a call made without them.
    """

    script: Any  # redis.commands.core.Script
    keys: list[str]
    args: list[Any]
    head: bytes = b""
    n_head: int = 0


Triple = tuple[str, str, str]  # task key, xs JSON, xs_extra JSON ('' for none)


class _Fallback(Exception):
    """The pipelined read stopped: read the rest one call at a time."""


class Protocol:
    """The scripts of `rushhpc/store/lua` bound to one client and one network.

    Example:
        >>> p = Protocol(redis.Redis(decode_responses=True), Keys("sweep-1"))
        >>> p.counts()
        [0, 0, 0, 0, 0]
    """

    def __init__(self, client: RedisClient, keys: Keys):
        self.client = client
        self.keys = keys
        self._s = {name: client.register_script(source(name)) for name in _INCLUDES}
        # the worker's connection (`rushhpc.store.wire.WorkerRedis`) has a lean EVALSHA path
        self._lean = getattr(client, "call_script", None)
        self._bound: dict[tuple[str, ...], tuple[Any, list[str], bytes, int]] = {}
        self._fetch_loaded = False

    def script(self, name: str) -> Any:
        return self._s[name]

    def _bind(self, name: str, worker_id: str, variant: str = "") -> tuple[Any, list[str], bytes, int]:
        """(script, KEYS, packed head, its item count) of a per-worker script, made once."""
        b = self._bound.get((name, worker_id, variant))
        if b is None:
            k = self.keys
            if name == "push_running_tasks":
                keys = [k.running, k.all_tasks, k.worker_tasks(worker_id), k.worker(worker_id)]
            elif name == "finish_tasks":
                keys = [k.running, k.task_list(variant), k.worker_tasks(worker_id), k.worker(worker_id)]
            elif name == "pop_task":
                keys = [k.queued, k.running, k.worker_tasks(worker_id), k.worker(worker_id), k.pending(worker_id)]
            elif name == "claim_task":
                keys = [k.pending(worker_id), k.running, k.worker_tasks(worker_id), k.worker(worker_id), k.queued]
            else:
                raise KeyError(name)
            script = self._s[name]
            b = (script, keys, *pack_head(script.sha, keys))
            self._bound[(name, worker_id, variant)] = b
        return b

    def _call(self, b: tuple[Any, list[str], bytes, int], args: list[Any]) -> Any:
        script, keys, head, n = b
        if self._lean is not None:
            return self._lean(script, keys, args, head, n)
        return script(keys=keys, args=args)

    def preload(self, *names: str) -> None:
        """SCRIPT LOAD these now (a deferred EVALSHA would learn of NOSCRIPT one call late)."""
        for name in names:
            self.client.script_load(self._s[name].script)

    def run(self, call: Call) -> Any:
        """Run a prepared call and return its reply (the lean path on a worker's connection)."""
        if self._lean is not None:
            return self._lean(call.script, call.keys, call.args, call.head, call.n_head)
        return call.script(keys=call.keys, args=call.args)

    # ------------------------------------------------------------------ tasks in
    def push_tasks(self, max_retries: int, tasks: Sequence[Triple]) -> int:
        k = self.keys
        args: list[Any] = [k.prefix, str(int(max_retries))]
        for t in tasks:
            args.extend(t)
        return int(self._s["push_tasks"](keys=[k.queued, k.all_tasks], args=args))

    def push_running_tasks_call(self, worker_id: str, tasks: Sequence[Triple], max_tasks: int | None = None) -> Call:
        """Create running tasks of a worker; with ``max_tasks`` only if the network then holds
        at most that many tasks (all or none; the reply's third item says which)."""
        args: list[Any] = [self.keys.prefix, worker_id, "" if max_tasks is None else str(int(max_tasks))]
        for t in tasks:
            args.extend(t)
        script, keys, head, n = self._bind("push_running_tasks", worker_id)
        return Call(script, keys, args, head, n)

    def push_final_tasks(self, state: str, rows: Sequence[Sequence[str]]) -> None:
        """rows: (key, xs, xs_extra, field1, value1, field2, value2); state finished or failed."""
        k = self.keys
        args: list[Any] = [k.prefix, state]
        for row in rows:
            args.extend(row)
        dest = k.finished if state == TaskState.FINISHED else k.failed
        self._s["push_final_tasks"](keys=[dest, k.all_tasks], args=args)

    def empty_queue(self, message: str, cause: CancelCause = CancelCause.REMOVED) -> int:
        """Fail every queued task with ``message``, ``cause`` in its CANCEL_FIELD (same step); how many."""
        k = self.keys
        return int(self._s["empty_queue"](keys=[k.queued, k.failed], args=[k.prefix, message, cause.value]))

    # ------------------------------------------------------------------ a worker's tasks
    def pop_task(self, worker_id: str, token: str = "", count: int = 1, started: int | None = None) -> list[str]:
        """Claim up to ``count`` queued tasks, the first ``started`` (default: all) started, the rest
        prefetched. Reply: {worker state, terminate flag, (key, xs, xs_extra, attempt)*}. ``token``
        makes a re-sent call (after a lost reply) return the tasks the first one claimed."""
        args = [self.keys.prefix, worker_id, token, str(int(count))]
        if started is not None:
            args.append(str(int(started)))
        return self._call(self._bind("pop_task", worker_id), args)

    def claim_task(self, worker_id: str, key: str, token: str = "") -> list[str] | None:
        return self._call(self._bind("claim_task", worker_id), [self.keys.prefix, worker_id, key, token]) or None

    def finish_tasks_call(self, worker_id: str, state: str, rows: Sequence[Sequence[str]], start: str = "") -> Call:
        """rows: (key, attempt or '*', field1, value1, field2, value2); ``start``: prefetched tasks
        of this worker to mark started in the same call (space-separated keys, '' for none).
        The reply: {discarded keys}."""
        args: list[Any] = [self.keys.prefix, worker_id, state, start]
        for row in rows:
            args.extend(row)
        script, keys, head, n = self._bind("finish_tasks", worker_id, state)
        return Call(script, keys, args, head, n)

    # ------------------------------------------------------------------ ASHA (sweeps/strategies/asha.py)
    def asha_claim(self, worker_id: str, max_tasks: int | None, eta: int, fidelities: Sequence[int | float],
                   new: tuple[str, str, str], promotion_key: str, retries: int = 0, max_fidelity: float | None = None,
                   incremental: bool = False, rung_offset: int = 0, bracket: int | None = None) -> list[str]:
        """Promote a configuration or start ``new`` (task key, config id, xs JSON), as one claim
        (asha_claim.lua). ``fidelities``: those of the bracket's rungs, from its lowest (global rung
        ``rung_offset``); ASHA has one bracket (None). Reply: {worker state, terminate flag, '1' | '0', task key,
        xs, xs_extra}."""
        k = self.keys
        keys = [k.running, k.all_tasks, k.worker_tasks(worker_id), k.worker(worker_id), k.asha_promoted, k.asha_configs,
                k.asha_promotions, k.asha_lost, k.asha_spent, k.asha_refused,
                *(k.asha_rung(rung_offset + r, bracket) for r in range(len(fidelities)))]
        args: list[Any] = [k.prefix, worker_id, "" if max_tasks is None else str(int(max_tasks)), str(int(eta)),
                           *new, promotion_key, str(int(retries)), "" if max_fidelity is None else repr(float(max_fidelity)),
                           "1" if incremental else "0", str(int(rung_offset)), "" if bracket is None else str(int(bracket)),
                           *(str(f) for f in fidelities)]
        return self._s["asha_claim"](keys=keys, args=args)

    def asha_finish(self, worker_id: str, key: str, ys: str, config: str, rung: int, score: float | None,
                    bracket: int | None = None, state: str = TaskState.FINISHED) -> bool:
        """End one ASHA evaluation (``state`` finished with ``ys``, or failed with ``ys`` the condition JSON) and rank a
        finished one in its rung, one step (asha_finish.lua); False: discarded."""
        k = self.keys
        keys = [k.running, k.task_list(state), k.worker_tasks(worker_id), k.worker(worker_id), k.asha_rung(rung, bracket)]
        args = [k.prefix, worker_id, key, ys, config, "" if score is None else repr(float(score)), str(state)]
        return bool(int(self._s["asha_finish"](keys=keys, args=args)))

    def asha_seed(self, ranked: Sequence[tuple[int | None, int, str, float]], configs: dict[str, str],
                  promoted: Sequence[str], spent: float) -> None:
        """A resumed ASHA sweep's state in a fresh network, before its workers start: the finished results in their
        rungs ((bracket, rung, config, score)), the configurations' xs, the promotions made ("<config>:<rung>")
        and the fidelity spent. One pipeline (nothing else writes them yet)."""
        k = self.keys
        with self.client.pipeline(transaction=False) as pipe:
            for bracket, rung, config, score in ranked:
                pipe.zadd(k.asha_rung(rung, bracket), {config: float(score)})
            if configs:
                pipe.hset(k.asha_configs, mapping=dict(configs))
            if promoted:
                pipe.sadd(k.asha_promoted, *promoted)
            pipe.set(k.asha_spent, repr(float(spent)))
            pipe.execute()

    def asha_model_data(self, rungs: Sequence[int], bracket: int | None, min_results: int) -> list[tuple[str, float]]:
        """(xs JSON, score) of every finished result of the highest of ``rungs`` (of ``bracket``) with at least
        ``min_results`` of them; [] when none has that many (asha's ``sampler: tpe``). Two round trips, reads only."""
        k = self.keys
        with self.client.pipeline(transaction=False) as pipe:
            for r in rungs:
                pipe.zcard(k.asha_rung(r, bracket))
            sizes = pipe.execute()
        best = next((r for r, n in sorted(zip(rungs, sizes), reverse=True) if int(n) >= min_results), None)
        if best is None:
            return []
        ranked = self.client.zrange(k.asha_rung(best, bracket), 0, -1, withscores=True)
        if not ranked:
            return []
        xss = self.client.hmget(k.asha_configs, [c for c, _ in ranked])
        return [(x.decode() if isinstance(x, bytes) else x, float(s)) for (_, s), x in zip(ranked, xss) if x]

    def asha_budget(self) -> tuple[float, bool]:
        """The fidelity claimed so far, and whether a claim was refused for ``budget.fidelity``."""
        k = self.keys
        spent, refused = self.client.mget([k.asha_spent, k.asha_refused])
        return float(spent or 0.0), bool(refused)

    # ------------------------------------------------------------------ workers
    def register_worker(self, worker_id: str, heartbeat_expire: int, fields: dict[str, str]) -> str:
        """Register a worker as running. ``fields`` with ``job_id`` and ``restart`` (the job's
        restart count) let a requeued batch job bring back its lost worker under the same id."""
        k = self.keys
        args: list[Any] = [k.prefix, worker_id, str(heartbeat_expire), SCHEMA_VERSION,
                           fields.get("job_id", ""), fields.get("restart", "0")]
        for kv in fields.items():
            if kv[0] != "restart":
                args.extend(kv)
        return self._s["register_worker"](
            keys=[k.workers, k.workers_in(WorkerState.RUNNING), k.worker(worker_id), k.heartbeat(worker_id),
                  k.workers_in(WorkerState.PENDING), k.meta, k.workers_in(WorkerState.LOST)],
            args=args,
        )

    def stop_workers(self, state: str, items: Sequence[tuple[str, str, str]], retry: bool | Release,
                     source: str = WorkerState.RUNNING, cause: CancelCause | None = None) -> list[list[Any]]:
        """Move workers from ``source`` (running or pending) to ``state``; items: (wid, reason, task message).
        ``retry``: what happens to their running tasks (`Release`; True = RETRY, False = FAIL). The tasks
        this fails carry ``cause``, else the state's cancel cause, if it has one (`_CANCEL_ON_STOP`: killed workers)."""
        if not items:
            return []
        k = self.keys
        cause = cause or _CANCEL_ON_STOP.get(state)
        args: list[Any] = [k.prefix, state, Release.of(retry).lua, cause.value if cause is not None else ""]
        for item in items:
            args.extend(item)
        return self._s["stop_workers"](
            keys=[k.workers_in(source), k.workers_in(state), k.workers, k.queued, k.running, k.failed], args=args
        )

    def give_back(self, worker_id: str, key: str, attempt: str) -> bool:
        """Return a claimed, untouched task to the head of the queue, its attempt uncounted."""
        k = self.keys
        return bool(self._s["give_back"](keys=[k.running, k.worker_tasks(worker_id), k.queued],
                                         args=[k.prefix, worker_id, key, attempt]))

    def settle_released(self, worker_id: str, count: bool, message: str) -> int:
        """The scheduler's verdict on tasks a SIGTERMed batch worker released uncounted
        (`Release.HOLD`): ``count`` their attempts (failing queued ones with no retry left) or not."""
        k = self.keys
        return int(self._s["settle_released"](keys=[k.released(worker_id), k.queued, k.failed],
                                              args=[k.prefix, "1" if count else "0", message]))

    def detect_lost(self, retry: bool = True) -> tuple[list[list[Any]], list[str], int, int, bool]:
        """(lost workers with task counts, expired batch workers, active batch launches, of which ended,
        whether the network still exists)."""
        k = self.keys
        out, managed, n_active, ending, exists = self._s["detect_lost"](
            keys=[k.workers_in(WorkerState.RUNNING), k.active_launches, k.workers_in(WorkerState.LOST), k.workers, k.queued,
                  k.running, k.failed, k.meta, k.workers_in(WorkerState.TERMINATED), k.workers_in(WorkerState.FAILED),
                  k.workers_in(WorkerState.KILLED)],
            args=[k.prefix, "1" if retry else "0"],
        )
        return out, managed, int(n_active), int(ending), bool(exists)

    def heartbeat(self, worker_id: str, expire: int) -> str:
        k = self.keys
        return self._s["heartbeat"](keys=[k.worker(worker_id), k.heartbeat(worker_id)], args=[k.prefix, expire])

    def worker_info(self, fields: Sequence[str], chunk: int = defaults.WORKER_INFO_CHUNK) -> list[dict[str, Any]]:
        """``fields`` of every worker's hash (registered or pending) and ``heartbeat_alive`` ("1"/"0"):
        one dict per worker whose hash exists.

        Not a script: pipelined HMGET + EXISTS, ``chunk`` workers per round trip. A script held
        Redis for ~20 ms at 1,000 workers (every hash through Lua and back, bench/many_workers.py);
        a pipeline costs Redis about a quarter of that and lets other clients' calls in between
        chunks. The price: not a snapshot, so a worker that changes state meanwhile shows either
        state, which a table of workers can live with.
        """
        k = self.keys
        ids = sorted(self.client.sunion(k.workers, k.workers_in(WorkerState.PENDING)))
        fields = list(fields)
        out: list[dict[str, Any]] = []
        for lo in range(0, len(ids), chunk):
            part = ids[lo : lo + chunk]
            with self.client.pipeline(transaction=False) as pipe:
                for wid in part:
                    pipe.hmget(k.worker(wid), fields)
                    pipe.exists(k.heartbeat(wid))
                replies = pipe.execute()
            for i in range(len(part)):
                values, alive = replies[2 * i], replies[2 * i + 1]
                if not any(v is not None for v in values):
                    continue  # its hash is gone (reset meanwhile)
                row = dict(zip(fields, values))
                row["heartbeat_alive"] = "1" if alive else "0"
                out.append(row)
        return out

    # ------------------------------------------------------------------ reads
    def _fetch_keys(self) -> list[str]:
        k = self.keys
        return [k.queued, k.running, k.finished, k.failed, k.workers]

    def fetch(self, mode: str, *args: Any) -> str:
        """One JSON array of task records (modes: range, keys, states; see fetch.lua)."""
        return self._s["fetch"](keys=self._fetch_keys(), args=[self.keys.prefix, mode, *args])

    def fetch_counted(self, state: str, start: int, stop: int) -> tuple[int, str]:
        """(length of the finished or failed list, records of its range start..stop) in one call."""
        n, text = self._s["fetch"](keys=self._fetch_keys(), args=[self.keys.prefix, "range_n", state, start, stop])
        return int(n), text

    def fetch_ranges(self, state: str, ranges: Sequence[tuple[int, int]], consume: Callable[[str], None]) -> None:
        """The records of several index ranges of the finished (or failed) list, each handed to
        ``consume`` in order; the request for the next range is on the wire before a reply is
        handed out, so Redis builds one chunk while the client decodes the one before.

        On any error the connection is dropped (with the replies still in flight) and the
        remaining ranges are read one call at a time.
        """
        todo = list(ranges)
        done = [0]
        if len(todo) > 1:
            try:
                self._pipelined(state, todo, consume, done)
            except _Fallback:
                pass
        for lo, hi in todo[done[0]:]:
            consume(self.fetch("range", state, lo, hi))

    def _pipelined(self, state: str, todo: list[tuple[int, int]], consume: Callable[[str], None],
                   done: list[int]) -> None:
        """Read ``todo`` one request ahead on one connection; ``done[0]``: ranges handed out."""
        client = self.client
        script = self._s["fetch"]
        if not self._fetch_loaded:
            client.script_load(script.script)  # EVALSHA below must not meet NOSCRIPT
            self._fetch_loaded = True
        head = ["EVALSHA", script.sha, 5, *self._fetch_keys(), self.keys.prefix, "range", state]
        single = getattr(client, "connection", None)
        if is_cluster(client):
            client = node_client(client, self.keys.meta)  # the node of the network's slot, its pool
            single = None
        if single is not None:
            drain = getattr(client, "drain", None)
            if drain is not None:
                drain()  # a worker's deferred replies come first
            lock: Any = client.single_connection_lock
            conn, release = single, None
        else:
            pool = client.connection_pool
            lock, conn = contextlib.nullcontext(), pool.get_connection()
            release = pool.release
        try:
            with lock:
                try:
                    conn.send_command(*head, todo[0][0], todo[0][1])
                    for i in range(len(todo)):
                        if i + 1 < len(todo):
                            conn.send_command(*head, todo[i + 1][0], todo[i + 1][1])
                        text = conn.read_response()
                        done[0] = i + 1
                        consume(text)
                except (redis.RedisError, OSError):
                    conn.disconnect()  # replies in flight are dropped with it
                    self._fetch_loaded = False  # NOSCRIPT, perhaps: load it again next time
                    raise _Fallback from None
                except BaseException:
                    conn.disconnect()  # never hand back a connection with a reply in flight
                    raise
        finally:
            if release is not None:
                release(conn)

    def keys_with_state(self, states: Sequence[str]) -> list[list[str]]:
        return self._s["keys_with_state"](keys=self._fetch_keys(), args=[self.keys.prefix, *states])

    def counts(self) -> list[int]:
        """[queued, running, finished, failed, all]"""
        k = self.keys
        out = self._s["counts"](keys=[k.queued, k.running, k.finished, k.failed, k.all_tasks, k.workers],
                                args=[k.prefix])
        return [int(x) for x in out]

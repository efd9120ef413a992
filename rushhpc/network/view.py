"""The network view: one network's state in Redis, opened without starting anything.

`Network` is the layer below the manager. It reads and changes what the network holds
(tasks, workers and their state transitions, launch records, logs) through the Lua
protocol, and nothing else: it starts no Redis, no worker and no thread, registers no
exit handler, and writes nothing when it only reads. `Rush` (the manager), `RushWorker`
and every CLI command are built on it, so any of them opened by network id sees, and can
act on, everything.

Example:
    >>> net = Network.open("sweep-1", redis_config(url="redis://127.0.0.1:6379"))
    >>> net.counts_by_state()
    {'queued': 0, 'running': 2, 'finished': 98, 'failed': 0}
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import redis

from rushhpc._version import __version__
from rushhpc.core.records import SWEEP_FIELDS, LaunchRecord, SweepInfo
from rushhpc.core.states import TASK_STATES, UNCOUNTED_REASONS, Release, WorkerState
from rushhpc.errors import RushConfigError
from rushhpc.network.tables import WORKER_COLUMNS
from rushhpc.network.tasks import TaskStore
from rushhpc.store import signing
from rushhpc.store.connection import RedisClient, RedisConfig, is_cluster, node_client, write_credentials
from rushhpc.store.keys import Keys, validate_id
from rushhpc.store.protocol import SCHEMA_VERSION, Protocol

if TYPE_CHECKING:
    import pandas as pd

# the fields of a worker's hash that worker_rows shows (layout.py describes every field)
WORKER_FIELDS = ("worker_id", "state", "job_state", "pid", "hostname", "node", "heartbeat_expire", "heartbeat_pid",
                 "launcher", "job_id", "terminate_reason", "reason", "started_at", "stopped_at", "mem", "mem_retry_of")


def default_run_root() -> Path:
    """Where run directories go: ``$RUSHHPC_RUN_DIR``, else ``~/.rushhpc/runs``."""
    return Path(os.environ.get("RUSHHPC_RUN_DIR", Path.home() / ".rushhpc" / "runs")).expanduser()


CREDENTIALS_NAME = "credentials.json"
# what launchers write into a run directory: worker output files (local, SLURM, PBS), submitit's
# folder (its logs and job files), batch scripts
LOG_DIRS = ("workers", "submitit")
MADE_DIRS = ("scripts",)


def remove_run_files(run_dir: str | os.PathLike, signing_key_file: str | os.PathLike | None = None,
                     keep_logs: bool = False) -> None:
    """Remove what rushhpc made in one network's run directory: the credentials file, the
    signing key when it is the run directory's own (a key file named by the plan or
    ``$RUSHHPC_SIGNING_KEY_FILE`` stays), batch scripts, and unless ``keep_logs`` the workers'
    output files; then the directory, if nothing else is left in it (a file of the user's stays).

    Example:
        >>> remove_run_files(Path("~/.rushhpc/runs/sweep-1").expanduser())
    """
    import shutil

    d = Path(run_dir).expanduser()
    if not d.is_dir():
        return
    names = [CREDENTIALS_NAME, *MADE_DIRS, *(() if keep_logs else LOG_DIRS)]
    key = Path(signing_key_file).expanduser().absolute() if signing_key_file else None
    own_key = d.absolute() / signing.KEY_NAME
    if key is None or key == own_key:
        names.append(signing.KEY_NAME)
    for name in names:
        p = d / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    try:
        d.rmdir()  # only when empty
    except OSError:
        pass


def list_networks(client: RedisClient) -> list[str]:
    """Ids of the networks on this Redis (those with a meta hash), sorted. A cluster client
    scans every primary (redis-py's ``RedisCluster.scan_iter``).

    Example:
        >>> list_networks(cfg.connect())
        ['sweep-1', 'sweep-2']
    """
    out = set()
    for key in client.scan_iter(match="{*}:meta", count=1000):
        k = key.decode() if isinstance(key, bytes) else key
        if k.startswith("{") and k.endswith("}:meta"):
            out.add(k[1:-6])
    return sorted(out)


def cluster_error(error: redis.ResponseError, config: RedisConfig) -> Exception:
    """A MOVED reply (a Redis Cluster node addressed as a single server) as a `RushConfigError`
    that says what to do; any other error as it is."""
    moved = (redis.exceptions.MovedError, redis.exceptions.AskError, redis.exceptions.ClusterDownError)
    if (isinstance(error, moved) or str(error).startswith(("MOVED", "ASK ", "CLUSTERDOWN"))) and not config.cluster:
        return RushConfigError(
            f"Redis at {config.address} is a Redis Cluster node (it answered {type(error).__name__}): name it as a "
            "cluster with redis_config(..., cluster=True), 'cluster: true' in the plan's config, --redis-cluster "
            "or RUSHHPC_REDIS_CLUSTER=1"
        )
    return error


class Network(TaskStore):
    """A view of one network in Redis: tasks, workers, launch records, logs.

    Opening one connects (and checks the connection) but writes nothing; `create` writes
    the network's meta hash (the manager does, on its first start or push).
    """

    def __init__(
        self,
        network_id: str,
        config: RedisConfig,
        *,
        client: RedisClient | None = None,
        run_dir: str | os.PathLike | None = None,
        client_factory: Callable[[], RedisClient] | None = None,
        signing_key_file: str | os.PathLike | None = None,
    ):
        self.network_id = validate_id(network_id)
        self.config = config
        self.keys = Keys(self.network_id)
        self._client_factory = client_factory or config.connect
        self.connector: RedisClient = client if client is not None else self._client_factory()
        self.protocol = Protocol(self.connector, self.keys)
        root = Path(run_dir).expanduser() if run_dir else default_run_root()
        self._run_dir = root / self.network_id
        self._credentials_written = False
        self._signing_key_file = signing.key_path(self._run_dir, signing_key_file)
        self._signing_key: bytes | None = None
        self._records: dict[str, LaunchRecord] = {}
        self._lock = threading.RLock()  # the records cache is shared with a monitor thread
        self._init_caches()

    @classmethod
    def open(cls, network_id: str, config: RedisConfig, must_exist: bool = True, **kwargs: Any) -> "Network":
        """Open an existing network; with ``must_exist`` a missing one is a `RushConfigError`.

        Example:
            >>> Network.open("no-such-net", cfg)
            RushConfigError: no network 'no-such-net' on Redis at 127.0.0.1:6379 ...
        """
        net = cls(network_id, config, **kwargs)
        try:
            exists = net.exists()
        except redis.ResponseError as e:
            raise cluster_error(e, config) from None
        if must_exist and not exists:
            known = list_networks(net.connector)
            raise RushConfigError(
                f"no network {network_id!r} on Redis at {config.address} "
                + (f"(networks there: {', '.join(known[:10])})" if known else "(it holds no network)")
            )
        if must_exist:
            net.check_schema()
        return net

    def __repr__(self) -> str:
        return f"<{type(self).__name__} network={self.network_id!r} redis={self.config}>"

    # ------------------------------------------------------------------ meta
    def exists(self) -> bool:
        """True when the network was created on this Redis (and not reset)."""
        return bool(self.connector.exists(self.keys.meta))

    def meta(self) -> dict[str, str]:
        return dict(self.connector.hgetall(self.keys.meta))

    def set_sweep_info(self, info: SweepInfo) -> bool:
        """Record what this network is for (`SweepInfo`, in ``{net}:sweep``), once: a network
        that has a record keeps it. Returns True when this call wrote it. Deleted with the network.

        Example:
            >>> rush.set_sweep_info(SweepInfo("branin", "tpe", "y", "minimize", evaluations=100))
            True
        """
        k = self.keys.sweep
        with self.connector.pipeline(transaction=True) as pipe:  # MULTI: all fields, or none
            for f, v in info.to_hash().items():
                pipe.hsetnx(k, f, v)
            written = pipe.execute()
        return bool(written and written[0])

    def sweep_info(self) -> SweepInfo | None:
        """What sweep this network runs (metric, direction, budget, ...), or None when it is
        not a sweep's network (or one started by an older rushhpc).

        Example:
            >>> net.sweep_info().metric, net.sweep_info().direction
            ('y', 'minimize')
        """
        h = self.connector.hmget(self.keys.sweep, list(SWEEP_FIELDS))
        if all(v is None for v in h):
            return None
        return SweepInfo.from_hash({f: v for f, v in zip(SWEEP_FIELDS, h) if v is not None})

    def check_schema(self) -> None:
        """Refuse a network written by another protocol version, with a message."""
        schema = self.connector.hget(self.keys.meta, "schema")
        if schema is not None and schema != SCHEMA_VERSION:
            raise RushConfigError(
                f"network {self.network_id!r} uses rushhpc protocol version {schema}, this rushhpc "
                f"({__version__}) speaks {SCHEMA_VERSION}: use the rushhpc version that created it, "
                "or reset the network"
            )

    def create(self) -> None:
        """Write the network's meta hash (idempotent) and check it.

        Records the Redis server's run id: a change means Redis restarted under the network.
        A network created before protocol versions were recorded gets the current one.
        """
        k_meta = self.keys.meta
        try:
            # the run id of the server that holds the network (on a cluster: its slot's primary)
            run_id = node_client(self.connector, k_meta).info("server").get("run_id", "")
        except redis.ResponseError:  # INFO may be disabled by an ACL
            run_id = ""
        k = self.keys.meta
        try:
            self.connector.exists(k)
        except redis.ResponseError as e:
            raise cluster_error(e, self.config) from None
        with self.connector.pipeline(transaction=False) as pipe:
            pipe.hsetnx(k, "created_at", time.time())
            pipe.hsetnx(k, "version", __version__)
            pipe.hsetnx(k, "schema", SCHEMA_VERSION)
            pipe.hget(k, "schema")
            pipe.hget(k, "redis_run_id")
            *_, schema, old = pipe.execute()
        if schema != SCHEMA_VERSION:
            self.check_schema()
        if old is None or old == "":
            if run_id:
                self.connector.hset(k, "redis_run_id", run_id)
        elif run_id and old != run_id:
            self.connector.hset(k, "redis_run_id", run_id)
            warnings.warn(
                f"Redis at {self.config.address} restarted since network {self.network_id!r} was created "
                "(its run id changed). Without persistence (appendonly yes) tasks and workers may be lost.",
                RuntimeWarning,
                stacklevel=3,
            )

    def reconnect(self) -> None:
        """Open a fresh connection (after a Redis restart or a network change), of the same kind."""
        self.connector = self._client_factory()
        self.protocol = Protocol(self.connector, self.keys)

    # ------------------------------------------------------------------ files (LaunchContext)
    @property
    def run_dir(self) -> Path:
        """This network's folder for worker logs, scripts and the credentials file."""
        return self._run_dir

    def credentials_file(self) -> Path:
        """The 0600 file holding the Redis URL that workers read, (re)written on first use
        (a file left by an earlier run may name another Redis) and when it is gone (a reset
        removes it)."""
        path = self._run_dir / CREDENTIALS_NAME
        if not self._credentials_written or not path.exists():
            self._run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_credentials(path, self.config)
            self._credentials_written = True
        return path

    def signing_key_file(self) -> Path:
        """The 0600 file holding the key that signs this network's worker configurations
        (``rush_plan(signing_key_file=...)``, ``$RUSHHPC_SIGNING_KEY_FILE`` or
        ``<run_dir>/signing.key``), created on first use when missing. Workers get its path."""
        self.signing_key()
        return self._signing_key_file

    def signing_key(self) -> bytes:
        """The signing key (read, or created, once; made again when its file is gone, e.g.
        removed by a reset); never stored in Redis or printed."""
        if self._signing_key is None or not self._signing_key_file.exists():
            self._signing_key = signing.ensure_key(self._signing_key_file)
        return self._signing_key

    def remove_run_dir(self, keep_logs: bool = False) -> None:
        """Remove what rushhpc made in this network's run directory on this machine (`remove_run_files`):
        a reset network needs none of it. ``keep_logs`` keeps the workers' output files.

        Example:
            >>> rush.remove_run_dir(keep_logs=True)
        """
        remove_run_files(self._run_dir, self._signing_key_file, keep_logs)
        self._signing_key = None
        self._credentials_written = False

    # ------------------------------------------------------------------ launch records
    def store_records(self, records: Sequence[LaunchRecord]) -> None:
        """Store launch records; managed (batch) workers exist from now on, as `pending`."""
        if not records:
            return
        k = self.keys
        with self.connector.pipeline(transaction=True) as pipe:
            pipe.hset(k.launches, mapping={r.worker_id: r.dumps() for r in records})
            for r in records:
                if not r.managed:
                    continue
                pipe.hset(k.worker(r.worker_id), mapping={
                    "worker_id": r.worker_id, "state": WorkerState.PENDING.value, "launcher": r.launcher,
                    "job_id": r.job_id or "", "submitted_at": r.submitted_at, "managed": "1",
                    "mem": str((r.extra.get("resources") or {}).get("mem") or ""),  # worker_info's mem column
                })
                pipe.sadd(k.workers_in(WorkerState.PENDING), r.worker_id)
                pipe.sadd(k.active_launches, r.worker_id)
            pipe.execute()
        with self._lock:
            for r in records:
                self._records[r.worker_id] = r

    def save_record(self, record: LaunchRecord, pipe: Any = None, settled: bool = False) -> None:
        """Write one record back (the reconciler's tracking); ``settled`` leaves the active set."""
        target = pipe if pipe is not None else self.connector
        target.hset(self.keys.launches, record.worker_id, record.dumps())
        if settled:
            target.srem(self.keys.active_launches, record.worker_id)

    def record(self, worker_id: str) -> LaunchRecord | None:
        """The launch record of one worker (cached, else read from Redis)."""
        with self._lock:
            rec = self._records.get(worker_id)
        if rec is None:
            text = self.connector.hget(self.keys.launches, worker_id)
            if text:
                rec = LaunchRecord.loads(text)
                with self._lock:
                    rec = self._records.setdefault(worker_id, rec)
        return rec

    def records(self, worker_ids: Iterable[str] | None = None) -> dict[str, LaunchRecord]:
        """Launch records of these workers (default: every launched worker), from Redis."""
        if worker_ids is None:
            raw = self.connector.hgetall(self.keys.launches)
            items = list(raw.items())
        else:
            ids = list(worker_ids)
            items = list(zip(ids, self.connector.hmget(self.keys.launches, ids))) if ids else []
        out = {}
        with self._lock:
            for wid, text in items:
                if text is None:
                    continue
                rec = LaunchRecord.loads(text)
                cached = self._records.get(wid)
                if cached is not None:
                    cached.extra = rec.extra  # Redis is the truth for tracking fields
                    rec = cached
                else:
                    self._records[wid] = rec
                out[wid] = rec
        return out

    def active_records(self) -> dict[str, LaunchRecord]:
        """Records of batch workers whose job's fate is not settled yet."""
        return self.records(sorted(self.connector.smembers(self.keys.active_launches)))

    @property
    def launched_ids(self) -> set[str]:
        """Workers launched through this view (cached records)."""
        with self._lock:
            return set(self._records)

    def worker_field(self, worker_ids: Sequence[str], field: str) -> list[str | None]:
        """One field of several workers' hashes, in one round trip."""
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hget(self.keys.worker(wid), field)
            return list(pipe.execute())

    # ------------------------------------------------------------------ workers
    def worker_rows(self) -> list[dict[str, Any]]:
        """One plain dict per worker (what `worker_info` shows), read in one round trip per 500
        workers (`Protocol.worker_info`).

        ``state`` is the worker's, or for a batch worker not registered yet, its job's
        (pending, held, starting); a running worker whose job is suspended shows
        ``suspended``.
        """
        rows = []
        for h in self.protocol.worker_info(WORKER_FIELDS):
            state = h.get("state")
            job_state = h.get("job_state") or None
            if state == "pending" and job_state in ("held", "starting", "running"):
                state = "held" if job_state == "held" else "starting"
            elif state == "running" and job_state == "suspended":
                state = "suspended"
            rows.append({
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
                "reason": (h.get("terminate_reason") if state == "terminated" and h.get("terminate_reason")
                           else h.get("reason")) or None,
                "started_at": float(h["started_at"]) if h.get("started_at") else None,
                "stopped_at": float(h["stopped_at"]) if h.get("stopped_at") else None,
                # a batch job's --mem, and the worker whose out-of-memory end made it ask more (rushhpc.core.memory)
                "mem": h.get("mem") or None,
                "mem_retry_of": h.get("mem_retry_of") or None,
            })
        rows.sort(key=lambda r: (r["started_at"] is None, r["started_at"] or 0.0))
        return rows

    @property
    def worker_info(self) -> "pd.DataFrame":
        """One row per worker: id, state, pid, hostname, heartbeat, launcher, job id, reason...

        ``job_state`` is the scheduler's view at the last poll.
        """
        import pandas as pd

        df = pd.DataFrame(self.worker_rows(), columns=WORKER_COLUMNS)
        for t in ("started_at", "stopped_at"):
            df[t] = pd.to_datetime(df[t], unit="s", utc=True)
        return df.reset_index(drop=True)

    def heartbeat_ages(self, worker_ids: Sequence[str]) -> dict[str, float | None]:
        """Seconds since each worker's last heartbeat (None: no heartbeat key, or none alive)."""
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hget(self.keys.worker(wid), "heartbeat_expire")
                pipe.pttl(self.keys.heartbeat(wid))
            res = pipe.execute()
        out: dict[str, float | None] = {}
        for wid, expire, ttl in zip(worker_ids, res[0::2], res[1::2]):
            out[wid] = max(0.0, float(expire) - ttl / 1000.0) if expire and ttl is not None and ttl >= 0 else None
        return out

    def task_rows(self, states: Sequence[str] = TASK_STATES, limit: int | None = None) -> list[dict[str, Any]]:
        """Tasks of these states as flat dicts (parameters, outputs, state, worker, condition)."""
        from rushhpc.network.tables import flatten

        for st in states:
            if st not in TASK_STATES:
                raise RushConfigError(f"unknown task state {st!r}; states are {', '.join(TASK_STATES)}")
        rows = [flatten(r) for r in self._records_from("states", *states)]
        return rows[:limit] if limit is not None else rows

    def log_rows(self, after: str = "-") -> list[dict[str, Any]]:
        """Log records after stream id ``after`` (``-``: from the start), oldest first."""
        return self._log_rows("-" if after == "-" else "(" + after)

    def worker_states(self) -> dict[str, str]:
        """Every worker's state, from the sets by state in one round trip (no worker hash read:
        cheap at thousands of workers, unlike `worker_info`).

        Example:
            >>> net.worker_states()
            {'w-1a2b': 'running', 'w-3c4d': 'terminated'}
        """
        with self.connector.pipeline(transaction=False) as pipe:
            for st in WorkerState:
                pipe.smembers(self.keys.workers_in(st))
            sets = pipe.execute()
        return {wid: str(st) for st, ids in zip(WorkerState, sets) for wid in ids}

    def worker_ids_in(self, state: WorkerState | str) -> list[str]:
        return sorted(self.connector.smembers(self.keys.workers_in(state)))

    @property
    def worker_ids(self) -> list[str]:
        """Ids of every worker that registered."""
        return sorted(self.connector.smembers(self.keys.workers))

    @property
    def running_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.RUNNING)

    @property
    def terminated_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.TERMINATED)

    @property
    def killed_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.KILLED)

    @property
    def lost_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.LOST)

    @property
    def failed_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.FAILED)

    @property
    def n_workers(self) -> int:
        return int(self.connector.scard(self.keys.workers))

    @property
    def n_running_workers(self) -> int:
        return int(self.connector.scard(self.keys.workers_in(WorkerState.RUNNING)))

    def worker_counts(self) -> dict[str, int]:
        """Number of workers in each state (pending included), in one round trip."""
        with self.connector.pipeline(transaction=False) as pipe:
            for s in WorkerState:
                pipe.scard(self.keys.workers_in(s))
            return {s.value: int(n) for s, n in zip(WorkerState, pipe.execute())}

    def counts_by_state(self) -> dict[str, int]:
        """Number of tasks in each state, read in one step."""
        return dict(zip(TASK_STATES, self.protocol.counts()[:4]))

    def mark_workers(
        self, state: WorkerState | str, items: Iterable[tuple[str, str, str]], retry: bool | Release,
        source: WorkerState | str = WorkerState.RUNNING,
    ) -> list[str]:
        """Move running (or pending) workers to ``state`` with a reason; returns the ids that
        changed (the first verdict stands). Their running tasks are released as ``retry`` says
        (`Release`; ``True`` = RETRY, ``False`` = FAIL).

        Example:
            >>> net.mark_workers(WorkerState.LOST, [("w-1", "preempted", "job requeued")], retry=Release.FREE)
        """
        out = self.protocol.stop_workers(str(state), list(items), retry, source=str(source))
        return [row[0] for row in out]

    def recent_durations(self, n: int = 25) -> list[float]:
        """Run times (s) of the ``n`` tasks that finished last (one pipeline).

        Example:
            >>> statistics.median(net.recent_durations())
            2.5
        """
        keys = self.connector.lrange(self.keys.finished, -n, -1)
        if not keys:
            return []
        with self.connector.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(self.keys.task(k), ["started_at", "finished_at"])
            rows = pipe.execute()
        return [float(f) - float(s) for s, f in rows if s and f]

    def settle_released(self, worker_id: str, reason: str) -> int:
        """Apply the scheduler's final reason to the tasks a SIGTERMed batch worker released
        uncounted: a preemption or node failure leaves their attempts uncounted, any other
        reason counts them (a queued task with no retry left fails). Returns how many failed.

        Example:
            >>> net.settle_released("w-1", "timeout")
            0
        """
        return self.protocol.settle_released(
            worker_id, reason not in UNCOUNTED_REASONS,
            f"worker {worker_id} was lost ({reason}) while the task was running; no retry left")

    def registered_ids(self, launched: Iterable[str] = ()) -> set[str]:
        """Workers that registered at least once (a launched batch worker that was declared
        lost before registering did not)."""
        with self.connector.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.workers)
            pipe.smembers(self.keys.workers_in(WorkerState.LOST))
            pipe.smembers(self.keys.workers_in(WorkerState.KILLED))
            ids, lost, killed = pipe.execute()
        ended = (lost | killed) & set(launched)
        if ended:
            ids -= set(self.never_started(ended))
        return set(ids)

    def never_started(self, among: Iterable[str]) -> dict[str, str]:
        """Worker id -> reason, for workers that ended without ever registering."""
        ids = list(among)
        if not ids:
            return {}
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hmget(self.keys.worker(wid), ["state", "pid", "reason"])
            rows = pipe.execute()
        return {w: r[2] or r[0] for w, r in zip(ids, rows) if r[0] in ("lost", "killed") and not r[1]}

    def request_terminate(self, worker_ids: Sequence[str], reason: str = "") -> None:
        """Ask running workers to finish their task and end (they read the flag); ``reason``
        is shown as theirs once they have ended (e.g. released by adapt)."""
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hset(self.keys.worker(wid), mapping={"terminate": "1", **({"terminate_reason": reason} if reason else {})})
            pipe.execute()

    def send_kill(self, worker_ids: Sequence[str]) -> None:
        """Push a kill request on each worker's kill list (its heartbeat blocks on it)."""
        with self.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.rpush(self.keys.kill(wid), "kill")
                pipe.expire(self.keys.kill(wid), 3600)
            pipe.execute()

    # ------------------------------------------------------------------ deletion
    def delete(self, workers: bool = True) -> int:
        """Delete the network's keys (``workers=False``: tasks and logs only). Returns how many."""
        if workers:
            n = self._delete_pattern(self.keys.pattern)
            with self._lock:
                self._records.clear()
        else:
            n = 0
            for p in ("task:*", "queued", "running", "finished", "failed", "all_tasks", "log", "pending:*",
                      "worker_tasks:*"):
                n += self._delete_pattern(self.keys.prefix + p)
        self.reset_cache()
        self._log_last_id = "-"
        return n

    def _delete_pattern(self, pattern: str) -> int:
        n = 0
        batch: list[str] = []
        client = self.connector
        # on a cluster only the primary that owns the network's slot holds its keys
        scan = ({"target_nodes": client.get_node_from_key(self.keys.meta)} if is_cluster(client) else {})
        for k in client.scan_iter(match=pattern, count=1000, **scan):
            batch.append(k)
            if len(batch) >= 1000:
                n += int(self.connector.unlink(*batch))
                batch = []
        if batch:
            n += int(self.connector.unlink(*batch))
        return n

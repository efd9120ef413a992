"""The network view: one network's state in Redis, opened without starting anything.

`Network` is the layer below the manager. It reads and changes what the network holds
through the Lua protocol, and nothing else: it starts no Redis, no worker and no thread,
registers no exit handler, and writes nothing when it only reads. It is made of parts, each
over the view's connection: `TaskStore` (tasks and logs, ``network/tasks.py``), `Workers`
(``network/workers.py``) and `Launches` (launch records, ``network/launches.py``); this module
holds the view itself (open, meta, schema, run files, deletion) and forwards the parts'
public members, so ``net.push_tasks`` is ``net.tasks.push_tasks``. `Rush` (the manager),
`RushWorker` and every CLI command hold one, so any of them opened by network id sees, and
can act on, everything.

Example:
    >>> net = Network.open("sweep-1", redis_config(url="redis://127.0.0.1:6379"))
    >>> net.counts_by_state()
    {'queued': 0, 'running': 2, 'finished': 98, 'failed': 0}
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import redis

from rushhpc import defaults
from rushhpc._version import __version__
from rushhpc.core.records import SWEEP_FIELDS, SweepInfo
from rushhpc.core.states import TaskState
from rushhpc.errors import RushConfigError
from rushhpc.network.delegate import method, prop
from rushhpc.network.launches import Launches
from rushhpc.network.tasks import TaskStore
from rushhpc.network.workers import Workers
from rushhpc.store import signing
from rushhpc.store.connection import RedisClient, RedisConfig, is_cluster, node_client, write_credentials
from rushhpc.store.keys import Keys, validate_id
from rushhpc.store.protocol import SCHEMA_VERSION, Protocol


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
    for key in client.scan_iter(match="{*}:meta", count=defaults.SCAN_BATCH):
        k = key.decode() if isinstance(key, bytes) else key
        if k.startswith("{") and k.endswith("}:meta"):
            out.add(k[1:-6])
    return sorted(out)


def _sweep_info(fields: list[Any]) -> SweepInfo | None:
    """The `SweepInfo` of the values of `SWEEP_FIELDS` read from the sweep's hash (None: none set)."""
    if all(v is None for v in fields):
        return None
    return SweepInfo.from_hash({f: v for f, v in zip(SWEEP_FIELDS, fields) if v is not None})


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


class Network:
    """A view of one network in Redis: tasks, workers, launch records, logs.

    Opening one connects (and checks the connection) but writes nothing; `create` writes
    the network's meta hash (the manager does, on its first start or push). Its parts are
    ``tasks`` (`TaskStore`), ``workers`` (`Workers`) and ``launches`` (`Launches`); their
    public members are the view's too. ``before_push`` runs before tasks are written.

    Example:
        >>> net = Network.open("sweep-1", cfg)
        >>> net.n_tasks == net.tasks.n_tasks
        True
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
        before_push: Callable[[], None] | None = None,
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
        self.tasks = TaskStore(self, before_push)
        self.workers = Workers(self)
        self.launches = Launches(self)

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

    def server_time(self) -> float:
        """Redis's clock, Unix seconds: what task and worker times (``started_at``, ...) are compared with,
        whatever this host's clock says.

        Example:
            >>> net.server_time() - float(task["started_at"])   # how long it has run
        """
        sec, usec = self.connector.time()
        return float(sec) + float(usec) / 1e6

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
        not a sweep's network (or one started by an older rushhpc, or its record is not the hash
        `rushhpc sweep` writes: `sweep_record` reads a JSON string too).

        Example:
            >>> net.sweep_info().metric, net.sweep_info().direction
            ('y', 'minimize')
        """
        try:
            h = self.connector.hmget(self.keys.sweep, list(SWEEP_FIELDS))
        except redis.ResponseError as e:
            if str(e).startswith("WRONGTYPE"):  # not a hash: another tool's JSON string (`sweep_record` reads it)
                return None
            raise
        return _sweep_info(h)

    def sweep_record(self) -> dict[str, Any] | None:
        """The sweep's record in ``{net}:sweep`` as a dict, in one round trip: the hash `rushhpc sweep`
        writes (`sweep_info`'s fields), or a JSON object stored as a string (what other tools may write);
        None when there is none, or it is neither.

        Example:
            >>> net.sweep_record()["metric"]
            'y'
        """
        with self.connector.pipeline(transaction=False) as pipe:
            # one of the two fails with WRONGTYPE unless the key is absent: its reply says which kind it is
            pipe.get(self.keys.sweep)
            pipe.hmget(self.keys.sweep, list(SWEEP_FIELDS))
            text, h = pipe.execute(raise_on_error=False)
        if isinstance(text, (str, bytes)):
            try:
                doc = json.loads(text)
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
        info = _sweep_info(h) if isinstance(h, list) else None
        return dataclasses.asdict(info) if info is not None else None

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

    @property
    def signing_key_path(self) -> Path:
        """Where this network's signing key file is, made or not (`signing_key_file` makes it).

        Example:
            >>> net.signing_key_path.name
            'signing.key'
        """
        return self._signing_key_file

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

    # ------------------------------------------------------------------ deletion
    def delete(self, workers: bool = True) -> int:
        """Delete the network's keys (``workers=False``: tasks and logs only). Returns how many."""
        if workers:
            n = self._delete_pattern(self.keys.pattern)
            self.launches.forget_all()
        else:
            n = 0
            # the task hashes, the lists and set of each task state, and the logs
            for p in ("task:*", *TaskState.values(), "all_tasks", "log", "pending:*", "worker_tasks:*"):
                n += self._delete_pattern(self.keys.prefix + p)
        self.tasks.reset_cache()
        self.tasks.forget_log_position()
        return n

    def _delete_pattern(self, pattern: str) -> int:
        n = 0
        batch: list[str] = []
        client = self.connector
        # on a cluster only the primary that owns the network's slot holds its keys
        scan = ({"target_nodes": client.get_node_from_key(self.keys.meta)} if is_cluster(client) else {})
        for k in client.scan_iter(match=pattern, count=defaults.SCAN_BATCH, **scan):
            batch.append(k)
            if len(batch) >= defaults.SCAN_BATCH:
                n += int(self.connector.unlink(*batch))
                batch = []
        if batch:
            n += int(self.connector.unlink(*batch))
        return n

    # ------------------------------------------------------------------ the parts' members (network/tasks.py)
    push_tasks = method("tasks", TaskStore.push_tasks)
    push_finished_tasks = method("tasks", TaskStore.push_finished_tasks)
    push_failed_tasks = method("tasks", TaskStore.push_failed_tasks)
    empty_queue = method("tasks", TaskStore.empty_queue)
    fetch_queued_tasks = method("tasks", TaskStore.fetch_queued_tasks)
    fetch_running_tasks = method("tasks", TaskStore.fetch_running_tasks)
    fetch_failed_tasks = method("tasks", TaskStore.fetch_failed_tasks)
    fetch_finished_tasks = method("tasks", TaskStore.fetch_finished_tasks)
    fetch_new_tasks = method("tasks", TaskStore.fetch_new_tasks)
    fetch_tasks = method("tasks", TaskStore.fetch_tasks)
    fetch_tasks_with_state = method("tasks", TaskStore.fetch_tasks_with_state)
    fetch_task = method("tasks", TaskStore.fetch_task)
    tasks_with_state = method("tasks", TaskStore.tasks_with_state)
    is_running_task = method("tasks", TaskStore.is_running_task)
    is_failed_task = method("tasks", TaskStore.is_failed_task)
    counts_by_state = method("tasks", TaskStore.counts_by_state)
    task_rows = method("tasks", TaskStore.task_rows)
    recent_durations = method("tasks", TaskStore.recent_durations)
    n_queued_tasks = prop("tasks", TaskStore.n_queued_tasks)
    n_running_tasks = prop("tasks", TaskStore.n_running_tasks)
    n_finished_tasks = prop("tasks", TaskStore.n_finished_tasks)
    n_failed_tasks = prop("tasks", TaskStore.n_failed_tasks)
    n_tasks = prop("tasks", TaskStore.n_tasks)
    queued_tasks = prop("tasks", TaskStore.queued_tasks)
    running_tasks = prop("tasks", TaskStore.running_tasks)
    finished_tasks = prop("tasks", TaskStore.finished_tasks)
    failed_tasks = prop("tasks", TaskStore.failed_tasks)
    reset_cache = method("tasks", TaskStore.reset_cache)
    read_log = method("tasks", TaskStore.read_log)
    print_log = method("tasks", TaskStore.print_log)
    log_rows = method("tasks", TaskStore.log_rows)

    # ------------------------------------------------------------------ (network/workers.py)
    worker_field = method("workers", Workers.worker_field)
    worker_rows = method("workers", Workers.worker_rows)
    worker_info = prop("workers", Workers.worker_info)
    heartbeat_ages = method("workers", Workers.heartbeat_ages)
    worker_states = method("workers", Workers.worker_states)
    worker_ids_in = method("workers", Workers.worker_ids_in)
    worker_ids = prop("workers", Workers.worker_ids)
    running_worker_ids = prop("workers", Workers.running_worker_ids)
    terminated_worker_ids = prop("workers", Workers.terminated_worker_ids)
    killed_worker_ids = prop("workers", Workers.killed_worker_ids)
    lost_worker_ids = prop("workers", Workers.lost_worker_ids)
    failed_worker_ids = prop("workers", Workers.failed_worker_ids)
    n_workers = prop("workers", Workers.n_workers)
    n_running_workers = prop("workers", Workers.n_running_workers)
    worker_counts = method("workers", Workers.worker_counts)
    mark_workers = method("workers", Workers.mark_workers)
    settle_released = method("workers", Workers.settle_released)
    registered_ids = method("workers", Workers.registered_ids)
    never_started = method("workers", Workers.never_started)
    request_terminate = method("workers", Workers.request_terminate)
    send_kill = method("workers", Workers.send_kill)

    # ------------------------------------------------------------------ (network/launches.py)
    store_records = method("launches", Launches.store_records)
    save_record = method("launches", Launches.save_record)
    record = method("launches", Launches.record)
    records = method("launches", Launches.records)
    active_records = method("launches", Launches.active_records)
    launched_ids = prop("launches", Launches.launched_ids)

"""Shared helpers of the benchmark families: a private Redis server, timing,
round-trip counting, result rows and the run context.

Every family module has a ``run(ctx) -> list[Row]`` function. The driver
(`bench/run.py`) builds one `Context`, measures the floor first (`floor.py`)
and hands the same context to every family, so every number of a run is
measured against the same Redis server and the same floor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from redis.connection import AbstractConnection

BENCH_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- rows
@dataclasses.dataclass
class Row:
    """One line of the results table.

    ``value`` (a median, unless the name says otherwise) and ``p99`` are in
    ``unit``. ``ratio`` is ``value`` expressed against a
    reference measured in the same run (``ratio_of`` names it, e.g. "floor
    (PING)" or "rq"). ``target`` is the issue's target in words and ``met``
    says whether this run met it (None: no target for this row).
    """

    family: str
    name: str
    value: float | None
    unit: str
    p99: float | None = None
    ratio: float | None = None
    ratio_of: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------ redis
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private ``redis-server`` from PATH on a free loopback port.

    The configuration goes in on stdin (``redis-server -``); no persistence.
    `stop` ends exactly this process (by its pid), never anything else.
    """

    def __init__(self, workdir: Path, extra_conf: tuple[str, ...] = ()):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.port = free_port()
        self.dir = workdir
        conf = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f'dir "{workdir}"',
            'save ""',
            "appendonly no",
            f'logfile "{workdir / "redis.log"}"',
            "maxclients 10000",
            *extra_conf,
        ]
        self.proc = subprocess.Popen(
            [binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n".join(conf).encode())
        self.proc.stdin.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=1).ping():
                    break
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {workdir / 'redis.log'})")
            time.sleep(0.05)
        self.client = redis.Redis(port=self.port, decode_responses=True)
        self.version = self.client.info("server")["redis_version"]

    def config(self):
        """A `rushhpc.RedisConfig` for this server."""
        from rushhpc import redis_config

        return redis_config(host="127.0.0.1", port=self.port)

    def flushall(self) -> None:
        """Empty the server between families (every family starts on an empty Redis)."""
        self.client.flushall()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ------------------------------------------------------------------------ timing
def sample(fn: Callable[[], Any], n: int, warmup: int = 0) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``n`` times; returns each call's seconds."""
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def us(seconds: float) -> float:
    """Seconds -> microseconds, rounded for the table."""
    return round(seconds * 1e6, 1)


def ping_samples(client: redis.Redis, n: int) -> list[float]:
    """``n`` PING round trips on ``client``, in seconds each."""
    return sample(client.ping, n)


@dataclasses.dataclass
class Paired:
    """Samples of an operation and of the floor (PING) taken in alternating blocks.

    ``ratio`` is the median over blocks of median(op block) / median(PING block):
    each block's op is compared with the PINGs taken just before it, under the
    same load, so the ratio holds while absolute times drift.
    """

    op: list[float]
    floor: list[float]
    ratio: float


def interleaved(
    op: Callable[[], Any], floor: Callable[[], Any], n: int, block: int = 10, min_floor_block: int = 10
) -> Paired:
    """Time ``op`` and ``floor`` (a PING) in short alternating blocks, ``n`` calls of ``op`` in all.

    Other jobs on a shared machine come and go within seconds, hence blocks of
    about 10 calls, each op block paired with the PING block just before it.
    """
    per = max(1, min(block, n))
    rounds = max(1, n // per)
    ops: list[float] = []
    floors: list[float] = []
    ratios: list[float] = []
    for _ in range(rounds):
        f = sample(floor, max(per, min_floor_block))
        o = sample(op, per)
        floors += f
        ops += o
        ratios.append(statistics.median(o) / statistics.median(f))
    return Paired(ops, floors, round(statistics.median(ratios), 2))


# ---------------------------------------------------------------- round trips
class _TripCounter:
    def __init__(self) -> None:
        self.count = 0


@contextlib.contextmanager
def count_round_trips() -> Iterator[_TripCounter]:
    """Count client->server round trips made by redis-py in this process.

    A round trip is one write of the client to the socket (one
    ``send_packed_command``, or one write of a worker's lean EVALSHA path): a
    single command, a whole pipeline, or one EVALSHA each count as one, however
    many Redis commands run on the server.

    Example:
        >>> with count_round_trips() as c:
        ...     rush.detect_lost_workers()
        >>> c.count
        1
    """
    counter = _TripCounter()
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        counter.count += 1
        return original(self, command, check_health)

    # a worker's lean EVALSHA path writes to the socket itself (rushhpc.store.wire, newer versions)
    try:
        from rushhpc.store.wire import WorkerRedis
    except ImportError:
        WorkerRedis = None  # noqa: N806
    lean = getattr(WorkerRedis, "_sendall", None)

    def lean_counting(self, sock, data):
        counter.count += 1
        return lean(self, sock, data)

    AbstractConnection.send_packed_command = counting
    if lean is not None:
        WorkerRedis._sendall = lean_counting
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = original
        if lean is not None:
            WorkerRedis._sendall = lean


# ---------------------------------------------------------------- placement
def can_pin() -> bool:
    """True when this machine has two CPUs to place Redis and a client on."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


@contextlib.contextmanager
def placement(server: RedisServer, where: str) -> Iterator[None]:
    """Pin redis-server to the first CPU and this process to the same CPU
    (``where="same"``) or to another (``"cross"``); restore both afterwards.

    Why: on this kind of machine a loopback round trip costs about 3x more when
    client and server run on different cores (the wake-up crosses CPUs) than on
    the same core, and the scheduler moves processes between the two every
    second or so. Unpinned, a PING flips between ~22 and ~65 us; pinned, each
    placement is steady. A busy worker runs on another core than a busy Redis,
    so "cross" is the placement of the worker loops and the run's floor.
    """
    if not can_pin():
        yield
        return
    cpus = sorted(os.sched_getaffinity(0))
    mine_before = set(cpus)
    server_before = os.sched_getaffinity(server.proc.pid)
    os.sched_setaffinity(server.proc.pid, {cpus[0]})
    os.sched_setaffinity(0, {cpus[0] if where == "same" else cpus[1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine_before)
        os.sched_setaffinity(server.proc.pid, server_before)


# ---------------------------------------------------------------- processes
def rss_mib(pid: int) -> tuple[float, float]:
    """(resident set size, unique set size) of a process in MiB. USS is the memory
    that would be freed if the process ended (not shared with other processes)."""
    import psutil

    p = psutil.Process(pid)
    full = p.memory_full_info()
    return round(full.rss / 2**20, 1), round(full.uss / 2**20, 1)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM one process we started (by its handle), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until truthy; raise TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def bench_python_env() -> dict[str, str]:
    """Environment for peer worker processes: they import ``bench/peer_jobs.py``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BENCH_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ---------------------------------------------------------------- context
@dataclasses.dataclass
class Context:
    """What every family gets: the server, the mode, the floor and shared results.

    ``floor_us`` is the median redis-py PING round trip on a dedicated connection
    (the connection type of a worker), ``floor_pool_us`` the same through a
    connection pool (the manager's), both measured at the start of the run.
    ``shared`` holds numbers one family hands to another (e.g. the rushhpc
    throughput that the peers family compares with).
    """

    server: RedisServer
    quick: bool
    workdir: Path
    floor_us: float = 0.0
    floor_pool_us: float = 0.0
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)
    deadline: float = float("inf")

    def network(self, prefix: str) -> str:
        """A fresh network id for one measurement."""
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def pick(self, full: Any, quick: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def single_client(self) -> redis.Redis:
        """A redis-py client with one dedicated connection, configured like a worker's."""
        return self.server.config().client(single_connection=True)

    def pool_client(self) -> redis.Redis:
        """A redis-py client with a connection pool, configured like the manager's."""
        return self.server.config().client()

    def floor_now(self, n: int = 2000) -> float:
        """Re-measure the floor (dedicated connection PING, cross-core, median, seconds) right now."""
        c = self.single_client()
        try:
            with placement(self.server, "cross"):
                return median(ping_samples(c, n))
        finally:
            c.close()


def make_workdir() -> Path:
    """A private temporary directory for the Redis server and the workers' run dirs."""
    return Path(tempfile.mkdtemp(prefix="rushhpc-bench-"))


def log(msg: str) -> None:
    """Progress on stderr (stdout is the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

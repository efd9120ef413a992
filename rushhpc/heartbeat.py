"""The heartbeat: a separate process beside each worker.

A separate process, not a thread, because C code holding the GIL (a long
numpy call, a compiled simulator) would stop a thread from beating and get a
healthy worker declared lost. Each beat refreshes ``{net}:heartbeat:{wid}``
with an expiry and then blocks on the worker's kill list for one period, so
one command both sleeps and listens. On a kill request it SIGKILLs the
worker and its children. It dies with its worker (PR_SET_PDEATHSIG, plus a
parent check every beat), retries Redis errors with backoff instead of giving
up, and refreshes only while the worker is registered as running, so a
``reset()`` leaves no key behind.

Started by `start_heartbeat`; its settings (the worker's credentials: URL with the
password, TLS file paths) arrive on stdin as JSON, never in argv.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import redis
import redis.cluster

from . import defaults
from .config import RedisClient, RedisConfig, credentials, from_credentials, redis_config
from .layout import Keys
from .protocol import Protocol

PR_SET_PDEATHSIG = 1
REGISTER_WAIT = defaults.HEARTBEAT_REGISTER_WAIT  # seconds a heartbeat waits for its worker to register


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent thread exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


def kill_tree(pid: int, skip: int | None = None) -> None:
    """SIGKILL ``pid`` and its descendants (except ``skip``), children first."""
    try:
        proc = psutil.Process(pid)
        family = proc.children(recursive=True) + [proc]
    except psutil.NoSuchProcess:
        return
    for p in family:
        if p.pid == skip:
            continue
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def start_heartbeat(
    config: RedisConfig | str, network_id: str, worker_id: str, period: float, expire: float,
    watch_pid: int | None = None,
) -> subprocess.Popen:
    """Start the heartbeat process of the calling worker process.

    ``config`` is the worker's `RedisConfig` (TLS files included), or a URL (which may
    carry them as ``?ssl_ca_certs=...``). ``watch_pid`` is another process (the manager of
    local workers) whose death also ends the worker.

    Example:
        >>> hb = start_heartbeat(cfg, "net", "w1", period=10, expire=60)
    """
    cfg = config if isinstance(config, RedisConfig) else redis_config(url=config)
    settings = {
        "credentials": credentials(cfg),
        "network_id": network_id,
        "worker_id": worker_id,
        "worker_pid": os.getpid(),
        "period": period,
        "expire": expire,
        "watch_pid": watch_pid,
    }
    main_thread = threading.current_thread() is threading.main_thread()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rushhpc.heartbeat"],
        stdin=subprocess.PIPE,
        # PDEATHSIG fires when the creating *thread* ends: only safe from the main thread.
        preexec_fn=set_parent_death_signal if main_thread else None,
        close_fds=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(settings).encode())
    proc.stdin.close()
    return proc


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run(settings: dict) -> int:
    """The heartbeat loop. Returns the exit code."""
    cfg = from_credentials(settings["credentials"]) if "credentials" in settings else redis_config(url=settings["url"])
    keys = Keys(settings["network_id"])
    wid = settings["worker_id"]
    worker_pid = int(settings["worker_pid"])
    watch_pid = settings.get("watch_pid")
    period = float(settings["period"])
    expire = float(settings["expire"])

    def connect() -> tuple[RedisClient, Protocol]:
        # socket timeout above the blocking timeout, so BLPOP is never cut short. On a Redis
        # Cluster: the primary that owns the network's slot (looked up again after an error,
        # so a failover or a moved slot is followed).
        c = cfg.node_for(keys.meta, known).client(single_connection=True, socket_timeout=period + 10)
        return c, Protocol(c, keys)

    known: list[tuple[str, int]] = []  # the cluster's nodes, asked when the named one is down
    client: RedisClient = None
    protocol: Protocol | None = None
    kill_key = keys.kill(wid)
    failures = 0
    me = os.getpid()
    seen_running = False
    started = time.monotonic()

    while True:
        if os.getppid() != worker_pid or not _alive(worker_pid):
            return 0  # the worker is gone: nothing left to beat for
        if watch_pid and not _alive(watch_pid):
            print(f"rushhpc heartbeat: manager process {watch_pid} exited; stopping worker {wid}", file=sys.stderr)
            kill_tree(worker_pid, skip=me)
            return 0
        try:
            if protocol is None:
                client, protocol = connect()
            state = protocol.heartbeat(wid, max(1, round(expire)))
            if state in ("", "pending") and not seen_running:
                # started just before the worker registers (so its pid is in the registration)
                if time.monotonic() - started > REGISTER_WAIT:
                    return 0
                time.sleep(min(0.05, period))
                continue
            seen_running = True
            if state in ("", "killed"):
                # killed by the manager, or the network was reset: stop the worker now
                kill_tree(worker_pid, skip=me)
                return 0
            if state in ("terminated", "failed"):
                return 0  # the worker is ending by itself
            request = client.blpop([kill_key], timeout=period)
            failures = 0
            if request is not None:
                print(f"rushhpc heartbeat: kill request for worker {wid}", file=sys.stderr)
                kill_tree(worker_pid, skip=me)
                return 0
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, redis.cluster.RedisClusterException,
                OSError) as e:
            # A Redis hiccup must not cost a live worker its tasks: keep trying,
            # backing off up to one period; the expiry decides, not one error.
            failures += 1
            if cfg.cluster:
                if client is not None:
                    client.close()
                client, protocol = None, None  # ask the cluster again where the slot is
            delay = min(period, 0.2 * 2 ** min(failures, 10))
            print(f"rushhpc heartbeat: Redis error ({e}); retry {failures} in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)


def main() -> int:
    settings = json.loads(sys.stdin.read())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's business
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())

"""The heartbeat: a separate process beside each worker.

A separate process, not a thread, because C code holding the GIL (a long
numpy call, a compiled simulator) would stop a thread from beating and get a
healthy worker declared lost. Each beat refreshes ``{net}:heartbeat:{wid}``
with an expiry and then blocks on the worker's kill list for one period, so
one command both sleeps and listens. On a kill request it SIGKILLs the
worker and its children. It ends with its worker (PR_SET_PDEATHSIG with SIGTERM, plus a
parent check every beat), and when the worker died under it (SIGKILL, the OOM killer) it first stops every
process the worker started (they carry the worker's token in their environment) and deletes the heartbeat
key, so the loss is seen at the next check, not at the key's expiry; retries Redis errors with backoff instead of giving
up, and refreshes only while the worker is registered as running, so a
``reset()`` leaves no key behind. On a Redis Cluster it talks to the primary
that owns the network's slot and follows it (a MOVED slot, a failover).

Started by `start_heartbeat`, which resolves everything here, in the worker:
host, port, user name and password, TLS file paths, database, the key names,
the Lua source and its SHA1, the network's cluster slot (`beat_settings`).
They arrive on the process's stdin as JSON, never in argv or the environment.
The process runs `rushhpc.worker.beat`, which imports only the standard library
(a minimal RESP client instead of redis-py, /proc instead of psutil): about
11 MiB resident instead of 34 MiB per worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from typing import Any

from redis.crc import key_slot

from rushhpc import defaults, processes
from rushhpc.processes import WORKER_TOKEN_VARIABLE, set_parent_death_signal
from rushhpc.store.connection import RedisConfig, redis_config
from rushhpc.store.keys import Keys
from rushhpc.store.protocol import source
from rushhpc.worker import beat

REGISTER_WAIT = defaults.HEARTBEAT_REGISTER_WAIT  # seconds a heartbeat waits for its worker to register


def beat_settings(
    cfg: RedisConfig, network_id: str, worker_id: str, period: float, expire: float,
    watch_pid: int | None = None, worker_pid: int | None = None,
) -> dict[str, Any]:
    """Everything the heartbeat process (`rushhpc.worker.beat.run`) needs, resolved: a JSON-ready
    dict. It holds the password: for the process's stdin only, never argv, environment or logs.

    ``worker_pid`` is the worker's process (default: this one), which must be the heartbeat's
    parent. On a cluster the host and port name the node to ask first.
    """
    tls = cfg.tls_options()  # missing files or a readable key: a clear error here, not a silent heartbeat
    keys = Keys(network_id)
    script = source("heartbeat")  # read now: RUSHHPC_STRICT_SCRIPTS applies as in the worker
    return {
        "host": cfg.host, "port": cfg.port, "db": cfg.db, "username": cfg.username, "password": cfg.password,
        "tls": cfg.tls, "tls_ca": tls.get("ssl_ca_certs"), "tls_cert": tls.get("ssl_certfile"),
        "tls_key": tls.get("ssl_keyfile"),
        "cluster": cfg.cluster, "slot": key_slot(keys.meta.encode()) if cfg.cluster else None,
        "connect_timeout": defaults.CONNECT_TIMEOUT,
        "prefix": keys.prefix,
        "keys": {"worker": keys.worker(worker_id), "heartbeat": keys.heartbeat(worker_id), "kill": keys.kill(worker_id)},
        "script": script,
        "sha": hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest(),
        "register_wait": REGISTER_WAIT,
        "worker_id": worker_id,
        "worker_pid": os.getpid() if worker_pid is None else worker_pid,
        "period": period,
        "expire": expire,
        "watch_pid": watch_pid,
    }


def beat_command() -> list[str]:
    """The heartbeat process's command line: `rushhpc.worker.beat` and the `rushhpc.processes` it uses,
    imported from their folders (appended to sys.path, after the standard library) by an interpreter
    started with ``-I`` (no PYTHON* variables, no user site, no current folder on sys.path) and ``-S``
    (no site packages): 11.0 MiB resident here against 12.8-13.6 MiB with ``-m rushhpc.worker.beat``,
    which is the fallback when a module is not a plain file or PYTHONHOME is needed to find the
    standard library.

    Example:
        >>> subprocess.Popen(beat_command(), stdin=subprocess.PIPE)
    """
    paths = [beat.__file__, processes.__file__]
    if all(p and p.endswith(".py") and os.path.isfile(p) for p in paths) and not os.environ.get("PYTHONHOME"):
        folders = [os.path.dirname(os.path.abspath(p)) for p in paths if p]
        return [sys.executable, "-I", "-S", "-c",
                f"import sys; sys.path += {folders!r}; import beat; sys.exit(beat.main())"]
    return [sys.executable, "-m", "rushhpc.worker.beat"]


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
    settings = beat_settings(cfg, network_id, worker_id, period, expire, watch_pid=watch_pid)
    # Every process this worker starts from now on (a program it runs, what an objective starts, and the
    # children of those) inherits this token: if the worker dies, its heartbeat stops them (beat.worker_gone).
    settings["worker_token"] = os.environ[WORKER_TOKEN_VARIABLE] = secrets.token_hex(12)
    main_thread = threading.current_thread() is threading.main_thread()
    proc = subprocess.Popen(
        beat_command(),
        stdin=subprocess.PIPE,
        # PDEATHSIG fires when the creating *thread* ends: only safe from the main thread. SIGTERM, not
        # SIGKILL: the heartbeat then stops the dead worker's program and deletes its key (beat.worker_gone).
        preexec_fn=(lambda: set_parent_death_signal(signal.SIGTERM)) if main_thread else None,
        close_fds=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(settings).encode())
    proc.stdin.close()
    return proc

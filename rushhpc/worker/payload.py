"""The signed start blob a launched worker reads before it registers: its loop and the loop's arguments.

A manager stores one per start call (`rushhpc.network.startargs`), signed with the network's
key; the worker finds the key file (`worker_key_file`), checks the signature and unpickles
(`read_start`). Nothing is registered before this succeeds, so an unreachable Redis, a wrong
start id, a missing key file or a bad signature is one clear error and leaves no failed worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rushhpc.core.spec import WorkerSpec
from rushhpc.network import startargs
from rushhpc.network.view import default_run_root
from rushhpc.store import signing
from rushhpc.store.connection import RedisConfig
from rushhpc.store.keys import Keys


def worker_key_file(spec: WorkerSpec) -> Path:
    """The signing key file a worker process reads: ``--signing-key``, else
    ``$RUSHHPC_SIGNING_KEY_FILE``, else ``signing.key`` beside the credentials file (the run
    directory), else ``<run root>/<network>/signing.key``.

    Example:
        >>> worker_key_file(WorkerSpec("sweep-1", "5d1e", credentials="/runs/sweep-1/credentials.json"))
        PosixPath('/runs/sweep-1/signing.key')
    """
    if spec.signing_key:
        return Path(spec.signing_key).expanduser()
    run_dir = Path(spec.credentials).expanduser().parent if spec.credentials else \
        default_run_root() / spec.network_id
    return signing.key_path(run_dir)


def read_start(cfg: RedisConfig, spec: WorkerSpec) -> dict[str, Any]:
    """The worker configuration of ``spec.start_id``: ``worker_loop``, ``args`` and ``options``,
    after its signature was checked with the network's key (`rushhpc.store.signing`).

    Example:
        >>> start = read_start(cfg, WorkerSpec("sweep-1", "5d1e", credentials="/runs/sweep-1/credentials.json"))
        >>> start["worker_loop"](worker, **start["args"])
    """
    raw = cfg.connect(decode_responses=False)  # the pickle is bytes
    try:
        key_file = worker_key_file(spec)
        key = signing.read_key(key_file)
        return startargs.load(raw, Keys(spec.network_id), spec.start_id, key=key, key_file=key_file)
    finally:
        raw.close()

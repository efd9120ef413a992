"""The worker configuration: the worker loop and its arguments, sent once per start call.

It is the one thing that must be executable, so it travels as cloudpickle,
stored at ``{net}:start:{start_id}``, or in a file under
``large_objects_path`` when it is larger than ``max_object_size``.

What Redis holds is ``rushhpc-signed-v1:<hmac>:`` followed by the pickle (or by
``rushhpc-file:<path>``): the HMAC-SHA256 of the pickle under the network's signing key
(`rushhpc.store.signing`), which never goes into Redis. `load` checks it before unpickling, so
someone who can write Redis but lacks the key file cannot make a worker run their code.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable

import cloudpickle

from rushhpc.errors import RushConfigError, RushPayloadError
from rushhpc.store import signing
from rushhpc.store.connection import RedisClient
from rushhpc.store.keys import Keys

FILE_MARKER = b"rushhpc-file:"
RESERVED_OPTIONS = ("heartbeat_period", "heartbeat_expire", "log_thresholds", "launcher_options")


def split_options(options_and_args: dict[str, Any], reserved: tuple[str, ...] = RESERVED_OPTIONS) -> tuple[dict, dict]:
    """Separate rushhpc's options from the worker loop's arguments."""
    options = {k: options_and_args[k] for k in reserved if k in options_and_args}
    args = {k: v for k, v in options_and_args.items() if k not in reserved}
    return options, args


def check_arguments(worker_loop: Callable, args: dict[str, Any]) -> None:
    """Refuse, before any worker starts, arguments the loop cannot take: a worker calls
    ``worker_loop(rush, **args)``, and a misspelt or missing argument would fail every worker at
    once. A loop whose signature cannot be read (some builtins) is not checked.

    Example:
        >>> check_arguments(queue_loop, {"fnu": abs})
        Traceback (most recent call last):
        TypeError: queue_loop() got an unexpected keyword argument 'fnu' ...
    """
    import inspect

    try:
        sig = inspect.signature(worker_loop)
    except (TypeError, ValueError):
        return
    import difflib

    name = getattr(worker_loop, "__name__", None) or type(worker_loop).__name__
    params = [p for i, p in enumerate(sig.parameters.values()) if i > 0
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    problem = ""
    if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        # a misspelt name first: bind() would report the argument it then misses
        unexpected = [a for a in args if a not in {p.name for p in params}]
        if unexpected:
            close = difflib.get_close_matches(unexpected[0], [p.name for p in params], n=1)
            problem = (f"got an unexpected keyword argument {unexpected[0]!r}"
                       + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not problem:
        try:
            sig.bind(None, **args)
        except TypeError as e:
            problem = str(e)
    if problem:
        takes = ", ".join(p.name for p in params) or "no other arguments"
        raise TypeError(
            f"{name}() {problem}: no worker was started. A worker calls {name}(rush, **arguments); {name} "
            f"takes {takes}. Keywords {', '.join(RESERVED_OPTIONS)} are rushhpc's options, every other one "
            "goes to the loop."
        )


def dump(worker_loop: Callable, args: dict[str, Any], options: dict[str, Any]) -> bytes:
    """cloudpickle the loop and its arguments; an unpicklable one is a clear error now, not in a worker."""
    if not callable(worker_loop):
        raise RushPayloadError(f"worker_loop must be a function loop(rush, **args), got {type(worker_loop).__name__}")
    try:
        return cloudpickle.dumps({"worker_loop": worker_loop, "args": args, "options": options})
    except Exception as e:  # noqa: BLE001 - pickling raises many types
        raise RushPayloadError(
            f"cannot send the worker loop and its arguments to workers: {type(e).__name__}: {e}. "
            "Open connections, locks, file handles and generators cannot be pickled: create them "
            "inside the worker loop instead of passing them as arguments."
        ) from None


def store(
    client: RedisClient,
    keys: Keys,
    blob: bytes,
    max_object_size: int,
    large_objects_path: str | os.PathLike | None,
    *,
    key: bytes,
) -> str:
    """Store a start blob signed with the network's signing ``key``; return its start id."""
    start_id = uuid.uuid4().hex[:16]
    header = signing.SIGNED_MARKER + signing.sign(key, keys.network_id, start_id, blob).encode() + b":"
    if len(blob) > max_object_size:
        if not large_objects_path:
            raise RushPayloadError(
                f"the worker configuration is {len(blob) / 2**20:.1f} MiB, over the limit of "
                f"{max_object_size / 2**20:.1f} MiB for Redis. Pass large data as a file path the worker "
                "reads, or set rush_plan(large_objects_path=DIR) to a directory all workers can read."
            )
        directory = Path(large_objects_path).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{keys.network_id}-{start_id}.pkl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        client.set(keys.start(start_id), header + FILE_MARKER + str(path.resolve()).encode())
    else:
        client.set(keys.start(start_id), header + blob)
    return start_id


def load(raw_client: RedisClient, keys: Keys, start_id: str, *, key: bytes,
         key_file: str | os.PathLike = "the signing key file") -> dict[str, Any]:
    """Load a start blob (from Redis or the large-objects file) after checking its signature
    under ``key`` (read from ``key_file``, named in errors); unpickle nothing unsigned."""
    stored = raw_client.get(keys.start(start_id))
    if stored is None:
        raise RushConfigError(
            f"no worker configuration {start_id!r} in network {keys.network_id!r}: "
            "the network was reset, or the worker points at another Redis"
        )
    where = f"worker configuration {start_id!r} of network {keys.network_id!r}"
    head = len(signing.SIGNED_MARKER)
    if not stored.startswith(signing.SIGNED_MARKER) or stored[head + signing.DIGEST_HEX:head + signing.DIGEST_HEX + 1] != b":":
        raise RushConfigError(
            f"{where} is not signed: refusing to load it. It was written by an older rushhpc, or by someone "
            "with write access to Redis but without the network's signing key; start the workers again "
            "from a manager of this rushhpc version."
        )
    signature = stored[head:head + signing.DIGEST_HEX].decode("ascii", "replace")
    blob = stored[head + signing.DIGEST_HEX + 1:]
    if blob.startswith(FILE_MARKER):
        path = Path(blob[len(FILE_MARKER):].decode())
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise RushConfigError(
                f"cannot read the worker configuration file {path}: {e.strerror}. "
                "large_objects_path must be on a file system the workers see."
            ) from None
    if not signing.verify(key, keys.network_id, start_id, blob, signature):
        raise RushConfigError(
            f"{where} has a bad signature for the signing key in {key_file}: refusing to load it. Either "
            "someone with write access to Redis replaced it (it would run their code), or the manager signed "
            f"it with another key file (a different run directory, rush_plan(signing_key_file=...) or "
            f"{signing.KEY_ENV}): give the worker the manager's key file (--signing-key FILE)."
        )
    return cloudpickle.loads(blob)


def remove_files(keys: Keys, start_ids: list[str], large_objects_path: str | os.PathLike | None) -> int:
    """Delete the large-object files of these start ids (a network's `reset`). Returns how many."""
    if not large_objects_path:
        return 0
    directory = Path(large_objects_path).expanduser()
    n = 0
    for start_id in start_ids:
        path = directory / f"{keys.network_id}-{start_id}.pkl"
        try:
            path.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n

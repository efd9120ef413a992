"""A server's state folder: where it is, what files it holds, and writing them privately.

``~/.rushhpc/redis/<name>/`` (or ``$RUSHHPC_REDIS_HOME/<name>/``, or a folder given as such), 0700;
its files are listed in `rushhpc.server.service`'s docstring. Every file holding a secret is written
0600 and atomically (`write_private`); one start, stop or user change at a time holds its lock
(`locked`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from rushhpc.store.keys import validate_id

DEFAULT_NAME = "default"


def redis_home() -> Path:
    """Where named state folders go: ``$RUSHHPC_REDIS_HOME``, else ``~/.rushhpc/redis``.

    Example:
        >>> redis_home()
        PosixPath('/home/me/.rushhpc/redis')
    """
    return Path(os.environ.get("RUSHHPC_REDIS_HOME") or Path.home() / ".rushhpc" / "redis").expanduser()


def state_dir(name: str | None = None, directory: str | os.PathLike | None = None) -> Path:
    """The state folder of server ``name`` (default ``default``), or ``directory`` itself.

    Example:
        >>> state_dir("sweep")
        PosixPath('/home/me/.rushhpc/redis/sweep')
    """
    if directory is not None:
        return Path(directory).expanduser().absolute()
    return redis_home() / validate_id(name or DEFAULT_NAME, "server name")


@dataclasses.dataclass(frozen=True)
class Paths:
    """The files of one state folder.

    Example:
        >>> Paths(state_dir("sweep")).password
        PosixPath('/home/me/.rushhpc/redis/sweep/password')
    """

    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / "redis.conf"

    @property
    def acl(self) -> Path:
        return self.dir / "users.acl"

    @property
    def password(self) -> Path:
        return self.dir / "password"

    @property
    def state(self) -> Path:
        return self.dir / "server.json"

    @property
    def pid(self) -> Path:
        return self.dir / "redis.pid"

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def tls(self) -> Path:
        return self.dir / "tls"

    @property
    def users(self) -> Path:
        return self.dir / "users"

    def user_password(self, network: str) -> Path:
        return self.users / f"{network}.password"


def mkdir_private(path: Path) -> None:
    """Create ``path`` (and its parents) readable by this user only (0700, also when it was there).

    Example:
        >>> mkdir_private(Paths(state_dir()).users)
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str | bytes) -> Path:
    """Write a 0600 file atomically (a reader never sees half of it).

    Example:
        >>> write_private(Paths(state_dir()).password, "s3cret\\n")
    """
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
    os.replace(tmp, path)
    return path


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` as a private JSON file (``server.json``).

    Example:
        >>> write_json(Paths(state_dir()).state, {"port": 6379})
    """
    write_private(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, ``{}`` when it is missing or not one.

    Example:
        >>> read_json(Paths(state_dir()).state).get("port")
        6379
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """One start/stop/user change at a time per state folder (an flock on its ``.lock``).

    Example:
        >>> with locked(Paths(state_dir())):
        ...     ...
    """
    mkdir_private(paths.dir)
    fd = os.open(paths.dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

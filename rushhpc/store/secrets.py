"""Secret files: refuse one other users can read, read its first line, write one 0600 atomically.

Passwords, TLS keys, worker credentials and signing keys are files, never arguments: a
command line is visible to every user of a node (``ps``), a 0600 file to its owner only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rushhpc.errors import RushConfigError


def write_private(path: Path, text: str | bytes) -> Path:
    """Write a 0600 file atomically (a reader never sees half of it).

    Example:
        >>> write_private(Path("/tmp/pw"), "s3cret\\n").stat().st_mode & 0o777 == 0o600
        True
    """
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing tmp file keeps its mode through O_CREAT
        f.write(data)
    os.replace(tmp, path)
    return path


def tls_file(path: str, what: str) -> str:
    """A readable TLS file (CA or certificate) as a path string, or an error naming ``what`` and the path."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise RushConfigError(f"{what} {p} does not exist or is not a file")
    if not os.access(p, os.R_OK):
        raise RushConfigError(f"{what} {p} is not readable")
    return str(p)


def check_private_file(path: str | os.PathLike, what: str = "password file") -> Path:
    """Refuse a secret file other users can read or write (what a 0600 file passes)."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise RushConfigError(f"cannot read {what} {p}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RushConfigError(f"{what} {p} is readable by other users; run: chmod 600 {p}")
    return p


def read_secret_file(path: str | os.PathLike) -> str:
    """First line of a secret file; refuse files other users can read."""
    p = check_private_file(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise RushConfigError(f"cannot read password file {p}: {e.strerror}") from None
    return text.splitlines()[0].strip() if text else ""

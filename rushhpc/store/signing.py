"""The signing key of a network's worker configurations (HMAC-SHA256), kept outside Redis.

A manager signs every start blob (the cloudpickled worker loop and its arguments) with a
per-network secret that never goes into Redis; a worker checks the signature before it
unpickles anything. So write access to Redis alone no longer lets anyone run code in the
workers: they also need this file.

The key lives in a 0600 file, by default ``<run_dir>/signing.key`` (the network's run
directory, ``~/.rushhpc/runs/<network>/``, which workers on a shared file system already
read for the credentials file). ``RUSHHPC_SIGNING_KEY_FILE`` or
``rush_plan(signing_key_file=...)`` names another file. Workers are given the file's
*path* (``--signing-key``), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from rushhpc.errors import RushConfigError
from rushhpc.store.secrets import check_private_file

KEY_ENV = "RUSHHPC_SIGNING_KEY_FILE"
KEY_NAME = "signing.key"
SIGNED_MARKER = b"rushhpc-signed-v1:"
DIGEST_HEX = 64  # hex digits of an HMAC-SHA256
MIN_KEY_CHARS = 32


def key_path(run_dir: str | os.PathLike, configured: str | os.PathLike | None = None) -> Path:
    """The signing key file: ``configured`` (the plan's), else ``$RUSHHPC_SIGNING_KEY_FILE``, else
    ``<run_dir>/signing.key``.

    Example:
        >>> key_path("/home/me/.rushhpc/runs/sweep-1")
        PosixPath('/home/me/.rushhpc/runs/sweep-1/signing.key')
    """
    chosen = configured or os.environ.get(KEY_ENV)
    return Path(chosen).expanduser().absolute() if chosen else Path(run_dir).expanduser().absolute() / KEY_NAME


def ensure_key(path: str | os.PathLike) -> bytes:
    """The key in ``path``, created first (0600, 256 random bits, in a 0700 folder) when missing.

    An existing file that other users can read is refused (``chmod 600 FILE``).

    Example:
        >>> key = ensure_key(key_path(rush.run_dir))
    """
    p = Path(path).expanduser()
    if not p.exists():
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(secrets.token_hex(32) + "\n")
            # link, not rename: it fails if another manager made the file meanwhile (then theirs is
            # used), and nobody ever reads a half-written key
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                if not p.exists():
                    os.replace(tmp, p)
        except FileExistsError:
            pass
        except OSError as e:
            raise RushConfigError(
                f"cannot create the signing key file {p}: {e.strerror}. Make its folder writable, or point "
                f"rush_plan(signing_key_file=...) / {KEY_ENV} at a file you can write."
            ) from None
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass
    return read_key(p)


def read_key(path: str | os.PathLike) -> bytes:
    """The key in an existing 0600 key file; a missing, readable-by-others or malformed one is a
    `RushConfigError` naming the file and the fix.

    Example:
        >>> read_key("~/.rushhpc/runs/sweep-1/signing.key")
    """
    p = Path(path).expanduser()
    fix = (f"A worker needs the signing key file its manager created (on a cluster: a shared file system, "
           f"or --signing-key / {KEY_ENV} naming a copy)")
    if not p.exists():
        raise RushConfigError(f"the signing key file {p} does not exist. {fix}.")
    check_private_file(p, "signing key file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RushConfigError(f"cannot read the signing key file {p}: {getattr(e, 'strerror', None) or e}. {fix}.") \
            from None
    key = text.strip()
    if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
        raise RushConfigError(
            f"the signing key file {p} does not hold a key (expected one line of at least {MIN_KEY_CHARS} "
            "characters). Delete it and start the manager again to make a new one (workers started with the "
            "old key then refuse new worker configurations until restarted)."
        )
    return key.encode()


def _message(network_id: str, start_id: str, blob: bytes) -> bytes:
    # network and start id are part of what is signed: a signed blob cannot be copied to
    # another start id or another network that shares the key
    return b"rushhpc-start-v1\n" + network_id.encode() + b"\n" + start_id.encode() + b"\n" + blob


def sign(key: bytes, network_id: str, start_id: str, blob: bytes) -> str:
    """The HMAC-SHA256 (hex) of one start blob, bound to its network and start id.

    Example:
        >>> len(sign(b"k" * 32, "sweep-1", "5d1e", b"..."))
        64
    """
    return hmac.new(key, _message(network_id, start_id, blob), hashlib.sha256).hexdigest()


def verify(key: bytes, network_id: str, start_id: str, blob: bytes, signature: str) -> bool:
    """True when ``signature`` is `sign`'s for this blob (compared in constant time)."""
    return hmac.compare_digest(sign(key, network_id, start_id, blob), signature)

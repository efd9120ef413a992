"""The text a ``rushhpc redis`` server is configured with: its redis.conf and its ACL users.

The ACL has ``default`` (the admin) and one user per network, ``rushhpc-NETWORK``, allowed its
network's keys only (``~{NETWORK}:*``: every key of a network shares the hash tag), no channels,
and only the commands rushhpc sends (`NETWORK_COMMANDS`). Passwords are stored as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Sequence

from rushhpc.errors import RushConfigError
from rushhpc.server.folder import Paths, write_private
from rushhpc.store.keys import validate_id

USER_PREFIX = "rushhpc-"

# Every command rushhpc sends, directly or from its Lua scripts (Redis checks the commands
# a script calls, and their keys, against the caller's ACL too). Commands a server does not
# know (CLIENT SETINFO before 7.2) are left out when the user is created.
NETWORK_COMMANDS: tuple[str, ...] = (
    # connection: PING checks a connection; SELECT for a db other than 0; redis-py's
    # handshake (>= 5: CLIENT SETINFO; >= 6 on RESP3: CLIENT MAINT_NOTIFICATIONS) ignores
    # an error there, but a refusal costs a round trip and fills the ACL log
    "ping", "hello", "select", "client|setinfo", "client|setname", "client|maint_notifications",
    # the restart check reads the server's run id (network.py tolerates its absence)
    "info|server",
    # Lua: redis-py sends EVALSHA and loads a script (SCRIPT EXISTS in pipelines) when
    # the server lacks it; scripts read the server clock
    "evalsha", "eval", "script|load", "script|exists", "time",
    # keys and strings: start blobs, heartbeats, kill lists' expiry, reset
    "get", "set", "exists", "unlink", "del", "expire", "pttl",
    # SCAN (reset, listing) is keyless: Redis cannot filter it by key pattern (see docs/security.md)
    "scan",
    # hashes, lists, sets, the log stream, transactions
    "hset", "hsetnx", "hget", "hmget", "hgetall", "hdel", "hincrby",
    "lpush", "rpush", "rpop", "llen", "lrange", "lrem", "blpop", "blmove",
    "sadd", "srem", "smembers", "scard", "smove", "sunion",
    "xadd", "xrange", "xtrim",
    "multi", "exec", "discard",
)



def new_password() -> str:
    """A fresh random password (the admin's, a network user's).

    Example:
        >>> len(new_password()) > 40
        True
    """
    return secrets.token_urlsafe(32)


def acl_hash(password: str) -> str:
    """An ACL password rule: ``#`` and the SHA-256 of the password (the password is never stored).

    Example:
        >>> acl_hash("x")[:9]
        '#2d711642'
    """
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def user_name(network: str) -> str:
    """The ACL user of a network.

    Example:
        >>> user_name("sweep1")
        'rushhpc-sweep1'
    """
    return USER_PREFIX + validate_id(network)


def acl_rules(network: str, password_hash: str) -> list[str]:
    """The ACL SETUSER rules of a network user: its password, its network's keys only, no
    channels, and only the commands rushhpc sends.

    Example:
        >>> acl_rules("sweep1", acl_hash("pw"))[:5]
        ['reset', 'on', '#30c9...', '~{sweep1}:*', 'resetchannels']
    """
    keys = f"~{{{validate_id(network)}}}:*"
    return ["reset", "on", password_hash, keys, "resetchannels", "-@all", *(f"+{c}" for c in NETWORK_COMMANDS)]


def write_acl(paths: Paths, password: str) -> None:
    """The ACL file with ``default`` (the admin, this password) first; network users kept.

    Example:
        >>> write_acl(Paths(state_dir("sweep")), read_secret_file(Paths(state_dir("sweep")).password))
    """
    kept: list[str] = []
    if paths.acl.exists():
        kept = [ln for ln in paths.acl.read_text().splitlines() if ln.strip() and not ln.startswith("user default ")]
    write_private(paths.acl, "\n".join([f"user default on {acl_hash(password)} ~* &* +@all", *kept]) + "\n")


def _q(value: str | Path) -> str:
    """A redis.conf string value, double-quoted."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_maxmemory(value: str) -> str:
    """A ``maxmemory`` size as redis.conf takes it (lower case), or a clear error naming ``--maxmemory``.

    Example:
        >>> check_maxmemory("4GB")
        '4gb'
    """
    if not re.fullmatch(r"\d+(b|k|kb|m|mb|g|gb)?", value.strip().lower()):
        raise RushConfigError(f"--maxmemory takes a size such as 4gb or 512mb, got {value!r}")
    return value.strip().lower()


def conf_text(paths: Paths, *, bind: Sequence[str], port: int, appendonly: bool = False, fsync: str = "everysec",
              maxmemory: str | None = None, tls: dict[str, str] | None = None, tls_auth_clients: bool = False) -> str:
    """The redis.conf of a state folder's server: daemonized, its files in the folder, the ACL file
    (no password in the conf), ``noeviction`` (an evicted task key would be a silently lost task),
    no snapshots; with ``tls`` (the ``ca``, ``cert`` and ``key`` files) the port is a TLS port.

    Example:
        >>> print(conf_text(Paths(state_dir()), bind=["127.0.0.1"], port=6379))
    """
    lines = [
        "# written by `rushhpc redis start`; rewritten on every start",
        "daemonize yes",
        f"pidfile {_q(paths.pid)}",
        f"logfile {_q(paths.log)}",
        f"dir {_q(paths.data)}",
        "bind " + " ".join(bind),
        "protected-mode yes",
        f"aclfile {_q(paths.acl)}",
        "maxmemory-policy noeviction",
        'save ""',
        f"appendonly {'yes' if appendonly else 'no'}",
        f"appendfsync {fsync}",
    ]
    if maxmemory:
        lines.append(f"maxmemory {maxmemory}")
    if tls:
        lines += [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {_q(tls['cert'])}",
            f"tls-key-file {_q(tls['key'])}",
            f"tls-ca-cert-file {_q(tls['ca'])}",
            f"tls-auth-clients {'yes' if tls_auth_clients else 'no'}",
            'tls-protocols "TLSv1.2 TLSv1.3"',
        ]
    else:
        lines.append(f"port {port}")
    return "\n".join(lines) + "\n"

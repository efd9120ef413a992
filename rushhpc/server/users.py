"""The network users of a ``rushhpc redis`` server: ``rushhpc redis user add|remove|list``.

One ACL user per network, ``rushhpc-NETWORK``, restricted to its network's keys and the commands
rushhpc sends (`rushhpc.server.conf.acl_rules`); its password in a 0600 file of the state folder
(``users/NETWORK.password``). ACL SAVE keeps the users across restarts.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import redis

from rushhpc.errors import RushConfigError
from rushhpc.server.conf import NETWORK_COMMANDS, USER_PREFIX, acl_hash, acl_rules, new_password, user_name
from rushhpc.server.folder import Paths, locked, mkdir_private, read_json, write_private
from rushhpc.server.service import admin_config, client_config, usage
from rushhpc.store.connection import RedisClient
from rushhpc.store.keys import validate_id
from rushhpc.store.secrets import read_secret_file


def set_network_user(client: RedisClient, network: str, password: str) -> list[str]:
    """Create or update the ACL user ``rushhpc-NETWORK`` (ACL SETUSER). Commands this server
    does not know are left out; returns them.

    Example:
        >>> set_network_user(admin_config(Paths(state_dir("sweep"))).connect(), "net1", new_password())
        []
    """
    rules = acl_rules(network, acl_hash(password))
    skipped: list[str] = []
    for _ in range(len(NETWORK_COMMANDS) + 1):
        try:
            client.execute_command("ACL", "SETUSER", user_name(network), *rules)
            return skipped
        except redis.ResponseError as e:
            m = re.search(r"modifier '([^']+)'", str(e))
            if not m or m.group(1) not in rules or not m.group(1).startswith("+"):
                raise RushConfigError(f"ACL SETUSER {user_name(network)} failed: {e}") from None
            rules.remove(m.group(1))
            skipped.append(m.group(1)[1:])
    raise RushConfigError(f"ACL SETUSER {user_name(network)} failed")


def _acl_save(client: RedisClient, paths: Paths | None) -> bool:
    """ACL SAVE (the user survives a restart); False when the server has no ACL file."""
    try:
        client.execute_command("ACL", "SAVE")
    except redis.ResponseError:
        return False
    if paths is not None and paths.acl.exists():
        os.chmod(paths.acl, 0o600)
    return True


def add_user(directory: Path, network: str) -> dict[str, Any]:
    """Create the network user ``rushhpc-NETWORK`` on this folder's server, with a 0600
    password file (kept when one exists: running again re-applies the rules, e.g. after an
    upgrade, without changing the password). Returns its URL and usage.

    Example:
        >>> add_user(state_dir("sweep"), "net1")["password_file"]
        '/home/me/.rushhpc/redis/sweep/users/net1.password'
    """
    paths = Paths(Path(directory))
    validate_id(network)
    with locked(paths):
        st = read_json(paths.state)
        admin = admin_config(paths, st)
        client = admin.connect()
        pfile = paths.user_password(network)
        existed = pfile.exists()
        password = read_secret_file(pfile) if existed else new_password()
        skipped = set_network_user(client, network, password)
        if not existed:
            mkdir_private(paths.users)
            write_private(pfile, password + "\n")
        saved = _acl_save(client, paths)
        client.close()
    cfg = client_config(st, username=user_name(network))
    return {"network": network, "username": user_name(network), "created": not existed, "persisted": saved,
            "skipped_commands": skipped, **usage(cfg, pfile), "tls_ca": cfg.tls_ca}


def remove_user(directory: Path, network: str) -> dict[str, Any]:
    """Delete the network user (its connections are closed by Redis) and its password file.

    Example:
        >>> remove_user(state_dir("sweep"), "net1")["removed"]
        True
    """
    paths = Paths(Path(directory))
    with locked(paths):
        client = admin_config(paths).connect()
        n = int(client.execute_command("ACL", "DELUSER", user_name(network)))
        _acl_save(client, paths)
        client.close()
        with contextlib.suppress(FileNotFoundError):
            paths.user_password(network).unlink()
    return {"network": network, "username": user_name(network), "removed": bool(n)}


def list_users(directory: Path) -> list[dict[str, Any]]:
    """The network users of this folder's server.

    Example:
        >>> [u["username"] for u in list_users(state_dir("sweep"))]
        ['rushhpc-net1']
    """
    paths = Paths(Path(directory))
    client = admin_config(paths).connect()
    names = client.execute_command("ACL", "USERS")
    client.close()
    out = []
    for name in sorted(names):
        if name.startswith(USER_PREFIX):
            net = name[len(USER_PREFIX):]
            pf = paths.user_password(net)
            out.append({"network": net, "username": name, "password_file": str(pf) if pf.exists() else None})
    return out

"""``rushhpc redis start|stop|status|user``: a Redis for a cluster (`rushhpc.server.service`, `rushhpc.server.users`).

It binds where asked, always with a generated password written to a 0600 file, optionally
with persistence (``--appendonly``) and TLS, and prints the URL and the password file to
use (never the password). ``user add NETWORK`` makes an ACL user restricted to one
network's keys and the commands rushhpc uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rushhpc import defaults
from rushhpc.core.states import ServerState
from rushhpc.server import service as rs
from rushhpc.server import users
from rushhpc.server.folder import DEFAULT_NAME, state_dir
from rushhpc.ui.cli.common import print_json


def _dir(args: argparse.Namespace) -> Path:
    return state_dir(args.name, args.dir)


def _print_usage(doc: dict[str, Any], who: str = "") -> None:
    print(f"  URL            {doc['url']}")
    print(f"  password file  {doc['password_file']}")
    for k, label in (("tls_ca", "TLS CA"), ("tls_cert", "TLS client cert"), ("tls_key", "TLS client key")):
        if doc.get(k):
            print(f"  {label:<14} {doc[k]}")
    print(f"Use it{who}:")
    print(f"  rushhpc workers -n NETWORK {doc['cli']}")
    print(f"  {doc['python']}")
    print(f"  {doc['env']}")


def _describe(doc: dict[str, Any]) -> str:
    bits = [f"pid {doc['pid']}"] if doc.get("pid") else []
    if doc.get("version"):
        bits.append(f"redis {doc['version']}")
    bits.append(f"bind {' '.join(doc.get('bind') or [])}, port {doc.get('port')}")
    bits.append("TLS" + (" with client certificates" if doc.get("tls_auth_clients") else "") if doc.get("tls") else "no TLS")
    bits.append(f"appendonly (fsync {doc.get('fsync') or 'everysec'})" if doc.get("appendonly") else "no persistence")
    if doc.get("maxmemory"):
        bits.append(f"maxmemory {doc['maxmemory']}")
    return ", ".join(bits)


def _start(args: argparse.Namespace) -> int:
    opts = rs.StartOptions(
        bind=args.bind or ["127.0.0.1"], port=args.port, host=args.host, appendonly=args.appendonly,
        fsync=args.fsync, maxmemory=args.maxmemory, tls=args.tls, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        tls_auth_clients=args.tls_auth_clients, redis_server=args.redis_server, timeout=args.timeout,
    )
    doc = rs.start(_dir(args), opts)
    if args.json:
        print_json(doc)
        return 0
    if doc.get("already_running"):
        print(f"Redis {doc['name']!r} is already running ({_describe(doc)}); options of this call were not "
              "applied: stop it first to change them")
    else:
        print(f"Redis {doc['name']!r} started ({_describe(doc)})")
    _print_usage(doc)
    print(f"  state folder   {doc['dir']}  (log: redis.log)")
    print(f"One user per network (its keys only): rushhpc redis user add NETWORK{_where(args)}")
    if not doc.get("appendonly"):
        print("No persistence: a restart of this Redis loses every network (use --appendonly for long runs).")
    return 0


def _where(args: argparse.Namespace) -> str:
    if args.dir:
        return f" --dir {args.dir}"
    return f" --name {args.name}" if args.name and args.name != DEFAULT_NAME else ""


def _status(args: argparse.Namespace) -> int:
    doc = rs.status(_dir(args))
    if args.json:
        print_json(doc)
    elif doc["state"] == ServerState.ABSENT:
        print(f"no Redis was started in {doc['dir']} (rushhpc redis start{_where(args)})")
    elif doc["state"] == ServerState.STOPPED:
        print(f"Redis {doc['name']!r} is stopped" + (f" (stale pid file: {doc['stale_pid_file']})"
                                                      if doc.get("stale_pid_file") else ""))
        print(f"  start it again, same port and password: rushhpc redis start{_where(args)}")
    elif doc["state"] == ServerState.NOT_ANSWERING:
        print(f"Redis {doc['name']!r}: process {doc['pid']} runs but does not answer: {doc.get('error')}")
    else:
        extra = f"; up {doc.get('uptime_s')} s, {doc.get('used_memory')} used, {doc.get('clients')} clients"
        if doc.get("tls_cert_expires"):
            extra += f", certificate valid until {doc['tls_cert_expires']}"
        print(f"Redis {doc['name']!r} is running ({_describe(doc)}{extra})")
        _print_usage(doc)
    return 0 if doc["state"] == ServerState.RUNNING else 1


def _stop(args: argparse.Namespace) -> int:
    doc = rs.stop(_dir(args), timeout=args.timeout, force=args.force)
    if args.json:
        print_json(doc)
    else:
        print(doc["message"])
    return 0 if doc["stopped"] else 1


def _user_add(args: argparse.Namespace) -> int:
    doc = users.add_user(_dir(args), args.network)
    if args.json:
        print_json(doc)
        return 0
    verb = "created" if doc["created"] else "updated (password unchanged)"
    print(f"ACL user {doc['username']} {verb}: keys {{{args.network}}}:* only, the commands rushhpc uses")
    if doc["skipped_commands"]:
        print(f"  (this Redis does not know {', '.join(doc['skipped_commands'])}: left out)")
    if not doc["persisted"]:
        print("  warning: the server has no ACL file; the user is lost when it restarts")
    _print_usage(doc, " for this network")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    doc = users.remove_user(_dir(args), args.network)
    if args.json:
        print_json(doc)
    else:
        print(f"ACL user {doc['username']} " + ("removed (its connections were closed)" if doc["removed"] else
                                               "did not exist"))
    return 0 if doc["removed"] else 1


def _user_list(args: argparse.Namespace) -> int:
    rows = users.list_users(_dir(args))
    if args.json:
        print_json(rows)
    elif not rows:
        print("no network users")
    else:
        for r in rows:
            print(f"{r['username']}  {r['password_file'] or '(no password file here)'}")
    return 0


def _add_where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=DEFAULT_NAME,
                   help="server name: state folder $RUSHHPC_REDIS_HOME/NAME (default ~/.rushhpc/redis/default)")
    p.add_argument("--dir", help="state folder (instead of --name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    r = sub.add_parser("redis", help="start, stop and inspect a Redis for a cluster; per-network ACL users")
    rsub = r.add_subparsers(dest="redis_command", required=True, metavar="ACTION")

    st = rsub.add_parser("start", help="start a Redis (generated password, 0600 files); prints its URL")
    _add_where(st)
    st.add_argument("--bind", action="append", metavar="ADDR",
                    help="address to listen on, repeatable (default 127.0.0.1; 0.0.0.0 for every interface)")
    st.add_argument("--port", type=int, help="port (default: the last one if free, else any free port)")
    st.add_argument("--host", help="host name clients use in the URL (default: from --bind; this host's name "
                                   "for 0.0.0.0); generated certificates name it")
    st.add_argument("--appendonly", action="store_true", help="persistence: append-only file, fsync every second")
    st.add_argument("--fsync", choices=("everysec", "always"), default="everysec",
                    help="with --appendonly: 'always' fsyncs every write before Redis answers, so a finished "
                         "result survives a crash of the machine (slower; see docs/benchmarks.md)")
    st.add_argument("--maxmemory", metavar="SIZE", help="memory limit (e.g. 8gb); writes fail beyond it (noeviction)")
    st.add_argument("--tls", action="store_true", help="TLS only (rediss://); certificates generated unless given")
    st.add_argument("--tls-cert", metavar="FILE", help="the server's certificate (with --tls-key and --tls-ca)")
    st.add_argument("--tls-key", metavar="FILE", help="the server's 0600 key file")
    st.add_argument("--tls-ca", metavar="FILE", help="the CA clients verify the server with (and client certs against)")
    st.add_argument("--tls-auth-clients", action="store_true",
                    help="require client certificates signed by the CA (one is generated for rushhpc's clients)")
    st.add_argument("--redis-server", metavar="PATH", help="redis-server binary (default: found on PATH; "
                                                           "$RUSHHPC_REDIS_SERVER)")
    st.add_argument("--timeout", type=float, default=defaults.REDIS_START_TIMEOUT, help=argparse.SUPPRESS)
    st.set_defaults(func=_start)

    s = rsub.add_parser("status", help="running or not (pid file, process, PING); exit 1 when not running")
    _add_where(s)
    s.set_defaults(func=_status)

    sp = rsub.add_parser("stop", help="stop the redis-server started here (by its pid, after checking it)")
    _add_where(sp)
    sp.add_argument("--timeout", type=float, default=defaults.REDIS_STOP_TIMEOUT,
                    help=f"seconds to wait after SIGTERM (default {defaults.REDIS_STOP_TIMEOUT:g})")
    sp.add_argument("--force", action="store_true", help="SIGKILL it when SIGTERM did not stop it in time")
    sp.set_defaults(func=_stop)

    u = rsub.add_parser("user", help="ACL users restricted to one network's keys")
    usub = u.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    ua = usub.add_parser("add", help="create user rushhpc-NETWORK with a 0600 password file; prints its URL")
    ua.add_argument("network", help="network id")
    _add_where(ua)
    ua.set_defaults(func=_user_add)
    ur = usub.add_parser("remove", help="delete user rushhpc-NETWORK and its password file")
    ur.add_argument("network", help="network id")
    _add_where(ur)
    ur.set_defaults(func=_user_remove)
    ul = usub.add_parser("list", help="the network users")
    _add_where(ul)
    ul.set_defaults(func=_user_list)


__all__ = ["register"]

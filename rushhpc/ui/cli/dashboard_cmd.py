"""``rushhpc dashboard``: serve a local web page of a network (workers, tasks, logs, results).

Bound to 127.0.0.1 by default. Bound elsewhere, it prints an access token once and the page
asks for it. The stop buttons work only with ``--allow-control``. It reads networks through
`Network` views and never starts a Redis."""

from __future__ import annotations

import argparse
import socket
from typing import Any

from rushhpc.errors import RushConfigError
from rushhpc.network.view import Network
from rushhpc.ui.cli.common import add_redis_options, redis_from_args

DEFAULT_PORT = 8765


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        raise RushConfigError(f"cannot listen on {host}:{port}: {e.strerror or e} (pick another --port)")
    sock.set_inheritable(True)
    return sock


def _dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from rushhpc.ui.dashboard.app import create_app
        from rushhpc.ui.dashboard.security import is_loopback, new_token
    except ImportError as e:
        raise RushConfigError(f"the dashboard needs the dashboard extra ({e.name} is missing): "
                              "pip install 'rushhpc[dashboard]'")
    if not 0.1 <= args.interval <= 3600:
        raise RushConfigError(f"--interval must be between 0.1 and 3600 seconds, got {args.interval:g}")
    cfg = redis_from_args(args)
    network = args.network
    if network:
        Network.open(network, cfg)  # a missing network is the same error as elsewhere
    loopback = is_loopback(args.host)
    token = new_token() if args.require_token or not loopback else None
    app = create_app(cfg, network, allow_control=args.allow_control, token=token, loopback=loopback,
                     interval=args.interval)
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = socket.gethostname() if args.host in ("0.0.0.0", "::", "") else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{port}/" + (f"?network={network}" if network else "")
    control = "stop buttons enabled (--allow-control)" if args.allow_control else "read only (stop buttons need --allow-control)"
    print(f"rushhpc dashboard: {url}  Redis at {cfg.address}; {control}; Ctrl-C stops it", flush=True)
    if token:
        print(f"rushhpc dashboard: access token (shown once; the page asks for it): {token}", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=2,
                            lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        app.state.dashboard.close()
        sock.close()
    return 0


def register(sub: Any) -> None:
    d = sub.add_parser("dashboard", help="a local web page of a network: workers, tasks, logs, results, stop buttons")
    d.add_argument("--network", "-n", help="the network shown first (the page lists every network on the Redis)")
    add_redis_options(d)
    d.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)")
    d.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs the access token printed at start)")
    d.add_argument("--require-token", action="store_true",
                   help="ask for the access token on 127.0.0.1 too (a shared login node: other users reach it)")
    d.add_argument("--allow-control", action="store_true", help="enable the terminate/kill buttons")
    d.add_argument("--interval", type=float, default=1.0, help="seconds between live updates (default 1)")
    d.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help=argparse.SUPPRESS)
    d.set_defaults(func=_dashboard)


__all__ = ["register"]


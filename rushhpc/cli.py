"""The ``rushhpc`` command line (``python -m rushhpc``).

Commands that look at or act on an existing network open it as a `Network` view (or
attach a manager with `Rush.attach`): they never start a private Redis, and a missing
network is an error. Redis comes from ``--redis URL`` (with ``--password-file``), else
``RUSHHPC_REDIS_URL``, else the plan file (``RUSHHPC_CONFIG``); a password is never an
argument, so none lands in ``ps`` output or shell history."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._version import __version__
from .config import RedisConfig, current_plan, env_config, redis_config
from .errors import RushConfigError, RushError
from .registry import launchers


def _worker(args: argparse.Namespace) -> int:
    from .spec import WorkerSpec
    from .worker import run_worker

    return run_worker(WorkerSpec(
        network_id=args.network,
        start_id=args.start_id,
        credentials=args.credentials,
        worker_id=args.worker_id,
        heartbeat_period=args.heartbeat_period,
        heartbeat_expire=args.heartbeat_expire,
        launcher=args.launcher,
        managed=args.managed,
        watch_pid=args.watch_pid,
        walltime=args.walltime,
        walltime_margin=args.walltime_margin,
    ))


def redis_from_args(args: argparse.Namespace) -> RedisConfig:
    """The Redis a command talks to: --redis/--password-file, RUSHHPC_REDIS_URL, the plan.
    Never an embedded one: a command that inspects a network must name its Redis."""
    url = getattr(args, "redis", None)
    password_file = getattr(args, "password_file", None)
    if url:
        return redis_config(url=url, password_file=password_file)
    cfg = env_config() or current_plan().config
    if cfg is None:
        raise RushConfigError(
            "no Redis is configured: pass --redis redis://HOST:PORT (with --password-file FILE), or set "
            "RUSHHPC_REDIS_URL, or a plan file in RUSHHPC_CONFIG; a command that inspects a network never "
            "starts a private Redis"
        )
    if password_file:
        cfg = redis_config(url=cfg.url(), password_file=password_file)
    return cfg


def open_network(args: argparse.Namespace) -> Any:
    """The network named on the command line, as a read-only `Network` view."""
    from .network import Network

    if not args.network:
        raise RushConfigError("which network? Pass --network NAME (rushhpc networks lists them)")
    return Network.open(args.network, redis_from_args(args))


def add_network_options(p: argparse.ArgumentParser, positional: bool = False) -> None:
    """--network/-n, --redis, --password-file: every subcommand that talks to a network."""
    if positional:
        p.add_argument("network_pos", nargs="?", metavar="NETWORK", help="network id (or --network)")
    p.add_argument("--network", "-n", help="network id")
    p.add_argument("--redis", metavar="URL", help="Redis URL without the password (default: $RUSHHPC_REDIS_URL)")
    p.add_argument("--password-file", metavar="FILE", help="0600 file whose first line is the Redis password")


def _import(spec: str) -> Any:
    """``package.module:function`` -> the function."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise RushError(f"expected MODULE:FUNCTION, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RushError(f"cannot import {spec}: {e}") from None


def _parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise RushError(f"--set takes KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _script(args: argparse.Namespace) -> int:
    from .rush import rsh

    rush = rsh(args.network, config=redis_config(url=args.redis, password_file=args.password_file)
               if args.redis else None)
    loop = _import(args.loop)
    options = _parse_sets(args.set)
    launcher_options = _parse_sets(args.option)
    if launcher_options:
        options["launcher_options"] = launcher_options
    if args.worker_type in ("slurm", "pbs"):
        print(rush.render_script(loop, n_workers=args.n_workers, worker_type=args.worker_type, **options), end="")
    else:
        print(rush.worker_script(loop, **options))
    return 0


def _monitor(args: argparse.Namespace) -> int:
    import json
    import time

    from .rush import Rush

    if args.network_pos and not args.network:
        args.network = args.network_pos
    if not args.network:
        raise RushConfigError("which network? rushhpc monitor NETWORK (rushhpc networks lists them)")
    rush = Rush.attach(args.network, redis_from_args(args))
    if args.keep_workers:
        rush.start_monitor(interval=args.interval, keep_workers=True, restart_budget=args.restart_budget)
    seen: dict[str, str] = {}
    try:
        while True:
            lost = rush.detect_lost_workers(poll_scheduler=True if args.once else None) if not args.keep_workers else []
            rows = rush.worker_rows()
            if args.json:
                print(json.dumps({"network": rush.network_id, "lost": lost, "workers": rows,
                                  "tasks": rush.counts_by_state()}), flush=True)
            else:
                for row in rows:
                    state = f"{row['state']}" + (f" ({row['reason']})" if row["reason"] else "")
                    if seen.get(row["worker_id"]) != state:
                        seen[row["worker_id"]] = state
                        print(f"{time.strftime('%H:%M:%S')} {row['worker_id']} {state} job={row['job_id'] or '-'}",
                              flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 130
    finally:
        rush.stop_monitor()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rushhpc", description="Decentralized parallel computing on HPC clusters.")
    parser.add_argument("--version", action="version", version=f"rushhpc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run one worker of a network (what worker_script() prints)")
    w.add_argument("--network", required=True, help="network id")
    w.add_argument("--start-id", required=True, help="id of the worker configuration stored by the manager")
    w.add_argument("--credentials", help="0600 JSON file with the Redis URL (default: $RUSHHPC_REDIS_URL)")
    w.add_argument("--worker-id", help="worker id (default: a new random id)")
    w.add_argument("--heartbeat-period", type=float, help="seconds between heartbeats (default 10)")
    w.add_argument("--heartbeat-expire", type=float, help="seconds until a silent worker is lost (default 60)")
    w.add_argument("--launcher", default="script", help=argparse.SUPPRESS)
    w.add_argument("--managed", action="store_true", help=argparse.SUPPRESS)
    w.add_argument("--watch-pid", type=int, help=argparse.SUPPRESS)
    w.add_argument("--walltime", type=float, help="seconds the job may run; the worker stops taking tasks near the end")
    w.add_argument("--walltime-margin", type=float, help="seconds before the end to stop taking tasks")
    w.set_defaults(func=_worker)

    sc = sub.add_parser("script", help="print the exact batch script (or worker command) a start would use")
    sc.add_argument("loop", help="the worker loop, as MODULE:FUNCTION (e.g. rushhpc.loops:queue_loop)")
    sc.add_argument("--network", "-n", help="network id (default: a new one)")
    sc.add_argument("--redis", metavar="URL", help="Redis URL without the password (default: $RUSHHPC_REDIS_URL)")
    sc.add_argument("--password-file", metavar="FILE", help="0600 file whose first line is the Redis password")
    sc.add_argument("--worker-type", default="slurm", choices=sorted({*launchers(), "script"} - {"local", "ssh"}))
    sc.add_argument("--n-workers", type=int, default=1)
    sc.add_argument("--set", action="append", metavar="KEY=VALUE", help="a worker loop argument or option (YAML value)")
    sc.add_argument("--option", action="append", metavar="KEY=VALUE", help="a launcher option (time, partition, ...)")
    sc.set_defaults(func=_script)

    mo = sub.add_parser("monitor", help="watch a network's workers; detect and reconcile lost ones")
    add_network_options(mo, positional=True)
    mo.add_argument("--interval", type=float, default=5.0)
    mo.add_argument("--once", action="store_true", help="one round, then exit")
    mo.add_argument("--json", action="store_true", help="one JSON document per round")
    mo.add_argument("--keep-workers", action="store_true",
                    help="replace lost workers, started the way they were (from their launch records)")
    mo.add_argument("--restart-budget", type=int, default=10, help="replacements at most (with --keep-workers)")
    mo.set_defaults(func=_monitor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RushError as e:
        print(f"rushhpc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``rushhpc`` command line (``python -m rushhpc``)."""

from __future__ import annotations

import argparse
import sys

from .errors import RushError


def _worker(args: argparse.Namespace) -> int:
    from .worker import run_worker

    return run_worker(
        network_id=args.network,
        start_id=args.start_id,
        credentials=args.credentials,
        worker_id=args.worker_id,
        heartbeat_period=args.heartbeat_period,
        heartbeat_expire=args.heartbeat_expire,
        launcher=args.launcher,
        watch_pid=args.watch_pid,
        walltime=args.walltime,
        walltime_margin=args.walltime_margin,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rushhpc", description="Decentralized parallel computing on HPC clusters.")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run one worker of a network (what worker_script() prints)")
    w.add_argument("--network", required=True, help="network id")
    w.add_argument("--start-id", required=True, help="id of the worker configuration stored by the manager")
    w.add_argument("--credentials", help="0600 JSON file with the Redis URL (default: $RUSHHPC_REDIS_URL)")
    w.add_argument("--worker-id", help="worker id (default: a new random id)")
    w.add_argument("--heartbeat-period", type=float, help="seconds between heartbeats (default 10)")
    w.add_argument("--heartbeat-expire", type=float, help="seconds until a silent worker is lost (default 60)")
    w.add_argument("--launcher", default="script", help=argparse.SUPPRESS)
    w.add_argument("--watch-pid", type=int, help=argparse.SUPPRESS)
    w.add_argument("--walltime", type=float, help="seconds the job may run; the worker stops taking tasks near the end")
    w.add_argument("--walltime-margin", type=float, help="seconds before the end to stop taking tasks")
    w.set_defaults(func=_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RushError as e:
        print(f"rushhpc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

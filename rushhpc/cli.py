"""The ``rushhpc`` command line (``python -m rushhpc``).

Redis comes from the usual places (``RUSHHPC_CONFIG`` plan file, ``RUSHHPC_REDIS_URL``);
never from an argument, so no password lands in ``ps`` output or shell history."""

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


def _import(spec: str):
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

    rush = rsh(args.network)
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

    from .rush import rsh

    rush = rsh(args.network)
    if args.keep_workers:
        print("rushhpc monitor: --keep-workers needs the manager's launchers; use Rush.start_monitor(keep_workers=True)",
              file=sys.stderr)
        return 2
    seen: dict[str, str] = {}
    while True:
        lost = rush.detect_lost_workers(poll_scheduler=True if args.once else None)
        info = rush.worker_info
        if args.json:
            rows = info.astype(object).where(info.notna(), None).to_dict("records")
            for row in rows:
                for k in ("started_at", "stopped_at"):
                    row[k] = row[k].isoformat() if row[k] is not None else None
            print(json.dumps({"network": rush.network_id, "lost": lost, "workers": rows,
                              "tasks": {"queued": rush.n_queued_tasks, "running": rush.n_running_tasks,
                                        "finished": rush.n_finished_tasks, "failed": rush.n_failed_tasks}}),
                  flush=True)
        else:
            for row in info.itertuples():
                state = f"{row.state}" + (f" ({row.reason})" if row.reason else "")
                if seen.get(row.worker_id) != state:
                    seen[row.worker_id] = state
                    print(f"{time.strftime('%H:%M:%S')} {row.worker_id} {state} job={row.job_id or '-'}", flush=True)
        if args.once:
            return 0
        time.sleep(args.interval)


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

    sc = sub.add_parser("script", help="print the exact batch script (or worker command) a start would use")
    sc.add_argument("loop", help="the worker loop, as MODULE:FUNCTION (e.g. rushhpc.loops:queue_loop)")
    sc.add_argument("--network", help="network id (default: a new one)")
    sc.add_argument("--worker-type", default="slurm", choices=["slurm", "pbs", "script"])
    sc.add_argument("--n-workers", type=int, default=1)
    sc.add_argument("--set", action="append", metavar="KEY=VALUE", help="a worker loop argument or option (YAML value)")
    sc.add_argument("--option", action="append", metavar="KEY=VALUE", help="a launcher option (time, partition, ...)")
    sc.set_defaults(func=_script)

    mo = sub.add_parser("monitor", help="watch a network's workers; detect and reconcile lost ones")
    mo.add_argument("network")
    mo.add_argument("--interval", type=float, default=5.0)
    mo.add_argument("--once", action="store_true", help="one round, then exit")
    mo.add_argument("--json", action="store_true", help="one JSON document per round")
    mo.add_argument("--keep-workers", action="store_true", help=argparse.SUPPRESS)
    mo.set_defaults(func=_monitor)
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

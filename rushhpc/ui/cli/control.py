"""Commands that act on a network: ``monitor``, ``stop``, ``reset``.

They attach a manager (`Rush.attach`): it sees every worker from the records in Redis,
whoever started it, and can stop it; it never starts a Redis."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rushhpc import defaults
from rushhpc.core.states import WorkerState
from rushhpc.errors import RushConfigError
from rushhpc.ui.cli.common import add_network_options, confirm, flatten_ids, network_name, print_json, redis_from_args


def _attach(args: argparse.Namespace) -> Any:
    from rushhpc.manager.rush import Rush

    return Rush.attach(network_name(args), redis_from_args(args))


def _monitor(args: argparse.Namespace) -> int:
    rush = _attach(args)
    if args.adapt:
        lo, sep, hi = args.adapt.partition(":")
        if not sep or not lo.isdigit() or not hi.isdigit():
            raise RushConfigError(f"--adapt takes MIN:MAX (e.g. 0:16), got {args.adapt!r}")
        rush.adapt(None, minimum=int(lo), maximum=int(hi), idle_timeout=args.idle_timeout, interval=args.interval)
    elif args.keep_workers:
        rush.start_monitor(interval=args.interval, keep_workers=True, restart_budget=args.restart_budget)
    seen: dict[str, str] = {}
    try:
        while True:
            background = args.keep_workers or args.adapt
            lost = [] if background else rush.detect_lost_workers(poll_scheduler=True if args.once else None)
            rows = rush.worker_rows()
            if args.json:
                print_json({"network": rush.network_id, WorkerState.LOST: lost, "workers": rows, "tasks": rush.counts_by_state()})
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
    finally:
        rush.stop_monitor()


def _stop(args: argparse.Namespace) -> int:
    ids = flatten_ids(args.worker_ids)
    if not ids and not args.all:
        raise RushConfigError("which workers? Name worker ids, or pass --all (rushhpc workers lists them)")
    rush = _attach(args)
    how = "kill" if args.kill else "terminate"
    known = set(rush.worker_ids) | set(rush.worker_ids_in(WorkerState.PENDING))
    unknown = [w for w in ids if w not in known]
    if unknown:
        raise RushConfigError(f"no worker {', '.join(unknown)} in network {rush.network_id}")
    acted = rush.stop_workers(type=how, worker_ids=ids or None)
    if args.json:
        print_json({"network": rush.network_id, "type": how, "workers": acted})
    else:
        verb = WorkerState.KILLED if how == "kill" else "asked to terminate"
        print(f"{len(acted)} worker(s) {verb}" + (f": {', '.join(acted)}" if acted else ""))
    return 0


def _reset(args: argparse.Namespace) -> int:
    rush = _attach(args)
    counts = rush.counts_by_state()
    running = rush.n_running_workers
    question = (f"delete network {rush.network_id} ({sum(counts.values())} tasks; {running} running worker(s) will "
                "be killed)?")
    if not confirm(question, args.yes):
        print("nothing deleted")
        return 1
    rush.reset(workers=True)
    if args.json:
        print_json({"network": rush.network_id, "deleted": True})
    else:
        print(f"network {rush.network_id} deleted")
    return 0


def register(sub: Any) -> None:
    mo = sub.add_parser("monitor", help="watch a network's workers; detect and reconcile lost ones")
    add_network_options(mo, positional=True)
    mo.add_argument("--interval", type=float, default=defaults.MONITOR_INTERVAL, help="seconds between two rounds")
    mo.add_argument("--once", action="store_true", help="one round, then exit")
    mo.add_argument("--keep-workers", action="store_true",
                    help="replace lost workers, started the way they were (from their launch records)")
    mo.add_argument("--restart-budget", type=int, default=defaults.RESTART_BUDGET,
                    help="replacements at most (with --keep-workers)")
    mo.add_argument("--adapt", metavar="MIN:MAX",
                    help="keep MIN to MAX workers following the queue, started like the last launched one")
    mo.add_argument("--idle-timeout", type=float, default=defaults.ADAPT_IDLE_TIMEOUT,
                    help="seconds idle before a worker is released (--adapt)")
    mo.set_defaults(func=_monitor)

    st = sub.add_parser("stop", help="stop workers: terminate (finish the task, then end; default) or kill")
    st.add_argument("worker_ids", nargs="*", metavar="WORKER_ID", help="workers to stop (or --all)")
    add_network_options(st)
    g = st.add_mutually_exclusive_group()
    g.add_argument("--terminate", action="store_true", help="finish the current task, then end (default)")
    g.add_argument("--kill", action="store_true", help="stop now; running tasks fail")
    st.add_argument("--all", action="store_true", help="every running or pending worker")
    st.set_defaults(func=_stop)

    rs = sub.add_parser("reset", help="delete a network: kill its workers, delete its keys")
    add_network_options(rs, positional=True)
    rs.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rs.set_defaults(func=_reset)

"""Commands that look at networks: ``networks``, ``workers``, ``tasks``, ``logs``, ``top``.

They open a `Network` view: nothing is started and nothing is written."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rushhpc.core.states import TERMINAL_TASK_STATES, TaskState, WorkerState
from rushhpc.network.view import Network, list_networks
from rushhpc.ui.cli.common import (
    add_network_options,
    add_redis_options,
    ago,
    open_network,
    print_json,
    redis_from_args,
    table,
)

WORKER_TABLE = ["worker_id", "state", "node", "hostname", "pid", "job_id", "heartbeat", "reason"]
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def worker_rows(net: Network) -> list[dict[str, Any]]:
    """Worker rows with ``heartbeat_age`` (seconds since the last beat)."""
    rows = net.worker_rows()
    ages = net.heartbeat_ages([r["worker_id"] for r in rows])
    for r in rows:
        r["heartbeat_age"] = ages.get(r["worker_id"])
    return rows


def _sweep_label(info: Any) -> str:
    """``tpe: minimize y`` for a sweep's network, "" for another."""
    return f"{info['strategy']}: {info['direction']} {info['metric']}" if info else ""


def _networks(args: argparse.Namespace) -> int:
    import dataclasses

    cfg = redis_from_args(args)
    client = cfg.connect()
    docs: list[dict[str, Any]] = []
    for nid in list_networks(client):
        net = Network(nid, cfg, client=client)
        sweep = net.sweep_info()
        docs.append({"network_id": nid, "workers": net.worker_counts(), "tasks": net.counts_by_state(),
                     "created_at": float(net.meta().get("created_at") or 0) or None,
                     "sweep": dataclasses.asdict(sweep) if sweep else None})
    if args.json:
        print_json(docs)
        return 0
    if not docs:
        print(f"no networks on Redis at {cfg.address}")
        return 0
    rows = [{"network": d["network_id"], "workers running": d["workers"][WorkerState.RUNNING],
             "workers pending": d["workers"][WorkerState.PENDING], **d["tasks"], "sweep": _sweep_label(d["sweep"])} for d in docs]
    sweeps = ["sweep"] if any(d["sweep"] for d in docs) else []
    # RUNNING is a worker state and a task state: a line above the header says which is which
    print(table(rows, ["network", "workers running", "workers pending", *TaskState.values(), *sweeps],
                groups=[("", 1), ("workers", 2), ("tasks", len(TaskState)), ("", len(sweeps))],
                headers={"workers running": "RUNNING", "workers pending": "PENDING"}))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from rushhpc.manager.rush import Rush
    from rushhpc.ui.cli.common import network_name

    rush = Rush.attach(network_name(args), redis_from_args(args))
    df, totals = rush.accounting()
    rows = df.to_dict("records")
    if args.json:
        print_json({"network": rush.network_id, "totals": totals, "workers": rows})
        return 0
    share = totals["busy_share"]
    print(f"network {rush.network_id}: {totals['workers']} worker(s), {totals['core_hours']:.3f} core-hours allocated, "
          f"{totals['busy_core_hours']:.3f} in objectives" + (f" ({share:.0%} busy)" if share is not None else "") +
          f", {totals['idle_core_hours']:.3f} idle, {totals['preempted_core_hours']:.3f} lost to preemption, "
          f"{totals['failed_starts']} failed start(s)")
    if rows:
        print(table(rows, ["worker_id", "state", "cpus", "allocated_s", "busy_s", "idle_s", "tasks", "source"]))
    return 0


def _workers(args: argparse.Namespace) -> int:
    if args.summary:
        return _summary(args)
    net = open_network(args)
    rows = worker_rows(net)
    if args.state:
        rows = [r for r in rows if r["state"] == args.state]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"network {net.network_id} has no workers" + (f" in state {args.state}" if args.state else ""))
        return 0
    now = time.time()
    for r in rows:
        r["heartbeat"] = (ago(now - r["heartbeat_age"], now) if r["heartbeat_age"] is not None
                          else ("expired" if r["heartbeat"] and r["state"] == WorkerState.RUNNING else None))
    print(table(rows, WORKER_TABLE))
    return 0


TASK_META = ("state", "worker_id", "condition", "keys")
TASK_HIDDEN = ("created_at", "started_at", "finished_at", "attempt")


def sweep_task_row(row: dict[str, Any]) -> dict[str, Any]:
    """A sweep's task row with its ``params`` and ``outputs`` mappings spread into columns of their
    own names (``params.NAME`` / ``outputs.NAME`` where a name is taken), as for any other network.

    Example:
        >>> sweep_task_row({"params": {"x": 1}, "outputs": {"y": 2}, "state": "finished"})
        {'x': 1, 'y': 2, 'state': 'finished'}
    """
    out: dict[str, Any] = {}
    rest = {k: v for k, v in row.items() if k not in ("params", "outputs")}
    for part in ("params", "outputs"):
        values = row.get(part)
        if not isinstance(values, dict):
            continue
        for k, v in values.items():
            name = k if k not in rest and k not in out else f"{part}.{k}"
            out[name] = v
    out.update(rest)
    return out


def condition_cell(text: Any) -> Any:
    """A failed task's condition for a table cell: a Python traceback starts with its last line (the
    exception), then the text on one line (the table cuts it; ``--json`` keeps it whole)."""
    if not isinstance(text, str):
        return text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Traceback (most recent call last)"):
        lines = [lines[-1], *lines[:-1]]
    return "\n".join(lines)


def _tasks(args: argparse.Namespace) -> int:
    net = open_network(args)
    if not args.state:
        counts = net.counts_by_state()
        if args.json:
            print_json(counts)
        else:
            sweep = net.sweep_info()
            if sweep is not None:
                print(sweep.describe())
            print(table([counts], list(TaskState.values())))
        return 0
    rows = net.task_rows(args.state, limit=args.limit)
    if net.sweep_info() is not None:  # docs/cli.md: parameters and outputs under their own names
        rows = [sweep_task_row(r) for r in rows]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no {'/'.join(args.state)} tasks in network {net.network_id}")
        return 0
    # every row's columns (a failed row has no outputs), in the order of the row that has the most
    data: dict[str, None] = {}
    for r in sorted(rows, key=len, reverse=True):
        data.update((c, None) for c in r if c not in TASK_META and c not in TASK_HIDDEN)
    long = False
    for r in rows:
        if isinstance(r.get("condition"), str):
            r["condition"] = condition_cell(r["condition"])
            long = long or "\n" in r["condition"] or len(r["condition"]) > 40
    print(table(rows, [*data, "state", "worker_id", "condition", "keys"]))
    if long:
        print("(conditions are cut to one line here: --json shows them whole)")
    return 0


def _format_log(row: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(row["timestamp"]))
    return f"{stamp} [{row['worker_id']}] {row['level']} {row['logger']}: {row['msg']}"


NO_LOGS_HINT = ("workers send the records of the loggers named in log_thresholds, at or above their levels (default "
                "{rushhpc: INFO}; a worker loop's own logger only when named there): e.g. "
                "rush_plan(log_thresholds={'rushhpc': 'DEBUG', 'mymodel': 'INFO'}) or a plan file's log_thresholds "
                "before the workers start")


def _logs(args: argparse.Namespace) -> int:
    net = open_network(args)
    floor = LEVELS.get(args.level.upper(), 0) if args.level else 0
    last = "-"
    seen = shown = 0
    told = False
    while True:
        rows = net.log_rows(last)
        for row in rows:
            last = row["id"]
            seen += 1
            if LEVELS.get(str(row["level"]).upper(), 0) < floor or (args.worker and row["worker_id"] not in args.worker):
                continue
            shown += 1
            if args.json:
                print_json({k: row[k] for k in ("id", "timestamp", "worker_id", "level", "logger", "msg")})
            else:
                print(_format_log(row), flush=True)
        if not shown and not told:
            # nothing at all would look like a hung or broken command: say why, and how to see more
            told = True
            if seen:
                what = " and ".join(x for x in ("--level" if args.level else "", "--worker" if args.worker else "") if x)
                note = (f"none of the {seen} log record(s) of network {net.network_id} match {what}: "
                        f"drop {what} to see them all")
            else:
                note = f"network {net.network_id} has no log records: {NO_LOGS_HINT}"
            note += "; waiting for new records (Ctrl-C to stop)" if args.follow else "; --follow waits for new ones"
            print(note, file=sys.stderr if args.json else sys.stdout, flush=True)
        if not args.follow:
            return 0
        time.sleep(args.interval)


class _Keys:
    """Single key presses from a terminal on stdin (cbreak mode: no Enter needed, Ctrl-C still
    interrupts), restored on exit; without a terminal, `wait` just sleeps."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.saved: Any = None
        try:
            if sys.stdin.isatty():
                import termios
                import tty

                self.fd = sys.stdin.fileno()
                self.saved = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
        except (ImportError, OSError, ValueError):
            self.fd = None

    def wait(self, seconds: float) -> str:
        """Wait up to ``seconds`` for a key; returns it ('' when none came)."""
        if self.fd is None:
            time.sleep(seconds)
            return ""
        import os
        import select

        ready, _, _ = select.select([self.fd], [], [], seconds)
        return os.read(self.fd, 32).decode(errors="replace") if ready else ""

    def close(self) -> None:
        if self.fd is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.fd = None


def _top(args: argparse.Namespace) -> int:
    net = open_network(args)
    tty = sys.stdout.isatty() and not args.once
    keys = _Keys() if tty else None
    try:
        return _top_loop(args, net, tty, keys)
    finally:
        if keys is not None:
            keys.close()


def _top_loop(args: argparse.Namespace, net: Network, tty: bool, keys: _Keys | None) -> int:
    last_done: int | None = None
    last_t: float | None = None
    while True:
        counts = net.counts_by_state()
        rows = worker_rows(net)
        done = sum(counts[s] for s in TERMINAL_TASK_STATES)
        now = time.monotonic()
        rate: float | None = None
        if last_done is not None and last_t is not None and now > last_t:
            rate = (done - last_done) / (now - last_t)
        last_done, last_t = done, now
        alive = sum(1 for r in rows if r["state"] == WorkerState.RUNNING)
        head = (f"network {net.network_id}  workers running {alive}/{len(rows)}  tasks " +
                "  ".join(f"{k} {v}" for k, v in counts.items()) +
                (f"  throughput {rate:.1f}/s" if rate is not None else ""))
        wall = time.time()
        for r in rows:
            r["heartbeat"] = ago(wall - r["heartbeat_age"], wall) if r["heartbeat_age"] is not None else None
        body = table(rows, WORKER_TABLE) if rows else "(no workers)"
        if tty:
            quit_hint = "  (q quits)" if keys is not None and keys.fd is not None else ""
            sys.stdout.write("\x1b[H\x1b[2J" + head + quit_hint + "\n\n" + body + "\n")
            sys.stdout.flush()
        else:
            print(head, flush=True)
            if args.once:
                print(body)
        if args.once:
            return 0
        if keys is None:
            time.sleep(args.interval)
        elif "q" in keys.wait(args.interval).lower():
            return 0


def register(sub: Any) -> None:
    n = sub.add_parser("networks", help="the networks on this Redis, with worker and task counts")
    add_redis_options(n)
    n.add_argument("--json", action="store_true",
                   help="a JSON list of objects (network_id, workers, tasks, created_at, sweep)")
    n.set_defaults(func=_networks)

    w = sub.add_parser("workers", help="the worker table: state, host, pid, job id, heartbeat age, reason")
    add_network_options(w, positional=True)
    w.add_argument("--state", choices=WorkerState.values(), help="only workers in this state")
    w.add_argument("--summary", action="store_true",
                   help="accounting: core-hours allocated against time in objectives, idle, preempted, failed starts")
    w.set_defaults(func=_workers)

    t = sub.add_parser("tasks", help="task counts by state; --state S lists those tasks")
    add_network_options(t, positional=True)
    t.add_argument("--state", action="append", choices=TaskState.values(), help="list tasks of this state (repeatable)")
    t.add_argument("--limit", type=int, help="at most this many rows")
    t.set_defaults(func=_tasks)

    lg = sub.add_parser("logs", help="the workers' log records")
    add_network_options(lg, positional=True)
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    lg.add_argument("--level", help="only records at this level or above (DEBUG, INFO, WARNING, ERROR)")
    lg.add_argument("--worker", action="append", help="only this worker's records (repeatable)")
    lg.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    lg.set_defaults(func=_logs)

    tp = sub.add_parser("top", help="a live view of workers and throughput")
    add_network_options(tp, positional=True, json_flag=False)
    tp.add_argument("--interval", type=float, default=2.0)
    tp.add_argument("--once", action="store_true", help="one screen, then exit")
    tp.set_defaults(func=_top)


__all__ = ["register", "worker_rows"]

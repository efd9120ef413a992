"""Accounting: what a network was allocated against what its objectives used.

Per worker: the allocation (from the scheduler where it says, e.g. ``sacct``'s Start, End
and AllocCPUS on SLURM; else the worker's own registration and stop times in Redis), the
cores and GPUs it held, the time its tasks ran (``finished_at - started_at`` of its
finished and failed tasks), and so the idle share. Workers that never registered count as
failed starts; workers lost to preemption count as preempted time.

Example:
    >>> table, totals = usage_table(network, usage_from_launchers)
    >>> totals["core_hours"], totals["busy_share"]
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from rushhpc.core.records import LaunchRecord, Usage
from rushhpc.core.states import LostReason, TaskState
from rushhpc.network.view import Network

COLUMNS = ["worker_id", "launcher", "job_id", "state", "reason", "cpus", "gpus", "allocated_s", "busy_s", "idle_s",
           "tasks", "core_hours", "gpu_hours", "source"]


def requested_resources(record: LaunchRecord | None) -> tuple[int, int]:
    """Cores and GPUs a launch asked for (``cpus_per_task`` x ``nodes``, ``gpus``), default 1 and 0."""
    if record is None:
        return 1, 0
    opts = dict((record.extra.get("options") or {}).get("launcher_options") or {})
    opts = {**dict(record.extra.get("resources") or {}), **opts}
    cpus = int(opts.get("cpus_per_task") or 1) * int(opts.get("nodes") or 1)
    gpus = int(opts.get("gpus") or 0)
    return cpus, gpus


def usage_table(network: Network, usage: dict[str, Usage] | None = None,
                now: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per worker and network totals (see the module doc). ``usage``: scheduler figures by worker id."""
    now = time.time() if now is None else now
    usage = usage or {}
    records = network.records()
    busy: dict[str, float] = {}
    count: dict[str, int] = {}
    for t in network.task_rows([TaskState.FINISHED, TaskState.FAILED]):
        wid, s, f = t.get("worker_id"), t.get("started_at"), t.get("finished_at")
        if wid and s is not None and f is not None:
            busy[wid] = busy.get(wid, 0.0) + max(0.0, float(f) - float(s))
            count[wid] = count.get(wid, 0) + 1
    for t in network.task_rows([TaskState.RUNNING]):  # running tasks count up to now
        wid, s = t.get("worker_id"), t.get("started_at")
        if wid and s is not None:
            busy[wid] = busy.get(wid, 0.0) + max(0.0, now - float(s))
    rows = []
    for w in network.worker_rows():
        wid = w["worker_id"]
        rec = records.get(wid)
        cpus, gpus = requested_resources(rec)
        u = usage.get(wid)
        if u is not None and u.start is not None:
            start, end, source = u.start, u.end or now, "scheduler"
            cpus, gpus = u.cpus or cpus, u.gpus or gpus
        else:
            start, end, source = w["started_at"], w["stopped_at"] or now, "redis"
        allocated = max(0.0, end - start) if start is not None else 0.0
        b = min(busy.get(wid, 0.0), allocated) if allocated else busy.get(wid, 0.0)
        rows.append({"worker_id": wid, "launcher": w["launcher"] or (rec.launcher if rec else None),
                     "job_id": w["job_id"], "state": w["state"], "reason": w["reason"], "cpus": cpus, "gpus": gpus,
                     "allocated_s": round(allocated, 3), "busy_s": round(b, 3), "idle_s": round(max(0.0, allocated - b), 3),
                     "tasks": count.get(wid, 0), "core_hours": allocated * cpus / 3600, "gpu_hours": allocated * gpus / 3600,
                     "source": source})
    return rows, totals(rows)


def totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Network totals: core-hours allocated and busy, idle share, preempted and failed-start time."""
    rows = list(rows)
    core_h = sum(r["core_hours"] for r in rows)
    busy_core_h = sum(r["busy_s"] * r["cpus"] for r in rows) / 3600
    preempted = sum(r["allocated_s"] * r["cpus"] for r in rows if r["reason"] == LostReason.PREEMPTED) / 3600
    failed = sum(r["allocated_s"] * r["cpus"] for r in rows if r["reason"] == LostReason.FAILED_TO_START) / 3600
    return {
        "workers": len(rows),
        "core_hours": core_h,
        "gpu_hours": sum(r["gpu_hours"] for r in rows),
        "busy_core_hours": busy_core_h,
        "idle_core_hours": max(0.0, core_h - busy_core_h),
        "busy_share": busy_core_h / core_h if core_h else None,
        "preempted_core_hours": preempted,
        "failed_start_core_hours": failed,
        "failed_starts": sum(1 for r in rows if r["reason"] == LostReason.FAILED_TO_START),
    }

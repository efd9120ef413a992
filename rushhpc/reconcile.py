"""Reconciliation: the scheduler's view of each batch job joined with the worker's own view in Redis.

`decide` is a pure function (one launch record, the worker's hash, its
heartbeat, the job's status, the time) -> what to do. The manager applies the
decisions (`Rush._reconcile`). The rules:

| worker (Redis)         | job (scheduler)            | decision                                              |
|------------------------|----------------------------|-------------------------------------------------------|
| not registered         | pending / held / starting  | wait (worker_info shows pending / held / starting)    |
| not registered         | running longer than grace  | failed start: cancel the job, lost(failed_to_start)   |
| not registered         | ended                      | lost(failed_to_start, or the scheduler's reason)      |
| running, heartbeat ok  | running / any active       | fine                                                  |
| running, heartbeat ok  | ended / requeued           | wait: a beating worker is alive (cut-off node)        |
| running, heartbeat off | running / starting         | hung: kill the job, lost(heartbeat_expired)           |
| running, heartbeat off | suspended                  | never killed for a missing heartbeat                  |
| running, heartbeat off | finishing                  | expected: wait for the end                            |
| running, heartbeat off | ended / requeued           | lost(the scheduler's reason)                          |
| running or pending     | absent from every answer   | after two misses over vanish_grace: lost(vanished)    |
| lost(heartbeat/SIGTERM)| ended                      | the reason becomes the scheduler's (timeout, oom, ...)|
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .launchers.base import JobStatus

FINAL_WORKER_STATES = ("terminated", "killed", "lost", "failed")
ACTIVE_JOB_STATES = ("pending", "held", "starting", "running", "suspended", "finishing")
VAGUE_REASONS = ("heartbeat_expired", "sigterm", "process_died")
MISSES_FOR_VANISHED = 2


@dataclasses.dataclass
class Decision:
    """What to do about one worker. Empty fields mean: nothing."""

    worker_id: str
    lost_reason: str = ""  # mark the worker lost with this reason
    message: str = ""  # condition of its running tasks
    cancel_job: bool = False  # kill the job through the scheduler
    refine_reason: str = ""  # an already stopped worker gets the scheduler's reason
    job_state: str = ""  # the job's state, for worker_info
    track: dict[str, Any] = dataclasses.field(default_factory=dict)  # record fields to update
    done: bool = False  # nothing more to learn about this job: stop asking the scheduler


def _ended_reason(st: JobStatus, registered: bool) -> str:
    if not registered and st.reason in ("completed", "failed", ""):
        return "failed_to_start"
    return st.reason or "failed"


def decide(
    worker_id: str,
    track: dict[str, Any],
    worker: dict[str, str] | None,
    heartbeat_alive: bool,
    status: JobStatus | None,
    now: float,
    startup_grace: float,
    heartbeat_expire: float,
    vanish_grace: float = 60.0,
) -> Decision:
    """Decide about one launched worker. ``track`` holds what earlier polls saw (misses, times)."""
    d = Decision(worker_id)
    state = (worker or {}).get("state", "pending")
    registered = state != "pending"

    if status is None:
        misses = int(track.get("misses", 0)) + 1
        first = float(track["first_miss"]) if track.get("first_miss") is not None else now
        d.track.update(misses=misses, first_miss=first)
        gone = misses >= MISSES_FOR_VANISHED and now - first >= vanish_grace
        if gone and state in ("pending", "running"):
            d.lost_reason = "vanished"
            d.message = f"worker {worker_id} was lost: its job vanished from the scheduler"
            d.done = True
        elif gone:
            d.done = True
        return d
    if track.get("misses"):
        d.track.update(misses=0, first_miss=None)
    d.job_state = status.state
    ended = status.state == "finished"

    if state in FINAL_WORKER_STATES:
        if ended:
            reason = (worker or {}).get("reason", "")
            if state == "lost" and reason in VAGUE_REASONS and status.reason not in ("", "completed"):
                d.refine_reason = status.reason
            d.done = True
        elif state == "lost" and status.state in ("running", "starting") and not track.get("cancelled"):
            d.cancel_job = True  # a lost worker's job still runs: hung, or frozen and resumed
            d.track["cancelled"] = now
        return d

    if not registered:
        if status.state == "running":
            since = float(track["running_since"]) if track.get("running_since") is not None else now
            if "running_since" not in track:
                d.track["running_since"] = now
            if now - since > startup_grace:
                d.lost_reason = "failed_to_start"
                d.message = f"worker {worker_id} did not register within {startup_grace:g} s of its job starting"
                d.cancel_job = True
        elif ended:
            d.lost_reason = _ended_reason(status, registered=False)
            d.message = f"worker {worker_id} never started: job {status.raw}"
            d.done = True
        return d

    # registered and running
    if heartbeat_alive:
        # Whatever the scheduler says, a beating worker is alive (a node cut off from the
        # controller may be declared failed while its worker still works): wait for silence.
        return d
    if status.state in ("running", "starting"):
        d.lost_reason = "heartbeat_expired"
        d.message = f"worker {worker_id} was lost (heartbeat expired while its job was running: hung)"
        d.cancel_job = True
        d.track["cancelled"] = now
    elif ended:
        d.lost_reason = _ended_reason(status, registered=True)
        d.message = f"worker {worker_id} was lost: job {status.raw}"
        d.done = True
    elif status.state in ("pending", "held"):  # requeued (node failure, preemption)
        d.lost_reason = "preempted"
        d.message = f"worker {worker_id} was lost: its job was requeued ({status.raw})"
    # suspended: silent, not dead. finishing: the end is near; decide when it has ended.
    return d

"""Reconciliation: the scheduler's view of each batch job joined with the worker's own view in Redis.

`decide` is a pure function (one launch record, the worker's hash, its
heartbeat, the job's status, the time) -> what to do. `Reconciler` polls the
launchers and applies the decisions to a `Network`; it knows launchers only
through a lookup function, and never the manager. The rules:

| worker (Redis)         | job (scheduler)            | decision                                              |
|------------------------|----------------------------|-------------------------------------------------------|
| not registered         | pending / held / starting  | wait (worker_info shows pending / held / starting)    |
| not registered         | running longer than grace  | failed start: cancel the job, lost(failed_to_start)   |
| not registered         | ended                      | lost(failed_to_start, or the scheduler's reason)      |
| running, heartbeat ok  | running / any active       | fine                                                  |
| running, any heartbeat | ended                      | lost(the scheduler's reason); a kill request in Redis |
| running, any heartbeat | requeued (pending again)   | lost(preempted): the rerun registers under its id     |
| running, heartbeat off | running / starting         | hung: kill the job, lost(heartbeat_expired)           |
| running, heartbeat off | suspended                  | never killed for a missing heartbeat                  |
| running, heartbeat off | finishing                  | expected: wait for the end                            |
| pending, or running    | absent from every answer   | after two misses over vanish_grace: lost(vanished)    |
|   with heartbeat off   |                            |                                                       |
| running, heartbeat ok  | absent from every answer   | fine: a beating worker is never declared vanished     |
| lost(heartbeat/SIGTERM)| ended                      | the reason becomes the scheduler's (timeout, oom, ...)|
| lost(heartbeat/SIGTERM)| requeued (pending again)   | reason preempted; the job may bring the worker back   |

Tasks: a lost worker's running tasks are requeued or failed by `Release` mode. A batch
worker that gets SIGTERM releases them uncounted (HOLD); the scheduler's reason settles
them (`Network.settle_released`): preempted / node_fail stay uncounted, others count.
A worker the reconciler declares lost for preemption or node failure releases them FREE.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

from rushhpc import defaults
from rushhpc.core.records import JobStatus, LaunchRecord
from rushhpc.core.states import (
    FINAL_WORKER_STATES,
    UNCOUNTED_REASONS,
    VAGUE_REASONS,
    JobState,
    LostReason,
    Release,
    WorkerState,
)
from rushhpc.launchers.base import Launcher
from rushhpc.network.view import Network

log = logging.getLogger("rushhpc")

MISSES_FOR_VANISHED = defaults.MISSES_FOR_VANISHED
# The launch record's field that holds when the reconciler cancelled the job (a name stored in Redis, not a reason).
CANCELLED_AT = "cancelled"
# The condition of a lost worker's tasks names the scheduler's reason in words.
ENDED_WORDS: dict[str, str] = {
    LostReason.OUT_OF_MEMORY: "its job ran out of memory",
    LostReason.TIMEOUT: "its job reached its time limit",
    LostReason.CANCELLED: "its job was cancelled",
    LostReason.NODE_FAIL: "its node failed",
    LostReason.PREEMPTED: "its job was preempted",
}


@dataclasses.dataclass
class Decision:
    """What to do about one worker. Empty fields mean: nothing."""

    worker_id: str
    lost_reason: str = ""  # mark the worker lost with this reason
    message: str = ""  # condition of its running tasks
    cancel_job: bool = False  # kill the job through the scheduler
    refine_reason: str = ""  # an already stopped worker gets the scheduler's reason
    settle: str = ""  # the final reason for the tasks it released uncounted, when no refinement
    job_state: str = ""  # the job's state, for worker_info
    track: dict[str, Any] = dataclasses.field(default_factory=dict)  # record fields to update
    done: bool = False  # nothing more to learn about this job: stop asking the scheduler
    kill_worker: bool = False  # push a kill request on the worker's kill list (its heartbeat acts on it)


def _ended_reason(st: JobStatus, registered: bool) -> str:
    if not registered and st.reason in (LostReason.COMPLETED, LostReason.FAILED, ""):
        return LostReason.FAILED_TO_START
    return st.reason or LostReason.FAILED


def decide(
    worker_id: str,
    track: dict[str, Any],
    worker: dict[str, str] | None,
    heartbeat_alive: bool,
    status: JobStatus | None,
    now: float,
    startup_grace: float,
    heartbeat_expire: float,
    vanish_grace: float = defaults.VANISH_GRACE,
) -> Decision:
    """Decide about one launched worker. ``track`` holds what earlier polls saw (misses, times).

    One rule function per row group of the module's table: the job unknown to the scheduler,
    a worker with a final verdict already, one not registered yet, one registered and running.

    Example:
        >>> decide("w1", {}, {"state": WorkerState.RUNNING}, True, JobStatus(JobState.RUNNING), 0.0, 300, 60).lost_reason
        ''
    """
    d = Decision(worker_id)
    state = (worker or {}).get("state", WorkerState.PENDING)
    if status is None:
        _job_unknown(d, track, state, heartbeat_alive, now, vanish_grace)
        return d
    if track.get("misses"):
        d.track.update(misses=0, first_miss=None)
    d.job_state = status.state
    if state in FINAL_WORKER_STATES:
        _after_verdict(d, track, state, (worker or {}).get("reason", ""), status, now, startup_grace)
    elif state == WorkerState.PENDING:
        _not_registered(d, track, status, now, startup_grace)
    else:
        _registered(d, track, heartbeat_alive, status, now)
    return d


def _since(d: Decision, track: dict[str, Any], key: str, now: float) -> float:
    """When ``track[key]`` was first seen (now, noted in the decision, the first time)."""
    if track.get(key) is None:
        d.track[key] = now
        return now
    return float(track[key])


def _job_unknown(d: Decision, track: dict[str, Any], state: str, heartbeat_alive: bool, now: float,
                 vanish_grace: float) -> None:
    """The scheduler's answer lacks the job: vanished after enough misses, unless the worker beats."""
    if state == WorkerState.RUNNING and heartbeat_alive:
        # The scheduler does not know the job (another manager's launcher, a purged
        # record, a job started by hand), but the worker beats: it is alive.
        if track.get("misses"):
            d.track.update(misses=0, first_miss=None)
        return
    misses = int(track.get("misses", 0)) + 1
    first = float(track["first_miss"]) if track.get("first_miss") is not None else now
    d.track.update(misses=misses, first_miss=first)
    if misses >= MISSES_FOR_VANISHED and now - first >= vanish_grace:
        d.done = True
        if state in (WorkerState.PENDING, WorkerState.RUNNING):
            d.lost_reason = LostReason.VANISHED
            d.message = f"worker {d.worker_id} was lost: its job vanished from the scheduler"


def _after_verdict(d: Decision, track: dict[str, Any], state: str, reason: str, status: JobStatus, now: float,
                   startup_grace: float) -> None:
    """A worker already stopped: the scheduler may name why, or show its job still runs."""
    vague = state == WorkerState.LOST and reason in VAGUE_REASONS
    if status.state == JobState.FINISHED:
        if vague and status.reason not in ("", LostReason.COMPLETED):
            d.refine_reason = status.reason
        elif vague:
            d.settle = reason  # no better word from the scheduler: the attempts count
        d.done = True
    elif vague and status.state in (JobState.PENDING, JobState.HELD):
        # A lost worker whose job is queued again: the scheduler requeued it (preemption,
        # node failure). The same job may run it again under its id (register_worker.lua).
        d.refine_reason = LostReason.PREEMPTED
    elif state != WorkerState.LOST or status.state not in (JobState.RUNNING, JobState.STARTING) \
            or track.get(CANCELLED_AT):
        return
    elif reason == LostReason.PREEMPTED:
        # the requeued job runs again: its worker has the startup grace to come back
        if now - _since(d, track, "rerun_since", now) > startup_grace:
            d.cancel_job = True
            d.track[CANCELLED_AT] = now
    else:
        d.cancel_job = True  # a lost worker's job still runs: hung, or frozen and resumed
        d.track[CANCELLED_AT] = now


def _not_registered(d: Decision, track: dict[str, Any], status: JobStatus, now: float, startup_grace: float) -> None:
    """A launched worker that has not registered: a failed start once its job ran too long or ended."""
    if status.state == JobState.RUNNING:
        since = float(track["running_since"]) if track.get("running_since") is not None else now
        if "running_since" not in track:
            d.track["running_since"] = now
        if now - since > startup_grace:
            d.lost_reason = LostReason.FAILED_TO_START
            d.message = f"worker {d.worker_id} did not register within {startup_grace:g} s of its job starting"
            d.cancel_job = True
    elif status.state == JobState.FINISHED:
        d.lost_reason = _ended_reason(status, registered=False)
        d.message = f"worker {d.worker_id} never started: job {status.raw}"
        d.done = True


def _registered(d: Decision, track: dict[str, Any], heartbeat_alive: bool, status: JobStatus, now: float) -> None:
    """A registered, running worker: the scheduler's end, a requeue or a hang makes it lost."""
    worker_id = d.worker_id
    if track.get("rerun_since") is not None:
        d.track["rerun_since"] = None  # back after a requeue: a later one gets its own grace
    # The scheduler's final word decides, whatever the heartbeat key says: the key outlives a worker
    # killed before it could mark itself by up to heartbeat_expire (issue 20, defect 9: a cancelled
    # job's worker read `running` for a minute). An ended job is not "vanished": the scheduler knows it.
    if status.state == JobState.FINISHED:
        d.lost_reason = _ended_reason(status, registered=True)
        why = ENDED_WORDS.get(d.lost_reason)
        d.message = f"worker {worker_id} was lost: " + (f"{why} (job {status.raw})" if why else f"job {status.raw}")
        d.done = True
        # A worker that still beats (its node cut off from the controller but not from Redis) is
        # stopped by its heartbeat process, so that it does not work on under a lost id.
        d.kill_worker = heartbeat_alive
    elif status.state in (JobState.PENDING, JobState.HELD):
        # Requeued (preemption, node failure): the job's processes were ended before it went back to the
        # queue, and its rerun registers under this id, which needs the worker lost (register_worker.lua).
        # No kill request: the rerun's heartbeat would take it.
        d.lost_reason = LostReason.PREEMPTED
        d.message = f"worker {worker_id} was lost: its job was requeued ({status.raw})"
    elif not heartbeat_alive and status.state in (JobState.RUNNING, JobState.STARTING):
        d.lost_reason = LostReason.HEARTBEAT_EXPIRED
        d.message = f"worker {worker_id} was lost (heartbeat expired while its job was running: hung)"
        d.cancel_job = True
        d.track[CANCELLED_AT] = now
    # A beating worker is alive (running, starting, suspended, finishing). Without a heartbeat,
    # suspended: silent, not dead; finishing: the end is near; decide when it has ended.


class Reconciler:
    """Polls the batch launchers of a network and applies `decide` to every launched worker.

    State that must survive the manager (launch records, misses, times) is in Redis
    (``{net}:launches``); only the poll timing lives here. ``launcher_for(name)`` gives
    the launcher of a record (built from the plan, rebuilt from records after a reattach).

    Example:
        >>> lost = Reconciler(network, manager.launcher).run(force=True)  # doctest: +SKIP
    """

    def __init__(self, network: Network, launcher_for: Callable[[str], Launcher],
                 poll_interval: float | None = None, max_poll_interval: float | None = None,
                 heartbeat_expire: float | None = None, heartbeat_period: float | None = None):
        self.network = network
        self.launcher_for = launcher_for
        self.floor = float(poll_interval or defaults.POLL_INTERVAL)
        self.max_interval = float(max_poll_interval or defaults.MAX_POLL_INTERVAL)
        # a worker's own expiry is in its hash; this is for one that has not registered, by the workers' rule
        self.heartbeat_expire = float(heartbeat_expire or defaults.heartbeat_expire(heartbeat_period))
        self.interval = self.floor
        self.last_poll: float | None = None

    def due(self, force: bool, urgent: bool) -> bool:
        now = time.monotonic()
        if force or self.last_poll is None:
            return True
        if urgent and now - self.last_poll >= min(self.floor, defaults.URGENT_POLL_GAP):
            return True
        return now - self.last_poll >= self.interval

    def run(self, force: bool = False, urgent: bool = False) -> list[str]:
        """Poll each batch launcher once (all its jobs in one query) and apply `decide`."""
        net = self.network
        if not self.due(force, urgent):
            return []
        records = net.active_records()
        if not records:
            return []
        self.last_poll = time.monotonic()
        by_launcher: dict[str, list[LaunchRecord]] = {}
        for rec in records.values():
            by_launcher.setdefault(rec.launcher, []).append(rec)
        # The workers' hashes are read before the scheduler is asked: a worker seen registered was so
        # when its job's state was read, so a job reported pending again was requeued after it ran, not a
        # job that started (and registered its worker) between the two reads.
        info = {row["worker_id"]: row for row in self.worker_hashes(list(records))}
        statuses: dict[str, JobStatus] = {}
        for name, recs in by_launcher.items():
            statuses.update(self.launcher_for(name).poll(recs))
        now = time.time()
        lost: list[str] = []
        changed = False
        with net.connector.pipeline(transaction=False) as pipe:
            for wid, rec in records.items():
                changed = self._apply(pipe, rec, info.get(wid), statuses.get(wid), now, lost) or changed
            pipe.execute()
        # Adaptive polling: back off while nothing changes, return to the floor when something does.
        self.interval = self.floor if changed else min(self.max_interval, self.interval * defaults.POLL_BACKOFF)
        return lost

    def _apply(self, pipe: Any, rec: LaunchRecord, w: dict[str, Any] | None, status: JobStatus | None, now: float,
               lost: list[str]) -> bool:
        """`decide` about one worker and apply the decision (Redis writes in ``pipe``); whether anything changed.
        A worker marked lost is appended to ``lost``."""
        net, wid = self.network, rec.worker_id
        launcher = self.launcher_for(rec.launcher)
        expire = float((w or {}).get("heartbeat_expire") or self.heartbeat_expire)
        d = decide(wid, rec.extra, w, (w or {}).get("heartbeat_alive") == "1", status, now,
                   launcher.startup_grace, expire, launcher.vanish_grace)
        changed = False
        if d.job_state and (w or {}).get("job_state") != d.job_state:
            pipe.hset(net.keys.worker(wid), "job_state", str(d.job_state))
            changed = True
        self._out_of_memory(d, launcher)
        if d.lost_reason:
            self._mark_lost(d, launcher, w, lost)
            changed = True
        if d.cancel_job:  # after the verdict: a killed worker must not get its own word in first
            launcher.kill([rec])
        if d.kill_worker:
            # a live heartbeat blocks on this list and pops it at once; expiring with the heartbeat
            # key, it cannot reach a later run of the same worker id
            pipe.rpush(net.keys.kill(wid), "kill")
            pipe.expire(net.keys.kill(wid), max(1, round(expire)))
        if d.refine_reason:
            pipe.hset(net.keys.worker(wid), "reason", str(d.refine_reason))
        if d.refine_reason or d.settle:
            failed = net.settle_released(wid, d.refine_reason or d.settle)
            if failed:
                log.warning("worker %s (%s): %s task(s) failed with no retry left", wid,
                            d.refine_reason or d.settle, failed)
        if d.track or d.done:
            rec.extra.update(d.track)
            if d.done:
                rec.extra["done"] = True
            net.save_record(rec, pipe, settled=d.done)
        return changed

    def _out_of_memory(self, d: Decision, launcher: Launcher) -> None:
        """A job the scheduler calls failed whose stderr says it was killed for its memory: out_of_memory;
        and the tasks of a job that ran out of memory, noted before they are released."""
        net, wid = self.network, d.worker_id
        if LostReason.FAILED in (d.lost_reason, d.refine_reason) and launcher.ran_out_of_memory(
                launcher.stderr_tail(wid, 10)):
            # the job's state says failed, its stderr says the scheduler killed it for memory
            if d.lost_reason:
                d.lost_reason, d.message = LostReason.OUT_OF_MEMORY, d.message.replace(
                    "was lost: ", f"was lost: {ENDED_WORDS[LostReason.OUT_OF_MEMORY]}, ", 1)
            else:
                d.refine_reason = LostReason.OUT_OF_MEMORY
        if LostReason.OUT_OF_MEMORY in (d.lost_reason, d.refine_reason):
            # the tasks its job was running, before they are released: a replacement that asks more
            # memory (mem_retry, Rush.replace_workers) writes its decision into their condition
            held = net.keys.worker_tasks(wid) if d.lost_reason else net.keys.released(wid)
            d.track["oom_tasks"] = sorted(net.connector.smembers(held))

    def _mark_lost(self, d: Decision, launcher: Launcher, w: dict[str, Any] | None, lost: list[str]) -> None:
        """Mark the worker lost with the decision's reason (its tasks released FREE for a reason that is not
        theirs, else RETRY); one that gave its own verdict since its hash was read stays to be asked about."""
        wid = d.worker_id
        tail = launcher.stderr_tail(wid, 10)
        msg = d.message + (f"; stderr ends with: {tail.splitlines()[-1]}" if tail else "")
        registered = (w or {}).get("state", WorkerState.PENDING) != WorkerState.PENDING
        source = WorkerState.RUNNING if registered else WorkerState.PENDING
        release = Release.FREE if d.lost_reason in UNCOUNTED_REASONS else Release.RETRY
        if self.network.mark_workers(WorkerState.LOST, [(wid, d.lost_reason, msg)], retry=release, source=source):
            lost.append(wid)
            log.warning("worker %s lost (%s)%s", wid, d.lost_reason, ":\n" + tail if tail else "")
        else:
            # it ended by itself since its hash was read (a SIGTERM's lost/sigterm): keep asking,
            # so that the next poll gives it the scheduler's reason
            d.done = d.kill_worker = False

    def worker_hashes(self, worker_ids: Sequence[str]) -> list[dict[str, Any]]:
        net = self.network
        with net.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hgetall(net.keys.worker(wid))
                pipe.exists(net.keys.heartbeat(wid))
            res = pipe.execute()
        out = []
        for wid, h, alive in zip(worker_ids, res[0::2], res[1::2]):
            if h:
                h = dict(h, heartbeat_alive="1" if alive else "0")
                h.setdefault("worker_id", wid)
                out.append(h)
        return out

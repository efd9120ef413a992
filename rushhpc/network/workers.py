"""The workers of a network: their hashes, states and state changes, as a table or by state.

`Workers` is a part of the network view (`rushhpc.network.view.Network`, which forwards its
public members). Every state change is one Lua script of `rushhpc.store.protocol`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from rushhpc import defaults
from rushhpc.core.states import UNCOUNTED_REASONS, JobState, Release, WorkerState
from rushhpc.network.link import Link
from rushhpc.network.tables import WORKER_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

# the fields of a worker's hash that worker_rows shows (store/keys.py describes every field)
WORKER_FIELDS = ("worker_id", "state", "job_state", "pid", "hostname", "node", "heartbeat_expire", "heartbeat_pid",
                 "launcher", "job_id", "terminate_reason", "reason", "started_at", "stopped_at", "mem", "mem_retry_of")


class Workers:
    """The workers of one network.

    Example:
        >>> Workers(network).worker_counts()["running"]
        4
    """

    def __init__(self, view: Link):
        self.view = view

    def worker_field(self, worker_ids: Sequence[str], field: str) -> list[str | None]:
        """One field of several workers' hashes, in one round trip."""
        with self.view.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hget(self.view.keys.worker(wid), field)
            return list(pipe.execute())

    def worker_rows(self) -> list[dict[str, Any]]:
        """One plain dict per worker (what `worker_info` shows), read in one round trip per 500
        workers (`Protocol.worker_info`).

        ``state`` is the worker's, or for a batch worker not registered yet, its job's
        (pending, held, starting); a running worker whose job is suspended shows
        ``suspended``.
        """
        rows = []
        for h in self.view.protocol.worker_info(WORKER_FIELDS):
            state = h.get("state")
            job_state = h.get("job_state") or None
            # shown as plain values (tables, JSON): a job state stands in for the worker's
            if state == WorkerState.PENDING and job_state in (JobState.HELD, JobState.STARTING, JobState.RUNNING):
                state = (JobState.HELD if job_state == JobState.HELD else JobState.STARTING).value
            elif state == WorkerState.RUNNING and job_state == JobState.SUSPENDED:
                state = JobState.SUSPENDED.value
            rows.append({
                "worker_id": h.get("worker_id"),
                "state": state,
                "job_state": job_state,
                "pid": int(h["pid"]) if h.get("pid") else None,
                "hostname": h.get("hostname"),
                "node": h.get("node") or None,
                "heartbeat": "heartbeat_expire" in h,
                "heartbeat_alive": h.get("heartbeat_alive") == "1",
                "heartbeat_pid": int(h["heartbeat_pid"]) if h.get("heartbeat_pid") else None,
                "launcher": h.get("launcher"),
                "job_id": h.get("job_id") or None,
                "reason": (h.get("terminate_reason") if state == WorkerState.TERMINATED and h.get("terminate_reason")
                           else h.get("reason")) or None,
                "started_at": float(h["started_at"]) if h.get("started_at") else None,
                "stopped_at": float(h["stopped_at"]) if h.get("stopped_at") else None,
                # a batch job's --mem, and the worker whose out-of-memory end made it ask more (rushhpc.core.memory)
                "mem": h.get("mem") or None,
                "mem_retry_of": h.get("mem_retry_of") or None,
            })
        rows.sort(key=lambda r: (r["started_at"] is None, r["started_at"] or 0.0))
        return rows

    @property
    def worker_info(self) -> "pd.DataFrame":
        """One row per worker: id, state, pid, hostname, heartbeat, launcher, job id, reason...

        ``job_state`` is the scheduler's view at the last poll.
        """
        import pandas as pd

        df = pd.DataFrame(self.worker_rows(), columns=WORKER_COLUMNS)
        for t in ("started_at", "stopped_at"):
            df[t] = pd.to_datetime(df[t], unit="s", utc=True)
        return df.reset_index(drop=True)

    def heartbeat_ages(self, worker_ids: Sequence[str]) -> dict[str, float | None]:
        """Seconds since each worker's last heartbeat (None: no heartbeat key, or none alive)."""
        with self.view.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.hget(self.view.keys.worker(wid), "heartbeat_expire")
                pipe.pttl(self.view.keys.heartbeat(wid))
            res = pipe.execute()
        out: dict[str, float | None] = {}
        for wid, expire, ttl in zip(worker_ids, res[0::2], res[1::2]):
            out[wid] = max(0.0, float(expire) - ttl / 1000.0) if expire and ttl is not None and ttl >= 0 else None
        return out

    def worker_states(self) -> dict[str, str]:
        """Every worker's state, from the sets by state in one round trip (no worker hash read:
        cheap at thousands of workers, unlike `worker_info`).

        Example:
            >>> net.worker_states()
            {'w-1a2b': 'running', 'w-3c4d': 'terminated'}
        """
        with self.view.connector.pipeline(transaction=False) as pipe:
            for st in WorkerState:
                pipe.smembers(self.view.keys.workers_in(st))
            sets = pipe.execute()
        return {wid: str(st) for st, ids in zip(WorkerState, sets) for wid in ids}

    def worker_ids_in(self, state: WorkerState | str) -> list[str]:
        return sorted(self.view.connector.smembers(self.view.keys.workers_in(state)))

    @property
    def worker_ids(self) -> list[str]:
        """Ids of every worker that registered."""
        return sorted(self.view.connector.smembers(self.view.keys.workers))

    @property
    def running_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.RUNNING)

    @property
    def terminated_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.TERMINATED)

    @property
    def killed_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.KILLED)

    @property
    def lost_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.LOST)

    @property
    def failed_worker_ids(self) -> list[str]:
        return self.worker_ids_in(WorkerState.FAILED)

    @property
    def n_workers(self) -> int:
        return int(self.view.connector.scard(self.view.keys.workers))

    @property
    def n_running_workers(self) -> int:
        return int(self.view.connector.scard(self.view.keys.workers_in(WorkerState.RUNNING)))

    def worker_counts(self) -> dict[str, int]:
        """Number of workers in each state (pending included), in one round trip."""
        with self.view.connector.pipeline(transaction=False) as pipe:
            for s in WorkerState:
                pipe.scard(self.view.keys.workers_in(s))
            return {s.value: int(n) for s, n in zip(WorkerState, pipe.execute())}

    def mark_workers(
        self, state: WorkerState | str, items: Iterable[tuple[str, str, str]], retry: bool | Release,
        source: WorkerState | str = WorkerState.RUNNING,
    ) -> list[str]:
        """Move running (or pending) workers to ``state`` with a reason; returns the ids that
        changed (the first verdict stands). Their running tasks are released as ``retry`` says
        (`Release`; ``True`` = RETRY, ``False`` = FAIL).

        Example:
            >>> net.mark_workers(WorkerState.LOST, [("w-1", "preempted", "job requeued")], retry=Release.FREE)
        """
        out = self.view.protocol.stop_workers(str(state), list(items), retry, source=str(source))
        return [row[0] for row in out]

    def settle_released(self, worker_id: str, reason: str) -> int:
        """Apply the scheduler's final reason to the tasks a SIGTERMed batch worker released
        uncounted: a preemption or node failure leaves their attempts uncounted, any other
        reason counts them (a queued task with no retry left fails). Returns how many failed.

        Example:
            >>> net.settle_released("w-1", "timeout")
            0
        """
        return self.view.protocol.settle_released(
            worker_id, reason not in UNCOUNTED_REASONS,
            f"worker {worker_id} was lost ({reason}) while the task was running; no retry left")

    def registered_ids(self, launched: Iterable[str] = ()) -> set[str]:
        """Workers that registered at least once (a launched batch worker that was declared
        lost before registering did not)."""
        with self.view.connector.pipeline(transaction=False) as pipe:
            pipe.smembers(self.view.keys.workers)
            pipe.smembers(self.view.keys.workers_in(WorkerState.LOST))
            pipe.smembers(self.view.keys.workers_in(WorkerState.KILLED))
            ids, lost, killed = pipe.execute()
        ended = (lost | killed) & set(launched)
        if ended:
            ids -= set(self.never_started(ended))
        return set(ids)

    def never_started(self, among: Iterable[str]) -> dict[str, str]:
        """Worker id -> reason, for workers that ended without ever registering."""
        ids = list(among)
        if not ids:
            return {}
        with self.view.connector.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hmget(self.view.keys.worker(wid), ["state", "pid", "reason"])
            rows = pipe.execute()
        return {w: r[2] or r[0] for w, r in zip(ids, rows) if r[0] in (WorkerState.LOST, WorkerState.KILLED) and not r[1]}

    def request_terminate(self, worker_ids: Sequence[str], reason: str = "") -> None:
        """Ask running workers to finish their task and end (they read the flag); ``reason``
        is shown as theirs once they have ended (e.g. released by adapt)."""
        with self.view.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                flag = {"terminate": "1", **({"terminate_reason": reason} if reason else {})}
                pipe.hset(self.view.keys.worker(wid), mapping=flag)
            pipe.execute()

    def send_kill(self, worker_ids: Sequence[str]) -> None:
        """Push a kill request on each worker's kill list (its heartbeat blocks on it)."""
        with self.view.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.rpush(self.view.keys.kill(wid), "kill")
                pipe.expire(self.view.keys.kill(wid), defaults.KILL_REQUEST_TTL)
            pipe.execute()

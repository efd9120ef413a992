"""Launch records of a network: what is known of each launched worker (`LaunchRecord`).

`Launches` is a part of the network view (`rushhpc.network.view.Network`, which forwards its
public members). Records live in ``{net}:launches``; the batch workers whose job's fate is not
settled are in ``{net}:launches:active``. This view caches the records it has read or stored
(a monitor thread shares the cache, hence the lock).
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Sequence

from rushhpc.core.records import LaunchRecord
from rushhpc.core.states import WorkerState
from rushhpc.network.link import Link


class Launches:
    """The launch records of one network, cached.

    Example:
        >>> Launches(network).records()
        {'w-1a2b': LaunchRecord(worker_id='w-1a2b', launcher='slurm', ...)}
    """

    def __init__(self, view: Link):
        self.view = view
        self._records: dict[str, LaunchRecord] = {}
        self._lock = threading.RLock()  # the records cache is shared with a monitor thread

    def store_records(self, records: Sequence[LaunchRecord]) -> None:
        """Store launch records; managed (batch) workers exist from now on, as `pending`."""
        if not records:
            return
        k = self.view.keys
        with self.view.connector.pipeline(transaction=True) as pipe:
            pipe.hset(k.launches, mapping={r.worker_id: r.dumps() for r in records})
            for r in records:
                if not r.managed:
                    continue
                pipe.hset(k.worker(r.worker_id), mapping={
                    "worker_id": r.worker_id, "state": WorkerState.PENDING.value, "launcher": r.launcher,
                    "job_id": r.job_id or "", "submitted_at": r.submitted_at, "managed": "1",
                    "mem": str((r.extra.get("resources") or {}).get("mem") or ""),  # worker_info's mem column
                })
                pipe.sadd(k.workers_in(WorkerState.PENDING), r.worker_id)
                pipe.sadd(k.active_launches, r.worker_id)
            pipe.execute()
        with self._lock:
            for r in records:
                self._records[r.worker_id] = r

    def save_record(self, record: LaunchRecord, pipe: Any = None, settled: bool = False) -> None:
        """Write one record back (the reconciler's tracking); ``settled`` leaves the active set."""
        target = pipe if pipe is not None else self.view.connector
        target.hset(self.view.keys.launches, record.worker_id, record.dumps())
        if settled:
            target.srem(self.view.keys.active_launches, record.worker_id)

    def record(self, worker_id: str) -> LaunchRecord | None:
        """The launch record of one worker (cached, else read from Redis)."""
        with self._lock:
            rec = self._records.get(worker_id)
        if rec is None:
            text = self.view.connector.hget(self.view.keys.launches, worker_id)
            if text:
                rec = LaunchRecord.loads(text)
                with self._lock:
                    rec = self._records.setdefault(worker_id, rec)
        return rec

    def records(self, worker_ids: Iterable[str] | None = None) -> dict[str, LaunchRecord]:
        """Launch records of these workers (default: every launched worker), from Redis."""
        if worker_ids is None:
            raw = self.view.connector.hgetall(self.view.keys.launches)
            items = list(raw.items())
        else:
            ids = list(worker_ids)
            items = list(zip(ids, self.view.connector.hmget(self.view.keys.launches, ids))) if ids else []
        out = {}
        with self._lock:
            for wid, text in items:
                if text is None:
                    continue
                rec = LaunchRecord.loads(text)
                cached = self._records.get(wid)
                if cached is not None:
                    cached.extra = rec.extra  # Redis is the truth for tracking fields
                    rec = cached
                else:
                    self._records[wid] = rec
                out[wid] = rec
        return out

    def active_records(self) -> dict[str, LaunchRecord]:
        """Records of batch workers whose job's fate is not settled yet."""
        return self.records(sorted(self.view.connector.smembers(self.view.keys.active_launches)))

    @property
    def launched_ids(self) -> set[str]:
        """Workers launched through this view (cached records)."""
        with self._lock:
            return set(self._records)

    def forget_all(self) -> None:
        """Drop every cached record (the network was deleted)."""
        with self._lock:
            self._records.clear()

"""The task side of a network: push, fetch, count, and read logs.

`TaskStore` is a part of the network view (`rushhpc.network.view.Network`, which forwards
its public members), and so of the manager and the worker. Every state change is one Lua
script of `rushhpc.store.protocol`; fetches decode one JSON array built server-side.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rushhpc import defaults
from rushhpc.core import codec
from rushhpc.core.states import TASK_STATES, TaskState
from rushhpc.errors import RushConfigError, RushError, RushPayloadError
from rushhpc.network.link import Link
from rushhpc.network.tables import LOG_COLUMNS, AppendFrame, flatten, task_table

if TYPE_CHECKING:
    import pandas as pd

FETCH_CHUNK = defaults.FETCH_CHUNK
FIRST_CHUNK = defaults.FETCH_FIRST_CHUNK
PIPELINE_CHUNK = min(defaults.FETCH_PIPELINE_CHUNK, FETCH_CHUNK)  # read one request ahead (decode overlaps Redis)
PUSH_CHUNK = defaults.PUSH_CHUNK


def new_keys(n: int) -> list[str]:
    """n fresh task keys (random, 128 bits, hex)."""
    return [os.urandom(16).hex() for _ in range(n)]


def as_list(x: Any, n: int, what: str, recycle: bool = True) -> list:
    """``x`` as one element per task: None for none, a one-element list for every task (as rush
    recycles it; not results, ``recycle=False``: one result for several tasks is a mistake), else
    exactly ``n`` elements."""
    if x is None:
        return [None] * n
    x = list(x)
    if recycle and len(x) == 1 and n != 1:
        return x * n
    if len(x) != n:
        also = " or 1 (the same for every task)" if recycle else ""
        raise RushPayloadError(f"{what} has {len(x)} elements, expected {n} (one per task){also}; nothing was written")
    return x


class TaskStore:
    """Tasks and logs of one network: a part of the network view ``view``, whose connection it uses.

    ``before_push`` runs before tasks are written (the manager re-creates a network its own
    `reset` deleted).

    Example:
        >>> TaskStore(network).n_tasks
        0
    """

    def __init__(self, view: Link, before_push: Callable[[], None] | None = None):
        self.view = view
        self._before_push = before_push or (lambda: None)
        self._finished = AppendFrame()
        self._finished_read = 0  # entries of the finished list read, also those whose hash was gone
        self._new_offset = 0  # cached rows fetch_new_tasks has returned
        self._log_last_id = "-"

    # ------------------------------------------------------------------ tasks in
    def _encode_tasks(self, xss: Sequence[dict], xss_extra: Sequence[dict] | None) -> tuple[list[str], list[str], list[str]]:
        if isinstance(xss, dict):
            raise RushError("xss must be a list of dicts, one per task: wrap a single task as [xs]")
        xss = list(xss)
        extras = as_list(xss_extra, len(xss), "xss_extra")
        xs_json = [codec.encode_dict(xs, "xs") or "{}" for xs in xss]
        ex_json = [codec.encode_dict(e, "xs_extra") for e in extras]
        return new_keys(len(xss)), xs_json, ex_json

    def push_tasks(
        self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None, max_retries: int = 0,
        expected_duration: float | Sequence[float] | None = None,
    ) -> list[str]:
        """Queue tasks for workers; returns their keys. ``max_retries``: how often a task
        whose worker was lost is requeued before it fails (preemption and node failures do
        not count). ``expected_duration`` (seconds, one or one per task, stored in
        ``xs_extra``): a batch worker with less walltime left leaves the task for another.

        Example:
            >>> keys = rush.push_tasks([{"x1": 1.0, "x2": 2.0}, {"x1": 3.0, "x2": 0.5}])
            >>> rush.push_tasks([{"x": 1}], expected_duration=600)  # ten minutes
        """
        if expected_duration is not None:
            xss_extra = _with_expected_duration(len(xss), xss_extra, expected_duration)
        keys, xs_json, ex_json = self._encode_tasks(xss, xss_extra)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise RushError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        triples = list(zip(keys, xs_json, ex_json))
        self._before_push()
        for lo in range(0, len(triples), PUSH_CHUNK):
            self.view.protocol.push_tasks(max_retries, triples[lo : lo + PUSH_CHUNK])
        return keys

    def _push_final(self, state: str, xss: Sequence[dict], xss_extra: Sequence[dict] | None,
                    fields: Sequence[tuple[str, str, str, str]]) -> list[str]:
        keys, xs_json, ex_json = self._encode_tasks(xss, xss_extra)
        rows = [(k, x, e, *f) for k, x, e, f in zip(keys, xs_json, ex_json, fields)]
        self._before_push()
        for lo in range(0, len(rows), PUSH_CHUNK):
            self.view.protocol.push_final_tasks(state, rows[lo : lo + PUSH_CHUNK])
        return keys

    def push_finished_tasks(
        self,
        xss: Sequence[dict],
        yss: Sequence[dict],
        xss_extra: Sequence[dict] | None = None,
        yss_extra: Sequence[dict] | None = None,
    ) -> list[str]:
        """Record tasks evaluated elsewhere as finished (e.g. an initial design).

        Example:
            >>> rush.push_finished_tasks([{"x": 1}], [{"y": 1}])
        """
        yss = as_list(yss, len(list(xss)), "yss", recycle=False)
        ye = as_list(yss_extra, len(yss), "yss_extra")
        fields = [("ys", codec.encode_dict(y, "ys") or "{}", "ys_extra", codec.encode_dict(e, "ys_extra"))
                  for y, e in zip(yss, ye)]
        return self._push_final(TaskState.FINISHED, xss, xss_extra, fields)

    def push_failed_tasks(
        self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None, conditions: Sequence[Any] | None = None
    ) -> list[str]:
        """Record tasks as failed, with a condition (message) each.

        Example:
            >>> rush.push_failed_tasks([{"x": -1}], conditions=["out of domain"])
        """
        conds = as_list(conditions, len(list(xss)), "conditions")
        fields = [("condition", codec.condition(c), "", "") for c in conds]
        return self._push_final(TaskState.FAILED, xss, xss_extra, fields)

    def empty_queue(self) -> int:
        """Fail every queued task with "Removed from queue"; returns how many.

        Example:
            >>> rush.empty_queue()
            12
        """
        return self.view.protocol.empty_queue("Removed from queue")

    # ------------------------------------------------------------------ tasks out
    def _records_from(self, mode: str, *args: Any) -> list[dict]:
        return codec.loads(self.view.protocol.fetch(mode, *args))

    def _fetch_states(self, states: Sequence[str]) -> list[dict]:
        for s in states:
            if s not in TASK_STATES:
                raise RushError(f"unknown task state {s!r}; states are {TASK_STATES}")
        return self._records_from("states", *states)

    def fetch_queued_tasks(self) -> pd.DataFrame:
        """Queued tasks (including those a worker popped but has not started)."""
        return task_table((flatten(r) for r in self._fetch_states([TaskState.QUEUED])), with_state=False)

    def fetch_running_tasks(self) -> pd.DataFrame:
        """Running tasks with the id of the worker running each."""
        return task_table((flatten(r) for r in self._fetch_states([TaskState.RUNNING])), with_state=False)

    def fetch_failed_tasks(self) -> pd.DataFrame:
        """Failed tasks with their ``condition`` (the error message)."""
        return task_table((flatten(r) for r in self._fetch_states([TaskState.FAILED])), with_state=False)

    def fetch_finished_tasks(self, reset_cache: bool = False) -> pd.DataFrame:
        """Finished tasks. Cached: each call reads only the tasks finished since the last.

        Example:
            >>> rush.fetch_finished_tasks()[["x1", "x2", "y", "worker_id"]]
        """
        if reset_cache:
            self.reset_cache()
        return self._finished.extend(self._read_new_finished())

    @property
    def n_cached_finished(self) -> int:
        """How many finished tasks this view holds in its cache (`fetch_finished_tasks` reads only later ones).

        Example:
            >>> net.fetch_finished_tasks(); net.tasks.n_cached_finished
            3
        """
        return len(self._finished.rows)

    @property
    def _finished_rows(self) -> list[dict]:
        """The cached finished tasks as flat rows, in finish order."""
        return self._finished.rows

    def _read_new_finished(self) -> list[dict]:
        """Flat rows of the finished tasks this view has not read yet; advances the read offset.

        The offset counts entries of the finished list, not rows: a task whose hash is gone
        (deleted, evicted) gives no row, and counting rows would read the entries after it again.
        One call when few are new (it also returns the list's length); the rest in chunks read
        one request ahead (`Protocol.fetch_ranges`), so Redis builds a chunk while this process
        decodes the one before.
        """
        offset = self._finished_read
        length, text = self.view.protocol.fetch_counted(TaskState.FINISHED, offset, offset + FIRST_CHUNK - 1)
        rows = [flatten(r) for r in codec.loads(text)]
        start = offset + FIRST_CHUNK
        n = length
        if n > start:
            step = PIPELINE_CHUNK
            ranges = [(lo, min(lo + step, n) - 1) for lo in range(start, n, step)]
            self.view.protocol.fetch_ranges(TaskState.FINISHED, ranges,
                                            lambda t: rows.extend([flatten(r) for r in codec.loads(t)]))
        # the first range and the length are one atomic read, the other ranges end at that length
        self._finished_read = max(offset, n)
        return rows

    def fetch_new_tasks(self, timeout: float = 0) -> pd.DataFrame:
        """Finished tasks not returned by an earlier call of this method; waits up to
        ``timeout`` seconds for at least one.

        Example:
            >>> while (new := rush.fetch_new_tasks(timeout=5)).shape[0]: update_model(new)
        """
        deadline = time.monotonic() + timeout
        while True:
            # rows only: the full table is built when asked for
            self._finished_rows.extend(self._read_new_finished())
            if len(self._finished_rows) > self._new_offset or time.monotonic() >= deadline:
                break
            time.sleep(min(defaults.FETCH_NEW_POLL, max(0.0, deadline - time.monotonic())))
        rows = self._finished_rows[self._new_offset :]
        self._new_offset = len(self._finished_rows)
        return task_table(rows, with_state=False)

    def fetch_tasks(self) -> pd.DataFrame:
        """Every task with its ``state``, read in one atomic step."""
        return self.fetch_tasks_with_state()

    def fetch_tasks_with_state(self, states: Sequence[str] = TASK_STATES) -> pd.DataFrame:
        """Tasks of these states with a ``state`` column, read in one atomic step, so
        every task appears exactly once.

        Example:
            >>> rush.fetch_tasks_with_state(states=["running", "finished"])
        """
        return task_table(flatten(r) for r in self._fetch_states(list(states)))

    def tasks_with_state(self, states: Sequence[str] = TASK_STATES) -> dict[str, list[str]]:
        """Task keys by state, read in one atomic step.

        Example:
            >>> rush.tasks_with_state(["queued", "running"])
            {'queued': [...], 'running': [...]}
        """
        for s in states:
            if s not in TASK_STATES:
                raise RushError(f"unknown task state {s!r}; states are {TASK_STATES}")
        rows = self.view.protocol.keys_with_state(list(states))
        return {row[0]: list(row[1:]) for row in rows}

    def _task_states(self, keys: Sequence[str] | str) -> list[str | None]:
        """The state of each task (None when its hash is gone), in one round trip."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        if not keys:
            return []
        with self.view.connector.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hget(self.view.keys.task(k), "state")
            return pipe.execute()

    def task_fields(self, keys: Sequence[str], fields: Sequence[str]) -> list[list[str | None]]:
        """These fields of each task's hash (``state``, ``started_at``, ``worker_id``, ...; None where
        absent, all None for a task that is gone), in one round trip: a poll cheaper than a fetch.

        Example:
            >>> net.tasks.task_fields(keys, ["state", "worker_id"])
            [['running', 'w1'], ['queued', None]]
        """
        with self.view.connector.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(self.view.keys.task(k), list(fields))
            return pipe.execute()

    def task_outputs(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """Each task's outputs (its ``ys``, decoded; None for a task with none: queued, running or gone),
        in one round trip: the output names without a fetch of whole records.

        Example:
            >>> net.tasks.task_outputs([key])
            [{'y': 0.25, 'loss': 0.1}]
        """
        return [codec.loads(ys) if ys else None for (ys,) in self.task_fields(keys, ["ys"])] if keys else []

    def task_records(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """The stored records of these tasks as they are (``xs``, ``ys``, ``xs_extra``, ``ys_extra`` and
        ``condition`` as dicts, not flattened into columns), in one call; a task that is gone is left out.

        Example:
            >>> net.tasks.task_records([key])[0]["ys_extra"]
        """
        return self._records_from("keys", *keys) if keys else []

    def is_running_task(self, keys: Sequence[str] | str) -> list[bool]:
        """For each key, whether that task is running (claimed by a worker, prefetched ones
        too, as in `fetch_running_tasks`). One round trip for all keys; an unknown key is False.

        Example:
            >>> rush.is_running_task([task["key"], "no-such-key"])
            [True, False]
        """
        return [s == TaskState.RUNNING for s in self._task_states(keys)]

    def is_failed_task(self, keys: Sequence[str] | str) -> list[bool]:
        """For each key, whether that task failed. One round trip for all keys; an unknown key is False.

        Example:
            >>> rush.is_failed_task(keys)
            [True, False]
        """
        return [s == TaskState.FAILED for s in self._task_states(keys)]

    def task_rows(self, states: Sequence[str] = TASK_STATES, limit: int | None = None) -> list[dict[str, Any]]:
        """Tasks of these states as flat dicts (parameters, outputs, state, worker, condition).

        Example:
            >>> net.task_rows([TaskState.FAILED], limit=5)
        """
        for st in states:
            if st not in TASK_STATES:
                raise RushConfigError(f"unknown task state {st!r}; states are {', '.join(TASK_STATES)}")
        rows = [flatten(r) for r in self._records_from("states", *states)]
        return rows[:limit] if limit is not None else rows

    def recent_durations(self, n: int = 25) -> list[float]:
        """Run times (s) of the ``n`` tasks that finished last (one pipeline).

        Example:
            >>> statistics.median(net.recent_durations())
            2.5
        """
        keys = self.view.connector.lrange(self.view.keys.finished, -n, -1)
        if not keys:
            return []
        with self.view.connector.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(self.view.keys.task(k), ["started_at", "finished_at"])
            rows = pipe.execute()
        return [float(f) - float(s) for s, f in rows if s and f]

    def fetch_task(self, key: str) -> dict[str, Any] | None:
        """One task as a flat dict, or None."""
        recs = self._records_from("keys", key)
        return flatten(recs[0]) if recs else None

    def counts_by_state(self) -> dict[str, int]:
        """Number of tasks in each state, read in one step.

        Example:
            >>> net.counts_by_state()
            {'queued': 0, 'running': 2, 'finished': 98, 'failed': 0}
        """
        counts = self.view.protocol.counts()  # queued, running, finished, failed (then all tasks)
        return {state.value: counts[i] for i, state in enumerate(TaskState)}

    @property
    def n_queued_tasks(self) -> int:
        return self.counts_by_state()[TaskState.QUEUED]

    @property
    def n_running_tasks(self) -> int:
        return self.counts_by_state()[TaskState.RUNNING]

    @property
    def n_finished_tasks(self) -> int:
        return int(self.view.connector.llen(self.view.keys.finished))

    @property
    def n_failed_tasks(self) -> int:
        return int(self.view.connector.llen(self.view.keys.failed))

    @property
    def n_tasks(self) -> int:
        return int(self.view.connector.llen(self.view.keys.all_tasks))

    @property
    def queued_tasks(self) -> list[str]:
        return self.tasks_with_state([TaskState.QUEUED])[TaskState.QUEUED]

    @property
    def running_tasks(self) -> list[str]:
        return self.tasks_with_state([TaskState.RUNNING])[TaskState.RUNNING]

    @property
    def finished_tasks(self) -> list[str]:
        return self.tasks_with_state([TaskState.FINISHED])[TaskState.FINISHED]

    @property
    def failed_tasks(self) -> list[str]:
        return self.tasks_with_state([TaskState.FAILED])[TaskState.FAILED]

    def reset_cache(self) -> None:
        """Forget cached finished tasks (the next fetch reads all again)."""
        self._finished = AppendFrame()
        self._finished_read = 0
        self._new_offset = 0

    # ------------------------------------------------------------------ logs
    def _log_rows(self, start: str) -> list[dict]:
        rows = []
        for entry_id, fields in self.view.connector.xrange(self.view.keys.log, min=start):
            rows.append(
                {
                    "id": entry_id,
                    "worker_id": fields.get("worker_id"),
                    "level": fields.get("level"),
                    # the stream id is the Redis server's clock, shared by every node
                    "timestamp": int(entry_id.split("-")[0]) / 1000.0,
                    "logger": fields.get("logger"),
                    "msg": fields.get("msg"),
                }
            )
        return rows

    def read_log(self, worker_ids: Sequence[str] | str | None = None, time_difference: bool = False) -> pd.DataFrame:
        """Every log record the workers sent (up to the last 10,000), oldest first.

        ``worker_ids``: only these workers' records. ``time_difference=True`` adds a
        ``time_difference`` column: seconds since the same worker's previous record (0 for its
        first), as rush's ``read_log(time_difference = TRUE)``.

        Example:
            >>> rush.read_log()[["worker_id", "level", "msg"]]
            >>> rush.read_log(worker_ids=["w-3f9a1c0d2b7e"], time_difference=True)
        """
        import pandas as pd

        if not isinstance(time_difference, bool):
            raise RushError(f"time_difference must be True or False, got {time_difference!r}")
        rows = self._log_rows("-")
        if worker_ids is not None:
            wanted = {worker_ids} if isinstance(worker_ids, str) else set(worker_ids)
            rows = [r for r in rows if r["worker_id"] in wanted]
        df = pd.DataFrame(rows, columns=["id", *LOG_COLUMNS])
        df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
        df = df[LOG_COLUMNS]
        if time_difference:
            previous = df.groupby("worker_id", sort=False)["timestamp"].shift(1).fillna(df["timestamp"])
            df = df.assign(time_difference=(df["timestamp"] - previous).dt.total_seconds())
        return df

    def log_rows(self, after: str = "-") -> list[dict[str, Any]]:
        """Log records after stream id ``after`` (``-``: from the start), oldest first.

        Example:
            >>> net.log_rows()[0]["msg"]
            'worker started'
        """
        return self._log_rows("-" if after == "-" else "(" + after)

    def last_log_id(self) -> str | None:
        """The stream id of the newest log record (None: no record), in one round trip: whether
        `log_rows` has anything new, without reading it.

        Example:
            >>> net.tasks.last_log_id()
            '1718000000000-0'
        """
        last = self.view.connector.xrevrange(self.view.keys.log, count=1)
        return str(last[0][0]) if last else None

    def forget_log_position(self) -> None:
        """`print_log` prints every record again (the network's log was deleted)."""
        self._log_last_id = "-"

    def print_log(self) -> None:
        """Print log records that arrived since the last call."""
        start = "-" if self._log_last_id == "-" else "(" + self._log_last_id
        for row in self._log_rows(start):
            print(f"[{row['worker_id']}] {row['level']} {row['logger']}: {row['msg']}")
            self._log_last_id = row["id"]


def _with_expected_duration(n: int, extras: Sequence[dict] | None,
                            expected: float | Sequence[float]) -> list[dict]:
    durations = [expected] * n if isinstance(expected, (int, float)) else list(expected)
    if len(durations) != n or not all(isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0
                                      for d in durations):
        raise RushError(f"expected_duration must be a number of seconds > 0 or one per task ({n}), "
                        f"got {expected!r}")
    base = as_list(extras, n, "xss_extra")
    return [{**(e or {}), "expected_duration": float(d)} for e, d in zip(base, durations)]


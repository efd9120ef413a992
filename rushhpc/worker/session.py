"""The engine of one worker: its connection, registration, the Lua step of each task call, its end.

`rushhpc.worker.api.RushWorker` (what a loop receives) is a thin facade over one `WorkerSession`;
`rushhpc.worker.main.run_worker` drives the session's end (`end_lost`, `end_failed`, `end_terminated`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Sequence

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from rushhpc import defaults
from rushhpc.core import codec
from rushhpc.core.liveness import heartbeat_settings
from rushhpc.core.spec import WorkerSpec, new_worker_id
from rushhpc.core.states import CancelCause, JobState, LostReason, Release, TaskState, WorkerState
from rushhpc.errors import RushConfigError, RushError, RushPayloadError
from rushhpc.launchers.registry import job_environment
from rushhpc.network.tasks import as_list, new_keys
from rushhpc.network.view import Network
from rushhpc.store.connection import RedisConfig, as_config, env_config
from rushhpc.store.keys import Keys, validate_id
from rushhpc.store.protocol import Call
from rushhpc.store.wire import WorkerRedis
from rushhpc.worker.heartbeat import start_heartbeat

if TYPE_CHECKING:
    import subprocess

log = logging.getLogger("rushhpc.worker.api")

TERMINATE_CHECK_INTERVAL = defaults.TERMINATE_CHECK_INTERVAL

# The xs_extra field a task may carry: how long it is expected to run (seconds). A worker
# whose walltime cannot fit it leaves it for another worker.
EXPECTED_DURATION = "expected_duration"

# Plain strings for the comparisons of every call (a str enum member compares a little slower).
_RUNNING = WorkerState.RUNNING.value
_FINISHED = TaskState.FINISHED.value
_FAILED = TaskState.FAILED.value


class WorkerStopped(RushError):
    """This worker is no longer running (killed, lost, or terminated): it takes no new tasks."""


def _worker_client(cfg: RedisConfig, network_id: str) -> WorkerRedis:
    """The worker's one connection: no pool lookup per command (about 20 us each); retries
    with backoff through a Redis restart. On a Redis Cluster it goes to the primary that owns
    the network's slot (every key of a network is there): looked up now, followed on a MOVED,
    and looked up again when that primary stops answering (`WorkerRedis.locate`)."""
    key = Keys(network_id).meta
    known: list[tuple[str, int]] = []
    node = cfg.node_for(key, known)
    retry = Retry(ExponentialBackoff(cap=defaults.WORKER_RETRY_CAP, base=defaults.WORKER_RETRY_BASE),
                  defaults.WORKER_RETRIES)
    client = node.client(single_connection=True, retry=retry, cls=WorkerRedis)
    if cfg.cluster:
        def locate() -> tuple[str, int]:
            n = cfg.node_for(key, known)
            return n.host, n.port

        client.locate = locate  # the primary died: find the replica that took over
    return client


def _encode_tasks(xss: Sequence[dict], xss_extra: Sequence[dict] | None) -> tuple[list[str], list[str], list[str]]:
    """New keys and the JSON of the tasks' ``xs`` and ``xs_extra`` (refused before anything is written)."""
    if isinstance(xss, dict):
        raise RushError("xss must be a list of dicts, one per task: wrap a single task as [xs]")
    xss = list(xss)
    extras = as_list(xss_extra, len(xss), "xss_extra")
    xs_json = [codec.encode_dict(xs, "xs") or "{}" for xs in xss]
    ex_json = [codec.encode_dict(e, "xs_extra") for e in extras]
    return new_keys(len(xss)), xs_json, ex_json


def _registration_error(network_id: str, worker_id: str, error: str) -> str:
    code = error.split(" ", 1)[0]
    if code == "NONETWORK":
        return (f"worker {worker_id}: network {network_id!r} does not exist on this Redis (never created, "
                "or reset): start workers through a manager of the network, and check the worker's Redis")
    if code == "SCHEMA":
        return f"worker {worker_id}: {error.split(' ', 1)[1]}; run the rushhpc version that created the network"
    return f"cannot register worker {worker_id}: {error.split(' ', 1)[-1] if code == 'TAKEN' else error}"


class WorkerSession:
    """One worker's state and steps (see `RushWorker`, its facade). Attributes read by the facade:
    ``worker_id``, ``network_id``, ``net`` (its network view), ``deadline``, ``stop_reason``, ``heartbeat``."""

    def __init__(
        self,
        network_id: str,
        config: RedisConfig | str | dict | None = None,
        worker_id: str | None = None,
        heartbeat_period: float | None = None,
        heartbeat_expire: float | None = None,
        *,
        launcher: str = "manual",
        watch_pid: int | None = None,
        walltime: float | None = None,
        walltime_margin: float | None = None,
        deferred_replies: bool = False,
        managed: bool = False,
        create_network: bool = True,
    ):
        cfg = as_config(config) or env_config()
        if cfg is None:
            raise RushConfigError(
                f"worker of network {network_id!r}: no Redis configured. Pass config=... (the manager's "
                "rush.config) or set RUSHHPC_REDIS_URL; a worker never starts a Redis of its own."
            )
        self.spec = WorkerSpec(
            network_id=network_id, start_id="", worker_id=validate_id(worker_id, "worker id") if worker_id else new_worker_id(),
            heartbeat_period=heartbeat_period, heartbeat_expire=heartbeat_expire, launcher=launcher,
            managed=managed, watch_pid=watch_pid, walltime=walltime, walltime_margin=walltime_margin,
        )
        cfg.connect().close()  # a clear error (unreachable, password) before anything else
        net = Network(network_id, cfg, client_factory=lambda: _worker_client(cfg, network_id))
        self.net = net
        self._conn = net.connector
        self._protocol = net.protocol
        self._keys = net.keys
        if create_network and not net.exists():
            net.create()  # idempotent (HSETNX): several such workers may race to it
        self.worker_id: str = self.spec.worker_id or ""
        self._deferred = deferred_replies
        if deferred_replies:
            # EVALSHA of a script the server has not seen fails (NOSCRIPT), and a deferred
            # call would learn it only on the next call: load them now.
            self._protocol.preload("push_running_tasks", "finish_tasks")
        self._attempts: dict[str, str] = {}
        self._pops = 0
        # tasks claimed ahead (pop_task's prefetch): running under this worker, not started;
        # the head is marked started by the next finish/fail call, or by a call of its own
        self._prefetched: deque[dict[str, Any]] = deque()
        self._head_started = False
        self._terminated = False
        self._last_check = float("-inf")
        # A batch worker knows its deadline and stops taking tasks when too little time is left.
        self.deadline = time.time() + walltime - (walltime_margin or 0) if walltime else None
        self.stop_reason = ""  # why this worker stopped taking tasks, when it chose to
        self._claimed_at: dict[str, float] = {}
        self._durations: deque[float] = deque(maxlen=defaults.DURATION_WINDOW)
        self.heartbeat: subprocess.Popen | None = None
        wid = self.worker_id
        self._k_pending = self._keys.pending(wid)
        self._k_worker = self._keys.worker(wid)
        self._register(cfg, heartbeat_period, heartbeat_expire)

    def _register(self, cfg: RedisConfig, heartbeat_period: float | None, heartbeat_expire: float | None) -> None:
        """Write this worker's hash (where it runs, its job, its heartbeat's pid) in one atomic step."""
        spec, wid = self.spec, self.worker_id
        info = {"pid": str(os.getpid()), "hostname": socket.gethostname(), "launcher": spec.launcher}
        job = job_environment()  # the scheduler's job this process runs in, if any
        if job is not None:
            info.update(job.fields())
        # where it runs: the scheduler's node name, else this host's name
        info["node"] = info.get("node") or info["hostname"]
        if spec.managed and job is not None:
            info["managed"] = "1"  # the scheduler's view decides whether it is lost
            info["job_state"] = JobState.RUNNING.value  # it registers from inside its job: the job runs
        if self.deadline:
            info["deadline"] = f"{self.deadline:.3f}"
        expire = 0.0
        if heartbeat_period is not None:
            heartbeat_period, expire = heartbeat_settings(heartbeat_period, heartbeat_expire)
            # started first, so that its pid is part of the registration (one atomic write)
            self.heartbeat = start_heartbeat(cfg, spec.network_id, wid, heartbeat_period, expire, watch_pid=spec.watch_pid)
            info["heartbeat_pid"] = str(self.heartbeat.pid)
        try:
            self._protocol.register_worker(wid, max(1, round(expire)) if expire else 0, info)
        except redis.ResponseError as e:
            self._stop_heartbeat()
            self._conn.close()
            raise RushConfigError(_registration_error(spec.network_id, wid, str(e))) from None
        if self.deadline is not None:
            self._durations.extend(self.net.recent_durations(defaults.DURATION_WINDOW))

    # ------------------------------------------------------------------ walltime
    def typical_duration(self) -> float | None:
        """Median duration (s) of the tasks this worker saw finish (`RushWorker.typical_duration`)."""
        if not self._durations:
            return None
        # the median by hand: `statistics` costs every worker process 0.4 MiB resident (issue 12)
        d = sorted(self._durations)
        mid = len(d) // 2
        return d[mid] if len(d) % 2 else (d[mid - 1] + d[mid]) / 2

    def _time_for(self, need: float | None, what: str) -> bool:
        """False (and this worker stops taking tasks) when its walltime cannot fit ``need`` seconds."""
        if self.deadline is None or not need:
            return True
        left = self.deadline - time.time()
        if left >= need:
            return True
        self._terminated = True
        self.stop_reason = f"walltime: {max(0.0, left):.0f} s left, {what} needs {need:.0f} s"
        log.info("worker %s stops taking tasks (%s)", self.worker_id, self.stop_reason)
        return False

    # ------------------------------------------------------------------ state
    @property
    def terminated(self) -> bool:
        """Whether the loop should return (`RushWorker.terminated`): read from Redis at most every 20 ms."""
        if self._terminated:
            return True
        if self.deadline is not None and time.time() >= self.deadline:
            self._terminated = True
            return True
        now = time.monotonic()
        if now - self._last_check >= TERMINATE_CHECK_INTERVAL:
            self._last_check = now
            state, flag = self._conn.hmget(self._k_worker, ["state", "terminate"])
            if state != _RUNNING or flag == "1":
                self._terminated = True
        return self._terminated

    def set_terminated(self, reason: str = LostReason.TERMINATED.value) -> None:
        """Mark this worker terminated (`RushWorker.set_terminated`)."""
        self._terminated = True
        self._unstart_head()
        self._mark(WorkerState.TERMINATED,
                   [(self.worker_id, reason, f"worker {self.worker_id} terminated while the task was running")], retry=False)

    def _fail_worker(self, message: str) -> None:
        self._terminated = True
        self._unstart_head()
        last = message.strip().splitlines()[-1] if message.strip() else "error"
        self._mark(WorkerState.FAILED, [(self.worker_id, message[-defaults.FAILURE_MESSAGE_CHARS:],
                                         f"worker {self.worker_id} failed: {last}")], retry=False)

    def _stopped(self, state: str | None) -> WorkerStopped:
        self._terminated = True
        return WorkerStopped(f"worker {self.worker_id} is {state or 'not registered'}: it takes no new tasks")

    # ------------------------------------------------------------------ tasks
    def _note_state(self, state: str, terminate: str) -> None:
        """Every reply of a task script carries the worker's state: no extra read for `terminated`."""
        self._last_check = time.monotonic()
        if state != _RUNNING or terminate == "1":
            self._terminated = True

    def pop_task(self, timeout: float | None = 1, prefetch: int = 1) -> dict[str, Any] | None:
        """Take the next queued task (`RushWorker.pop_task`): prefetched ones first, else one pop step, else a blocking wait."""
        if self.deadline is not None and not self._time_for(self.typical_duration(), "a typical task"):
            self._unstart_head()  # the others go back when the worker stops (never started)
            return None
        if self._prefetched:
            if self._terminated:
                self._unstart_head()
                return None
            task = self._prefetched.popleft()
            if not self._head_started:  # no finish call marked it started: a call of its own
                self._send_start([task["key"]])
            self._head_started = False
        else:
            tasks = self._pop(max(1, int(prefetch)), 1, timeout)
            if not tasks:
                return None
            task = tasks[0]
            self._prefetched.extend(tasks[1:])
        k = task["key"]
        need = (task.get("xs_extra") or {}).get(EXPECTED_DURATION)
        if self.deadline is not None and isinstance(need, (int, float)) and not self._time_for(need, f"task {k}"):
            # untouched: back to the head of the queue for a worker with more time, uncounted
            self._protocol.give_back(self.worker_id, k, self._attempts.pop(k))
            return None
        self._claimed_at[k] = time.monotonic()
        return task

    def pop_tasks(self, n: int, timeout: float | None = 1) -> list[dict[str, Any]]:
        """Take up to ``n`` queued tasks in one step, all started (`RushWorker.pop_tasks`)."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise RushError(f"pop_tasks: n must be a positive integer, got {n!r}")
        if self._terminated or (self.deadline is not None
                                and not self._time_for(self.typical_duration(), "a typical task")):
            return []
        if self._prefetched:  # tasks pop_task prefetched come first, all started now
            out = [self._prefetched.popleft() for _ in range(min(n, len(self._prefetched)))]
            self._send_start([t["key"] for t in out])
            self._head_started = False
        else:
            out = self._pop(n, n, timeout)
        now = time.monotonic()
        for t in out:
            self._claimed_at[t["key"]] = now
        return out

    def _unstart_head(self) -> None:
        """The last finish call marked the next prefetched task started, but it will not run
        (this worker stops): give it back, uncounted, so that the stop does not count or fail it."""
        if not (self._head_started and self._prefetched):
            return
        self._head_started = False
        k = self._prefetched.popleft()["key"]
        try:
            self._protocol.give_back(self.worker_id, k, self._attempts.pop(k, ""))
        except redis.RedisError as e:  # the stop then treats it as started: a retry is used
            log.warning("worker %s: could not give back prefetched task %s: %s", self.worker_id, k, e)

    def _send_start(self, keys: Sequence[str]) -> None:
        """Mark prefetched tasks started (a finish call without results)."""
        call = self._protocol.finish_tasks_call(self.worker_id, _FINISHED, [], start=" ".join(keys))
        if self._deferred:
            self._send(call, self._on_finished)
        else:
            self._protocol.run(call)

    def _pop(self, count: int, started: int, timeout: float | None) -> list[dict[str, Any]]:
        """Claim up to ``count`` tasks, the first ``started`` of them started, as task dicts."""
        self._pops += 1
        token = str(self._pops)  # one per pop: a call re-sent after a lost reply gets the same tasks
        reply = self._protocol.pop_task(self.worker_id, token, count, None if started >= count else started)
        self._note_state(reply[0], reply[1])
        flat = reply[2:]
        if not flat:
            if self._terminated or not timeout:
                return []
            key = self._conn.blmove(self._keys.queued, self._k_pending, timeout, "RIGHT", "LEFT")
            if key is None:
                return []
            got = self._protocol.claim_task(self.worker_id, key, token)
            if not got:
                self._last_check = float("-inf")  # re-read our state on the next check
                return []
            flat = got
        tasks = []
        for i in range(0, len(flat), 4):
            k, xs, xs_extra, attempt = flat[i : i + 4]
            self._attempts[k] = attempt
            task = {"key": k, "xs": codec.decode(xs)}
            if xs_extra:
                task["xs_extra"] = codec.decode(xs_extra)
            tasks.append(task)
        return tasks

    def push_running_tasks(self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None,
                           max_tasks: int | None = None) -> list[str]:
        """Create tasks this worker evaluates itself (`RushWorker.push_running_tasks`), capped by ``max_tasks``."""
        if max_tasks is not None and (isinstance(max_tasks, bool) or not isinstance(max_tasks, int)):
            raise RushError(f"max_tasks must be an integer or None, got {max_tasks!r}")
        keys, xs_json, ex_json = _encode_tasks(xss, xss_extra)
        call = self._protocol.push_running_tasks_call(self.worker_id, list(zip(keys, xs_json, ex_json)), max_tasks)
        if self._deferred and max_tasks is None:
            for k in keys:
                self._attempts[k] = "1"
            if self._terminated:  # known to be stopping: ask before creating more work
                state = self._conn.hget(self._k_worker, "state")
                if state != _RUNNING:
                    raise self._stopped(state)
            self._send(call, self._on_pushed)
            return keys
        state, term, created = self._protocol.run(call)
        self._note_state(state, term)
        if state != _RUNNING:
            raise self._stopped(state)
        if created != "1":
            return []
        for k in keys:
            self._attempts[k] = "1"
        return keys

    def _on_pushed(self, reply: list) -> None:
        state, term = reply[0], reply[1]
        self._note_state(state, term)
        if state != _RUNNING:
            log.warning("worker %s is %s: the tasks it just created were not stored", self.worker_id, state)

    def _check_keys(self, keys: list[str], what: str) -> None:
        """Refuse duplicate or unknown task keys before anything is written."""
        if len(set(keys)) != len(keys):
            dups = sorted(k for k, n in Counter(keys).items() if n > 1)
            raise RushPayloadError(
                f"{what}: task key(s) given more than once: {', '.join(dups[:5])}; nothing was written. "
                "Report each task once per call."
            )
        unknown = [k for k in keys if k not in self._attempts]
        if unknown:  # not popped or created by this worker: they must at least be tasks of the network
            with self._conn.pipeline(transaction=False) as pipe:
                for k in unknown:
                    pipe.exists(self._keys.task(k))
                missing = [k for k, n in zip(unknown, pipe.execute()) if not n]
            if missing:
                raise RushPayloadError(
                    f"{what}: unknown task key(s) {', '.join(missing[:5])}: no such task in network "
                    f"{self.net.network_id!r}; nothing was written. Use the keys pop_task or push_running_tasks returned."
                )

    def _final(self, state: str, keys: Sequence[str], f1: str, v1: list[str], f2: str, v2: list[str]) -> list[str]:
        attempts = self._attempts
        rows = [(k, attempts.pop(k, "*"), f1, a, f2, b) for k, a, b in zip(keys, v1, v2)]
        start = ""
        if self._prefetched and not self._head_started and not self._terminated:
            start = self._prefetched[0]["key"]  # the next pop_task serves it: mark it started now
            self._head_started = True
        now = time.monotonic()
        for k in keys:
            t0 = self._claimed_at.pop(k, None)
            if t0 is not None and state == _FINISHED:
                self._durations.append(now - t0)
        call = self._protocol.finish_tasks_call(self.worker_id, state, rows, start)
        if self._deferred:
            self._send(call, self._on_finished)
            return []
        return self._on_finished(self._protocol.run(call))

    def _send(self, call: Call, on_reply: Any) -> None:
        conn = self._conn
        assert isinstance(conn, WorkerRedis)
        conn.send_script(call.script, call.keys, call.args, on_reply, call.head, call.n_head)

    def _on_finished(self, reply: list) -> list[str]:
        discarded = reply[0]
        if discarded:
            # the reply does not carry the worker's state (a read per call saved); a discarded
            # result usually means this worker was declared lost or killed: look at once
            self._last_check = float("-inf")
            log.warning(
                "worker %s: result of %d task(s) discarded, they were no longer running under this worker "
                "(declared lost, killed or requeued): %s",
                self.worker_id, len(discarded), ", ".join(discarded[:5]),
            )
        return discarded

    def finish_tasks(
        self, keys: Sequence[str] | str, yss: Sequence[dict], yss_extra: Sequence[dict] | None = None
    ) -> list[str]:
        """Report results (`RushWorker.finish_tasks`): first writer wins, late results are discarded."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        if isinstance(yss, dict):
            yss = [yss]
        yss = as_list(yss, len(keys), "yss", recycle=False)
        extras = as_list(yss_extra, len(keys), "yss_extra")
        ys_json = [codec.encode_dict(y, "ys") or "{}" for y in yss]
        ex_json = [codec.encode_dict(e, "ys_extra") for e in extras]
        self._check_keys(keys, "finish_tasks")
        return self._final(_FINISHED, keys, "ys", ys_json, "ys_extra", ex_json)

    def fail_tasks(self, keys: Sequence[str] | str, conditions: Sequence[Any] | None = None) -> list[str]:
        """Mark tasks failed with a condition each (`RushWorker.fail_tasks`)."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        conds = [codec.condition(c) for c in as_list(conditions, len(keys), "conditions")]
        self._check_keys(keys, "fail_tasks")
        return self._final(_FAILED, keys, "condition", conds, "", [""] * len(keys))

    # ------------------------------------------------------------------ end
    def _mark(self, state: WorkerState, items: list[tuple[str, str, str]], retry: bool | Release) -> None:
        """This worker's own final state (the first verdict stands); its running tasks released as ``retry`` says."""
        self._protocol.stop_workers(str(state), items, retry, source=_RUNNING)

    def _stop_heartbeat(self) -> None:
        proc = self.heartbeat
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(defaults.HEARTBEAT_STOP_WAIT)
            except Exception:  # noqa: BLE001
                proc.kill()
        self.heartbeat = None

    def close(self) -> None:
        """Stop the heartbeat and close the connection (reading the last deferred reply)."""
        self._stop_heartbeat()
        self._conn.close()

    # ------------------------------------------------------------------ the end of a worker process (run_worker)
    def stop_taking_tasks(self) -> None:
        """Let the loop finish its current task and then see `terminated` (SLURM's pre-timeout signal)."""
        self._terminated = True

    def end_lost(self, reason: str, message: str, release: Release) -> None:
        """Mark this worker lost (``reason``: it received SIGTERM); its running tasks are released as ``release`` says."""
        self._unstart_head()
        # a task it fails was stopped, not evaluated: a sweep does its point again (CancelCause)
        self._protocol.stop_workers(str(WorkerState.LOST), [(self.worker_id, reason, message)], release, source=_RUNNING,
                                    cause=CancelCause.WORKER_SIGTERM)

    def end_failed(self, message: str) -> None:
        """Mark this worker failed with ``message`` (its loop raised); its running tasks fail."""
        self._fail_worker(message)

    def end_terminated(self) -> None:
        """Mark this worker terminated (its loop returned): with its own stop reason, ``terminated`` when it
        was asked to, else ``loop returned``."""
        default = LostReason.TERMINATED if self._terminated else LostReason.LOOP_RETURNED
        self.set_terminated(self.stop_reason or default.value)

    def registered(self) -> bool:
        """Whether this worker's record is in Redis (gone: the network was reset, or Redis restarted without persistence)."""
        return self._conn.hget(self._k_worker, "state") is not None

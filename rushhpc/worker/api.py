"""The worker side: `RushWorker`, and `run_worker`, the body of ``python -m rushhpc worker``.

A worker is composed, not derived from the manager: a `WorkerSpec` (who it is), a
`Network` view on one dedicated Redis connection (what it reads and changes), and a
heartbeat process beside it. It registers itself and calls the user's loop
``loop(rush, **args)``. The loop pops queued tasks or creates its own running tasks,
and reports results; each of those is one Lua step.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections import Counter, deque
from pathlib import Path
from typing import Any, Sequence

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from rushhpc import defaults
from rushhpc.core import codec
from rushhpc.core.spec import WorkerSpec, new_worker_id
from rushhpc.core.states import Release, WorkerState
from rushhpc.errors import RushConfigError, RushError, RushPayloadError
from rushhpc.network import startargs
from rushhpc.network.logs import install as install_log_handlers
from rushhpc.network.tasks import _as_list
from rushhpc.network.view import Network, default_run_root
from rushhpc.store import signing
from rushhpc.store.connection import RedisConfig, as_config, env_config, heartbeat_settings, read_credentials
from rushhpc.store.keys import Keys, validate_id
from rushhpc.store.protocol import Call
from rushhpc.store.wire import WorkerRedis
from rushhpc.worker.heartbeat import start_heartbeat

log = logging.getLogger("rushhpc.worker.api")

TERMINATE_CHECK_INTERVAL = defaults.TERMINATE_CHECK_INTERVAL


# The xs_extra field a task may carry: how long it is expected to run (seconds). A worker
# whose walltime cannot fit it leaves it for another worker.
EXPECTED_DURATION = "expected_duration"


class WorkerStopped(RushError):
    """This worker is no longer running (killed, lost, or terminated): it takes no new tasks."""


def scheduler_job() -> dict[str, str]:
    """The batch job this process runs in, from the scheduler's environment."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        else:
            job_id = env["SLURM_JOB_ID"]
        # SLURM_RESTART_COUNT: how often the job was requeued; a requeued job may bring its worker back
        return {"job_id": job_id, "scheduler": "slurm", "node": env.get("SLURMD_NODENAME", ""),
                "array_index": env.get("SLURM_ARRAY_TASK_ID", ""), "restart": env.get("SLURM_RESTART_COUNT", "0")}
    if env.get("PBS_JOBID"):
        return {"job_id": env["PBS_JOBID"], "scheduler": "pbs", "node": socket.gethostname(),
                "array_index": env.get("PBS_ARRAY_INDEX", "")}
    return {}


def _worker_client(cfg: RedisConfig, network_id: str) -> WorkerRedis:
    """The worker's one connection: no pool lookup per command (about 20 us each); retries
    with backoff through a Redis restart. On a Redis Cluster it goes to the primary that owns
    the network's slot (every key of a network is there): looked up now, followed on a MOVED,
    and looked up again when that primary stops answering (`WorkerRedis.locate`)."""
    key = Keys(network_id).meta
    known: list[tuple[str, int]] = []
    node = cfg.node_for(key, known)
    client = node.client(single_connection=True, retry=Retry(ExponentialBackoff(cap=5.0, base=0.05), 8),
                         cls=WorkerRedis)
    if cfg.cluster:
        def locate() -> tuple[str, int]:
            n = cfg.node_for(key, known)
            return n.host, n.port

        client.locate = locate  # the primary died: find the replica that took over
    return client


class RushWorker(Network):
    """A worker of a network. Run in-process for debugging and tests, or by ``python -m rushhpc worker``.

    Creating one registers it as running. It needs a Redis (``config``, or
    ``RUSHHPC_REDIS_URL``): a worker never starts one. A worker built by hand creates its
    network when no manager has yet (like rush's ``RushWorker$new``); a launched worker
    (``python -m rushhpc worker``, ``create_network=False``) is refused when its network does
    not exist, e.g. because it was reset meanwhile. An in-process worker runs a
    heartbeat only when given ``heartbeat_period``. With ``deferred_replies=True`` (what
    worker processes use) ``push_running_tasks``, ``finish_tasks`` and ``fail_tasks``
    return without waiting for Redis's reply; it is read with the next call, and
    discarded results are then logged rather than returned.

    Example:
        >>> w = RushWorker("sweep-1", config="redis://127.0.0.1:6379")
        >>> keys = w.push_running_tasks([{"x": 1}])
        >>> w.finish_tasks(keys, [{"y": 2}])
    """

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
        super().__init__(network_id, cfg, client_factory=lambda: _worker_client(cfg, network_id))
        if create_network and not self.exists():
            self.create()  # idempotent (HSETNX): several such workers may race to it
        self.worker_id: str = self.spec.worker_id or ""
        self.deferred_replies = deferred_replies
        if deferred_replies:
            # EVALSHA of a script the server has not seen fails (NOSCRIPT), and a deferred
            # call would learn it only on the next call: load them now.
            self.protocol.preload("push_running_tasks", "finish_tasks")
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
        self.heartbeat_process: Any = None
        wid = self.worker_id
        self._k_pending = self.keys.pending(wid)
        self._k_worker = self.keys.worker(wid)
        info = {"pid": str(os.getpid()), "hostname": socket.gethostname(), "launcher": launcher}
        job = scheduler_job()
        info.update(job)
        # where it runs: the scheduler's node name (SLURMD_NODENAME), else this host's name
        info["node"] = info.get("node") or info["hostname"]
        if managed and job:
            info["managed"] = "1"  # the scheduler's view decides whether it is lost
            info["job_state"] = "running"  # it registers from inside its job: the job runs
        if self.deadline:
            info["deadline"] = f"{self.deadline:.3f}"
        expire = 0.0
        if heartbeat_period is not None:
            heartbeat_period, expire = heartbeat_settings(heartbeat_period, heartbeat_expire)
            # started first, so that its pid is part of the registration (one atomic write)
            self.heartbeat_process = start_heartbeat(
                cfg, self.network_id, wid, heartbeat_period, expire, watch_pid=watch_pid
            )
            info["heartbeat_pid"] = str(self.heartbeat_process.pid)
        try:
            self.protocol.register_worker(wid, max(1, round(expire)) if expire else 0, info)
        except redis.ResponseError as e:
            self.stop_heartbeat()
            self.connector.close()
            raise RushConfigError(_registration_error(network_id, wid, str(e))) from None
        if self.deadline is not None:
            self._durations.extend(self.recent_durations(defaults.DURATION_WINDOW))

    # ------------------------------------------------------------------ walltime
    def typical_duration(self) -> float | None:
        """Median duration (s) of the tasks this worker saw finish (its own, and the network's
        latest when it started); None before it has seen any.

        Example:
            >>> rush.typical_duration()
            2.5
        """
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
        """True once the manager asked this worker to terminate, or it is no longer running
        (killed, lost): the loop should return. Read from Redis at most every 20 ms.

        Example:
            >>> while not rush.terminated: ...
        """
        if self._terminated:
            return True
        if self.deadline is not None and time.time() >= self.deadline:
            self._terminated = True
            return True
        now = time.monotonic()
        if now - self._last_check >= TERMINATE_CHECK_INTERVAL:
            self._last_check = now
            state, flag = self.connector.hmget(self._k_worker, ["state", "terminate"])
            if state != "running" or flag == "1":
                self._terminated = True
        return self._terminated

    def set_terminated(self, reason: str = "terminated") -> None:
        """Mark this worker terminated (its loop is done). Tasks it left running fail;
        prefetched tasks it never started go back to the queue."""
        self._terminated = True
        self._unstart_head()
        self.mark_workers(WorkerState.TERMINATED,
                          [(self.worker_id, reason, f"worker {self.worker_id} terminated while the task was running")],
                          retry=False)

    def _fail_worker(self, message: str) -> None:
        self._terminated = True
        self._unstart_head()
        last = message.strip().splitlines()[-1] if message.strip() else "error"
        self.mark_workers(WorkerState.FAILED, [(self.worker_id, message[-4000:], f"worker {self.worker_id} failed: {last}")],
                          retry=False)

    def _stopped(self, state: str | None) -> WorkerStopped:
        self._terminated = True
        return WorkerStopped(f"worker {self.worker_id} is {state or 'not registered'}: it takes no new tasks")

    # ------------------------------------------------------------------ tasks
    def _note_state(self, state: str, terminate: str) -> None:
        """Every reply of a task script carries the worker's state: no extra read for `terminated`."""
        self._last_check = time.monotonic()
        if state != "running" or terminate == "1":
            self._terminated = True

    def pop_task(self, timeout: float | None = 1, prefetch: int = 1) -> dict[str, Any] | None:
        """Take the next queued task: ``{"key": ..., "xs": {...}}`` (and ``"xs_extra"``), or
        None when the queue stays empty for ``timeout`` seconds (0 or None: do not wait),
        or when this worker should stop (see `terminated`).

        While the queue has tasks, one atomic step pops and claims. On an empty queue
        the worker blocks on it (``BLMOVE`` into its pending list, then a claim), so a
        crash between the two steps leaves the task findable (`detect_lost_workers`
        requeues it).

        ``prefetch`` > 1: when this worker holds no prefetched task, the same step claims up
        to that many; the next calls serve them without a pop of their own (the next
        `finish_tasks`/`fail_tasks` call marks the next one started, so a task that crashes
        its worker still uses up a retry). Prefetched tasks run under this worker but are not
        started (`fetch_running_tasks` shows them without ``started_at``): when the worker
        stops or is lost before starting them, they go back to the queue, no retry used up.

        Example:
            >>> task = rush.pop_task(timeout=5)
            >>> if task: rush.finish_tasks([task["key"]], [{"y": f(**task["xs"])}])
        """
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
            self.protocol.give_back(self.worker_id, k, self._attempts.pop(k))
            return None
        self._claimed_at[k] = time.monotonic()
        return task

    def pop_tasks(self, n: int, timeout: float | None = 1) -> list[dict[str, Any]]:
        """Take up to ``n`` queued tasks in one atomic step, all started, to evaluate as a batch
        and report with one `finish_tasks` call. Waits up to ``timeout`` seconds for one when the
        queue is empty; ``[]`` when none came or this worker should stop. Each is a running task
        of this worker: if the worker is lost, they are retried or failed like any running task.

        Example:
            >>> tasks = rush.pop_tasks(100)
            >>> rush.finish_tasks([t["key"] for t in tasks], [{"y": f(**t["xs"])} for t in tasks])
        """
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
            self.protocol.give_back(self.worker_id, k, self._attempts.pop(k, ""))
        except redis.RedisError as e:  # the stop then treats it as started: a retry is used
            log.warning("worker %s: could not give back prefetched task %s: %s", self.worker_id, k, e)

    def _send_start(self, keys: Sequence[str]) -> None:
        """Mark prefetched tasks started (a finish call without results)."""
        call = self.protocol.finish_tasks_call(self.worker_id, "finished", [], start=" ".join(keys))
        if self.deferred_replies:
            self._send(call, self._on_finished)
        else:
            self.protocol.run(call)

    def _pop(self, count: int, started: int, timeout: float | None) -> list[dict[str, Any]]:
        """Claim up to ``count`` tasks, the first ``started`` of them started, as task dicts."""
        self._pops += 1
        token = str(self._pops)  # one per pop: a call re-sent after a lost reply gets the same tasks
        reply = self.protocol.pop_task(self.worker_id, token, count, None if started >= count else started)
        self._note_state(reply[0], reply[1])
        flat = reply[2:]
        if not flat:
            if self._terminated or not timeout:
                return []
            key = self.connector.blmove(self.keys.queued, self._k_pending, timeout, "RIGHT", "LEFT")
            if key is None:
                return []
            got = self.protocol.claim_task(self.worker_id, key, token)
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
        """Create tasks this worker evaluates itself (the propose/evaluate/report pattern).

        ``max_tasks`` caps the network's tasks (every state, ``n_tasks``): the tasks are created
        only if the network then holds at most ``max_tasks``, all or none, in one atomic step,
        and ``[]`` is returned when they were not. Workers sharing a budget of evaluations pass
        it here, so however many race for the last slots, exactly the budget is created. A
        capped call waits for its reply (the worker must know whether to evaluate).

        Example:
            >>> keys = rush.push_running_tasks([{"x1": 0.3, "x2": 4.1}])
            >>> if not rush.push_running_tasks([{"x1": 0.5, "x2": 1.0}], max_tasks=100):
            ...     return  # the budget's tasks exist
        """
        if max_tasks is not None and (isinstance(max_tasks, bool) or not isinstance(max_tasks, int)):
            raise RushError(f"max_tasks must be an integer or None, got {max_tasks!r}")
        keys, xs_json, ex_json = self._encode_tasks(xss, xss_extra)
        call = self.protocol.push_running_tasks_call(self.worker_id, list(zip(keys, xs_json, ex_json)), max_tasks)
        if self.deferred_replies and max_tasks is None:
            for k in keys:
                self._attempts[k] = "1"
            if self._terminated:  # known to be stopping: ask before creating more work
                state = self.connector.hget(self._k_worker, "state")
                if state != "running":
                    raise self._stopped(state)
            self._send(call, self._on_pushed)
            return keys
        state, term, created = self.protocol.run(call)
        self._note_state(state, term)
        if state != "running":
            raise self._stopped(state)
        if created != "1":
            return []
        for k in keys:
            self._attempts[k] = "1"
        return keys

    def _on_pushed(self, reply: list) -> None:
        state, term = reply[0], reply[1]
        self._note_state(state, term)
        if state != "running":
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
            with self.connector.pipeline(transaction=False) as pipe:
                for k in unknown:
                    pipe.exists(self.keys.task(k))
                missing = [k for k, n in zip(unknown, pipe.execute()) if not n]
            if missing:
                raise RushPayloadError(
                    f"{what}: unknown task key(s) {', '.join(missing[:5])}: no such task in network "
                    f"{self.network_id!r}; nothing was written. Use the keys pop_task or push_running_tasks returned."
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
            if t0 is not None and state == "finished":
                self._durations.append(now - t0)
        call = self.protocol.finish_tasks_call(self.worker_id, state, rows, start)
        if self.deferred_replies:
            self._send(call, self._on_finished)
            return []
        return self._on_finished(self.protocol.run(call))

    def _send(self, call: Call, on_reply: Any) -> None:
        conn = self.connector
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
        """Report results. A task is finished only if it is still running under this worker
        (first writer wins); late results are discarded, logged, and their keys returned.

        Example:
            >>> rush.finish_tasks(keys, [{"y": 0.39}])
        """
        keys = [keys] if isinstance(keys, str) else list(keys)
        if isinstance(yss, dict):
            yss = [yss]
        yss = _as_list(yss, len(keys), "yss", recycle=False)
        extras = _as_list(yss_extra, len(keys), "yss_extra")
        ys_json = [codec.encode_dict(y, "ys") or "{}" for y in yss]
        ex_json = [codec.encode_dict(e, "ys_extra") for e in extras]
        self._check_keys(keys, "finish_tasks")
        return self._final("finished", keys, "ys", ys_json, "ys_extra", ex_json)

    def fail_tasks(self, keys: Sequence[str] | str, conditions: Sequence[Any] | None = None) -> list[str]:
        """Mark tasks failed with a condition each (str, exception or dict with "message").

        Example:
            >>> rush.fail_tasks([task["key"]], [traceback.format_exc()])
        """
        keys = [keys] if isinstance(keys, str) else list(keys)
        conds = [codec.condition(c) for c in _as_list(conditions, len(keys), "conditions")]
        self._check_keys(keys, "fail_tasks")
        return self._final("failed", keys, "condition", conds, "", [""] * len(keys))

    def stop_heartbeat(self) -> None:
        proc = self.heartbeat_process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except Exception:  # noqa: BLE001
                proc.kill()
        self.heartbeat_process = None

    def close(self) -> None:
        """Stop the heartbeat and close the connection (reading the last deferred reply)."""
        self.stop_heartbeat()
        self.connector.close()


def _on_sigterm(signum, frame):  # noqa: ANN001
    # Once only: a batch worker gets SIGTERM twice (from slurmstepd or PBS, and forwarded by its batch
    # shell), and a second SystemExit raised while the first is handled cut its lost/sigterm verdict
    # short, leaving it `running` until its heartbeat key expired (issue 20, defect 9).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _registration_error(network_id: str, worker_id: str, error: str) -> str:
    code = error.split(" ", 1)[0]
    if code == "NONETWORK":
        return (f"worker {worker_id}: network {network_id!r} does not exist on this Redis (never created, "
                "or reset): start workers through a manager of the network, and check the worker's Redis")
    if code == "SCHEMA":
        return f"worker {worker_id}: {error.split(' ', 1)[1]}; run the rushhpc version that created the network"
    return f"cannot register worker {worker_id}: {error.split(' ', 1)[-1] if code == 'TAKEN' else error}"


def worker_key_file(spec: WorkerSpec) -> Path:
    """The signing key file a worker process reads: ``--signing-key``, else
    ``$RUSHHPC_SIGNING_KEY_FILE``, else ``signing.key`` beside the credentials file (the run
    directory), else ``<run root>/<network>/signing.key``.

    Example:
        >>> worker_key_file(WorkerSpec("sweep-1", "5d1e", credentials="/runs/sweep-1/credentials.json"))
        PosixPath('/runs/sweep-1/signing.key')
    """
    if spec.signing_key:
        return Path(spec.signing_key).expanduser()
    run_dir = Path(spec.credentials).expanduser().parent if spec.credentials else \
        default_run_root() / spec.network_id
    return signing.key_path(run_dir)


def run_worker(spec: WorkerSpec) -> int:
    """Run one worker to its end; returns the process exit code.

    Example (what ``python -m rushhpc worker`` does):
        >>> sys.exit(run_worker(WorkerSpec("sweep-1", start_id, credentials="~/.rushhpc/runs/sweep-1/credentials.json")))
    """
    cfg = read_credentials(spec.credentials) if spec.credentials else env_config()
    if cfg is None:
        raise RushConfigError(
            "the worker does not know where Redis is: pass --credentials FILE or set RUSHHPC_REDIS_URL"
        )
    # a worker process always has a heartbeat (defaults when none was given)
    period, expire = heartbeat_settings(spec.heartbeat_period, spec.heartbeat_expire)
    # The configuration is read and its signature checked before registering: an unreachable
    # Redis, a wrong start id, a missing key file or a bad signature is one clear error and
    # leaves no failed worker behind (the manager reports the worker's exit and stderr).
    raw = cfg.connect(decode_responses=False)
    try:
        key_file = worker_key_file(spec)
        key = signing.read_key(key_file)
        start = startargs.load(raw, Keys(spec.network_id), spec.start_id, key=key, key_file=key_file)
    finally:
        raw.close()
    worker = RushWorker(
        spec.network_id, config=cfg, worker_id=spec.worker_id, heartbeat_period=period,
        heartbeat_expire=expire, launcher=spec.launcher, watch_pid=spec.watch_pid,
        walltime=spec.walltime, walltime_margin=spec.walltime_margin, deferred_replies=True,
        managed=spec.managed, create_network=False,  # launched: a reset network stays gone
    )
    # SLURM's pre-timeout signal (USR2): finish the current task, then end as terminated.
    signal.signal(signal.SIGUSR2, lambda *_: setattr(worker, "_terminated", True))
    # SIGTERM (scancel, qdel, kill): end now as lost; running tasks are retried or fail.
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    try:
        thresholds = start["options"].get("log_thresholds")
        install_log_handlers(cfg.client(), worker.keys.log, worker.worker_id,
                             defaults.LOG_THRESHOLDS if thresholds is None else thresholds)
        start["worker_loop"](worker, **start["args"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if code == 128 + signal.SIGTERM:
            # cancelled, preempted, or a time limit without time to finish: the scheduler's
            # view (reconciliation) later replaces "sigterm" with the precise reason. A batch
            # worker's tasks go back uncounted until that verdict says whether they count.
            release = Release.HOLD if spec.managed and scheduler_job() else Release.RETRY
            worker._unstart_head()
            worker.mark_workers(WorkerState.LOST, [(worker.worker_id, "sigterm",
                                                    f"worker {worker.worker_id} received SIGTERM")], retry=release)
        else:
            worker._fail_worker(f"SystemExit({e.code})")
    except WorkerStopped as e:
        print(f"rushhpc worker {worker.worker_id}: {e}", file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the worker records every failure, Ctrl-C included
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        worker._fail_worker(tb)
        code = 1
    else:
        worker.set_terminated(worker.stop_reason or ("terminated" if worker._terminated else "loop returned"))
        try:
            if worker.connector.hget(worker._k_worker, "state") is None:
                # its record vanished: the network was reset, or Redis restarted without persistence
                print(f"rushhpc worker {worker.worker_id}: network {spec.network_id!r} is gone from Redis "
                      "(reset, or a Redis restart without persistence); exiting", file=sys.stderr)
                code = 3
        except redis.RedisError:
            code = 3
    finally:
        worker.stop_heartbeat()
        try:
            worker.connector.close()  # reads the last deferred reply
        except redis.RedisError as e:
            print(f"rushhpc worker {worker.worker_id}: closing the connection: {e}", file=sys.stderr)
    return code

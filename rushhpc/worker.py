"""The worker side: `RushWorker`, and `run_worker`, the body of ``python -m rushhpc worker``.

A worker registers itself, runs a heartbeat process beside it, and calls the
user's loop ``loop(rush, **args)``. The loop pops queued tasks or creates its
own running tasks, and reports results; each of those is one Lua step.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any, Sequence

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from . import codec, startargs
from .config import DEFAULT_LOG_THRESHOLDS, RedisConfig, env_config, heartbeat_settings, read_credentials
from .errors import RushConfigError, RushError
from .heartbeat import start_heartbeat
from .launchers.base import new_worker_id
from .layout import Scripts, validate_id
from .logs import install as install_log_handlers
from .replies import WorkerRedis
from .rush import Rush
from .tasks import _as_list

log = logging.getLogger("rushhpc.worker")

TERMINATE_CHECK_INTERVAL = 0.02  # seconds between Redis reads of the terminate flag
MANAGED_LAUNCHERS = ("slurm", "pbs", "submitit")


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
        return {"job_id": job_id, "scheduler": "slurm", "node": env.get("SLURMD_NODENAME", ""),
                "array_index": env.get("SLURM_ARRAY_TASK_ID", "")}
    if env.get("PBS_JOBID"):
        return {"job_id": env["PBS_JOBID"], "scheduler": "pbs", "node": socket.gethostname(),
                "array_index": env.get("PBS_ARRAY_INDEX", "")}
    return {}


class RushWorker(Rush):
    """A worker of a network. Run in-process for debugging and tests, or by ``python -m rushhpc worker``.

    Creating one registers it as running. An in-process worker runs a heartbeat
    only when given ``heartbeat_period``. With ``deferred_replies=True`` (what worker
    processes use) ``push_running_tasks``, ``finish_tasks`` and ``fail_tasks`` return
    without waiting for Redis's reply; it is read with the next call, and discarded
    results are then logged rather than returned.

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
    ):
        super().__init__(network_id, config)
        self.worker_id = validate_id(worker_id, "worker id") if worker_id else new_worker_id()
        # One dedicated connection: no pool lookup per command (about 20 us each).
        self.connector.close()
        self.connector = self.config.client(
            single_connection=True, retry=Retry(ExponentialBackoff(cap=5.0, base=0.05), 8), cls=WorkerRedis
        )
        self.scripts = Scripts(self.connector)
        self.deferred_replies = deferred_replies
        if deferred_replies:
            # EVALSHA of a script the server has not seen fails (NOSCRIPT), and a deferred
            # call would learn it only on the next call: load them now.
            for script in (self.scripts.push_running_tasks, self.scripts.finish_tasks):
                self.connector.script_load(script.script)
        self._attempts: dict[str, str] = {}
        self._terminated = False
        self._last_check = float("-inf")
        # A batch worker knows its deadline and stops taking tasks when too little time is left.
        self.deadline = time.time() + walltime - (walltime_margin or 0) if walltime else None
        self.heartbeat_process = None
        k, wid = self.keys, self.worker_id
        self._k_pending = k.pending(wid)
        self._k_wtasks = k.worker_tasks(wid)
        self._k_worker = k.worker(wid)
        info = {"pid": str(os.getpid()), "hostname": socket.gethostname(), "launcher": launcher}
        job = scheduler_job()
        info.update(job)
        if launcher in MANAGED_LAUNCHERS and job:
            info["managed"] = "1"  # the scheduler's view decides whether it is lost
        if self.deadline:
            info["deadline"] = f"{self.deadline:.3f}"
        expire = 0.0
        if heartbeat_period is not None:
            heartbeat_period, expire = heartbeat_settings(heartbeat_period, heartbeat_expire)
            # started first, so that its pid is part of the registration (one atomic write)
            self.heartbeat_process = start_heartbeat(
                self.config.url(), self.network_id, wid, heartbeat_period, expire, watch_pid=watch_pid
            )
            info["heartbeat_pid"] = str(self.heartbeat_process.pid)
        fields = [x for kv in info.items() for x in kv]
        try:
            self.scripts.register_worker(
                keys=[k.workers, k.workers_in("running"), self._k_worker, k.heartbeat(wid)],
                args=[k.prefix, wid, str(max(1, round(expire)) if expire else 0), *fields],
            )
        except redis.ResponseError as e:
            self.stop_heartbeat()
            raise RushConfigError(f"cannot register worker: {e}") from None

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
        """Mark this worker terminated (its loop is done). Tasks it left running fail."""
        self._terminated = True
        self._mark_workers(
            "terminated", [(self.worker_id, reason, f"worker {self.worker_id} terminated while the task was running")], retry=False
        )

    def _fail_worker(self, message: str) -> None:
        self._terminated = True
        self._mark_workers("failed", [(self.worker_id, message[-4000:], f"worker {self.worker_id} failed: {message.strip().splitlines()[-1] if message.strip() else 'error'}")], retry=False)

    def _stopped(self, state: str | None) -> WorkerStopped:
        self._terminated = True
        return WorkerStopped(f"worker {self.worker_id} is {state or 'not registered'}: it takes no new tasks")

    # ------------------------------------------------------------------ tasks
    def _note_state(self, state: str, terminate: str) -> None:
        """Every reply of a task script carries the worker's state: no extra read for `terminated`."""
        self._last_check = time.monotonic()
        if state != "running" or terminate == "1":
            self._terminated = True

    def pop_task(self, timeout: float | None = 1) -> dict[str, Any] | None:
        """Take the next queued task: ``{"key": ..., "xs": {...}}`` (and ``"xs_extra"``), or
        None when the queue stays empty for ``timeout`` seconds (0 or None: do not wait),
        or when this worker should stop (see `terminated`).

        While the queue has tasks, one atomic step pops and claims. On an empty queue
        the worker blocks on it (``BLMOVE`` into its pending list, then a claim), so a
        crash between the two steps leaves the task findable (`detect_lost_workers`
        requeues it).

        Example:
            >>> task = rush.pop_task(timeout=5)
            >>> if task: rush.finish_tasks([task["key"]], [{"y": f(**task["xs"])}])
        """
        k, xs, xs_extra, attempt, state, term = self.scripts.pop_task(
            keys=[self.keys.queued, self.keys.running, self._k_wtasks, self._k_worker],
            args=[self.keys.prefix, self.worker_id],
        )
        self._note_state(state, term)
        if not k:
            if self._terminated or not timeout:
                return None
            key = self.connector.blmove(self.keys.queued, self._k_pending, timeout, "RIGHT", "LEFT")
            if key is None:
                return None
            got = self.scripts.claim_task(
                keys=[self._k_pending, self.keys.running, self._k_wtasks, self._k_worker, self.keys.queued],
                args=[self.keys.prefix, self.worker_id, key],
            )
            if not got:
                self._last_check = float("-inf")  # re-read our state on the next check
                return None
            k, xs, xs_extra, attempt = got
        self._attempts[k] = attempt
        task = {"key": k, "xs": codec.decode(xs)}
        if xs_extra:
            task["xs_extra"] = codec.decode(xs_extra)
        return task

    def push_running_tasks(self, xss: Sequence[dict], xss_extra: Sequence[dict] | None = None) -> list[str]:
        """Create tasks this worker evaluates itself (the propose/evaluate/report pattern).

        Example:
            >>> keys = rush.push_running_tasks([{"x1": 0.3, "x2": 4.1}])
        """
        keys, xs_json, ex_json = self._encode_tasks(xss, xss_extra)
        args = [self.keys.prefix, self.worker_id]
        for k, x, e in zip(keys, xs_json, ex_json):
            args += [k, x, e]
        script_keys = [self.keys.running, self.keys.all_tasks, self._k_wtasks, self._k_worker]
        for k in keys:
            self._attempts[k] = "1"
        if self.deferred_replies:
            if self._terminated:  # known to be stopping: ask before creating more work
                state = self.connector.hget(self._k_worker, "state")
                if state != "running":
                    raise self._stopped(state)
            self.connector.send_script(self.scripts.push_running_tasks, script_keys, args, self._on_pushed)
            return keys
        state, term = self.scripts.push_running_tasks(keys=script_keys, args=args)
        self._note_state(state, term)
        if state != "running":
            raise self._stopped(state)
        return keys

    def _on_pushed(self, reply: list) -> None:
        state, term = reply
        self._note_state(state, term)
        if state != "running":
            log.warning("worker %s is %s: the tasks it just created were not stored", self.worker_id, state)

    def _final(self, state: str, keys: Sequence[str], f1: str, v1: list[str], f2: str, v2: list[str]) -> list[str]:
        args = [self.keys.prefix, self.worker_id, state]
        attempts = self._attempts
        for k, a, b in zip(keys, v1, v2):
            args += [k, attempts.pop(k, "*"), f1, a, f2, b]
        dest = self.keys.finished if state == "finished" else self.keys.failed
        script_keys = [self.keys.running, dest, self._k_wtasks, self._k_worker]
        if self.deferred_replies:
            self.connector.send_script(self.scripts.finish_tasks, script_keys, args, self._on_finished)
            return []
        return self._on_finished(self.scripts.finish_tasks(keys=script_keys, args=args))

    def _on_finished(self, reply: list) -> list[str]:
        discarded, state, term = reply
        self._note_state(state, term)
        if discarded:
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
        yss = _as_list(yss, len(keys), "yss")
        extras = _as_list(yss_extra, len(keys), "yss_extra")
        ys_json = [codec.encode_dict(y, "ys") or "{}" for y in yss]
        ex_json = [codec.encode_dict(e, "ys_extra") for e in extras]
        return self._final("finished", keys, "ys", ys_json, "ys_extra", ex_json)

    def fail_tasks(self, keys: Sequence[str] | str, conditions: Sequence[Any] | None = None) -> list[str]:
        """Mark tasks failed with a condition each (str, exception or dict with "message").

        Example:
            >>> rush.fail_tasks([task["key"]], [traceback.format_exc()])
        """
        keys = [keys] if isinstance(keys, str) else list(keys)
        conds = [codec.condition(c) for c in _as_list(conditions, len(keys), "conditions")]
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
        self.stop_heartbeat()
        super().close()


def _on_sigterm(signum, frame):  # noqa: ANN001
    raise SystemExit(128 + signum)


def run_worker(
    network_id: str,
    start_id: str,
    credentials: str | None = None,
    worker_id: str | None = None,
    heartbeat_period: float | None = None,
    heartbeat_expire: float | None = None,
    launcher: str = "script",
    watch_pid: int | None = None,
    walltime: float | None = None,
    walltime_margin: float | None = None,
) -> int:
    """Run one worker to its end; returns the process exit code.

    Example (what ``python -m rushhpc worker`` does):
        >>> sys.exit(run_worker("sweep-1", start_id, credentials="~/.rushhpc/runs/sweep-1/credentials.json"))
    """
    cfg = read_credentials(credentials) if credentials else env_config()
    if cfg is None:
        raise RushConfigError(
            "the worker does not know where Redis is: pass --credentials FILE or set RUSHHPC_REDIS_URL"
        )
    cfg.connect()
    # a worker process always has a heartbeat (defaults when none was given)
    period, expire = heartbeat_settings(heartbeat_period, heartbeat_expire)
    worker = RushWorker(
        network_id, config=cfg, worker_id=worker_id, heartbeat_period=period,
        heartbeat_expire=expire, launcher=launcher, watch_pid=watch_pid,
        walltime=walltime, walltime_margin=walltime_margin, deferred_replies=True,
    )
    # SLURM's pre-timeout signal (USR2): finish the current task, then end as terminated.
    signal.signal(signal.SIGUSR2, lambda *_: setattr(worker, "_terminated", True))
    # SIGTERM (scancel, qdel, kill): end now as lost; running tasks are retried or fail.
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    try:
        raw = cfg.client(decode_responses=False)
        start = startargs.load(raw, worker.keys, start_id)
        raw.close()
        thresholds = start["options"].get("log_thresholds")
        install_log_handlers(cfg.client(), worker.keys.log, worker.worker_id,
                             DEFAULT_LOG_THRESHOLDS if thresholds is None else thresholds)
        start["worker_loop"](worker, **start["args"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if code == 128 + signal.SIGTERM:
            # cancelled, preempted, or a time limit without time to finish: the scheduler's
            # view (reconciliation) later replaces "sigterm" with the precise reason
            worker._mark_workers("lost", [(worker.worker_id, "sigterm", f"worker {worker.worker_id} received SIGTERM")], retry=True)
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
        worker.set_terminated("terminated" if worker._terminated else "loop returned")
    finally:
        worker.stop_heartbeat()
        try:
            worker.connector.close()  # reads the last deferred reply
        except redis.RedisError as e:
            print(f"rushhpc worker {worker.worker_id}: closing the connection: {e}", file=sys.stderr)
    return code

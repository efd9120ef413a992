"""The manager side of the Hydra launcher: one rushhpc network, and its workers, per multirun.

`launch` is what `RushhpcLauncher.launch` calls. The first call of a multirun opens a
`Session`: a rushhpc manager (`rushhpc.Rush`) on a network of its own, and ``n_workers``
workers started through the configured rushhpc launcher, each running
`_worker.hydra_worker_loop` with the multirun's state. Every call then pushes its batch as
tasks and collects results as workers report them; it returns one `JobReturn` per job, in
the order of ``job_overrides``. Workers serve the following batches; they are stopped, and
the network deleted, when the process exits or the next multirun starts.

While it waits, the session runs rushhpc's lost-worker detection and reconciliation every
second (heartbeats, and for batch workers the scheduler's view), replaces lost workers
within a budget, enforces ``job_timeout``, and fails the remaining jobs with a reason when
no worker is left to run them: a batch never hangs on a dead worker.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence
from urllib.parse import urlparse

import cloudpickle
import redis
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals

import rushhpc
from rushhpc import defaults, lifecycle
from rushhpc.core.states import FINAL_WORKER_STATES, TERMINAL_TASK_STATES, TaskState, WorkerState
from rushhpc.errors import (
    RushConfigError,
    RushError,
    RushNetworkLostError,
    RushPayloadError,
    RushTimeoutError,
    RushWorkerError,
)
from rushhpc.manager import plan as rconfig
from rushhpc.manager.supervise import Replacer

from ._errors import RemoteTraceback, RushhpcJobError
from ._worker import JOB_RETURN_FIELD, decode_job_return, hydra_worker_loop
from .config import RushhpcLauncherConf

if TYPE_CHECKING:
    from hydra.types import HydraContext, TaskFunction
    from omegaconf import DictConfig


class LauncherState(Protocol):
    """What `launch` and `Session` need of the Hydra launcher (`RushhpcLauncher` is one): its
    parameters, what Hydra's ``setup`` gave it, and the session it keeps between batches.
    A protocol, so that this module does not import the launcher's (which imports this one)."""

    params: dict[str, Any]
    config: DictConfig | None
    task_function: TaskFunction | None
    hydra_context: HydraContext | None
    session: Session | None


log = logging.getLogger(__name__)

_SESSIONS: list["Session"] = []
_LOCK = threading.RLock()


def launch(launcher: LauncherState, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """One batch of a multirun: start the workers if this is the multirun's first, run, collect."""
    assert launcher.config is not None
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    if not job_overrides:
        return []
    with _LOCK:
        session = launcher.session
        if session is None or session.closed:
            # Hydra makes a launcher per multirun: an older session belongs to a multirun that is over.
            for other in list(_SESSIONS):
                other.shutdown()
            session = Session(launcher, first_batch=len(job_overrides))
            launcher.session = session
    return session.run_batch(job_overrides, initial_job_idx)


def shutdown_all() -> None:
    """Stop the workers of every open session and delete their networks (also run at exit)."""
    with _LOCK:
        sessions = list(_SESSIONS)
    for s in sessions:
        s.shutdown()


def parse_params(params: dict[str, Any]) -> RushhpcLauncherConf:
    """The launcher's parameters as the typed config; an unknown name is an error naming the known ones."""
    known = {f.name for f in fields(RushhpcLauncherConf)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise RushConfigError(f"hydra.launcher: unknown field(s) {unknown}; "
                              f"rushhpc's launcher knows {sorted(known - {'_target_'})}")
    p = RushhpcLauncherConf(**params)
    if p.n_workers is not None and (isinstance(p.n_workers, bool) or not isinstance(p.n_workers, int) or p.n_workers < 1):
        raise RushConfigError(f"hydra.launcher.n_workers must be a positive integer or null, got {p.n_workers!r}")
    if p.max_retries < 0 or p.restart_budget < 0:
        raise RushConfigError("hydra.launcher.max_retries and restart_budget must be >= 0")
    if p.job_timeout is not None and p.job_timeout <= 0:
        raise RushConfigError(f"hydra.launcher.job_timeout must be > 0 seconds or null, got {p.job_timeout}")
    if p.worker_type == "script":
        raise RushConfigError("hydra.launcher.worker_type 'script' starts no workers; use local, slurm, pbs, submitit or ssh")
    return p


def redis_of(p: RushhpcLauncherConf) -> rushhpc.RedisConfig | str | None:
    """The Redis the launcher's config names; ``"embedded"`` (a private one even when another is
    configured); or None (the plan, RUSHHPC_REDIS_URL, else an embedded one)."""
    if p.redis_url == "embedded":
        return "embedded"
    if p.redis_url is None and p.password_file is None:
        return None
    url = p.redis_url or "redis://127.0.0.1:6379/0"
    if urlparse(url).password:
        raise RushConfigError(
            "hydra.launcher.redis_url holds a password, and Hydra writes the launcher's config into multirun.yaml "
            "and every job's .hydra/hydra.yaml. Put the password in a file only you can read (chmod 600) and pass "
            "hydra.launcher.password_file=PATH; keep the URL without it."
        )
    return rushhpc.redis_config(url=url, password_file=p.password_file)


def plan_for(**settings: Any) -> rconfig.Plan:
    """The process's rushhpc plan with these settings, given to the session's manager (the
    process's own plan is left as it is)."""
    merged = rconfig.current_plan().as_dict()
    options = settings.pop("launcher_options", None)
    merged.update({k: v for k, v in settings.items() if v is not None})
    merged["launcher_options"] = {**(merged.get("launcher_options") or {}), **(options or {})}
    return rconfig.Plan(**merged)


def network_id_for(p: RushhpcLauncherConf, job_name: str) -> str:
    if p.network:
        return p.network
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", job_name).strip("-")[:60] or "app"
    return f"hydra-{name}-{secrets.token_hex(3)}"


class Session:
    """The rushhpc network of one multirun: a manager, its workers, and the batches run on them."""

    def __init__(self, launcher: LauncherState, first_batch: int):
        assert launcher.config is not None
        self.params = p = parse_params(launcher.params)
        self.closed = False
        self.sweep_dir = str(launcher.config.hydra.sweep.dir)
        self.local = p.worker_type == "local"
        n = p.n_workers or (min(first_batch, os.cpu_count() or 1) if self.local else first_batch)
        self.n_workers = n
        # lost workers are replaced through rushhpc's one replace-under-budget loop
        self.replacer = Replacer(self._replace_workers, p.restart_budget, say=log.warning,
                                 exhausted=f"rushhpc: restart budget used up (hydra.launcher.restart_budget={p.restart_budget})")
        self.reasons: dict[str, str] = {}  # task key -> why the launcher failed it (timeout, no worker left)
        try:
            payload = cloudpickle.dumps({
                "task_function": launcher.task_function,
                "hydra_context": launcher.hydra_context,
                "config": launcher.config,
                "singletons": Singleton.get_state(),
            })
        except Exception as e:  # noqa: BLE001 - pickling raises many types
            raise RushPayloadError(
                f"cannot send the Hydra job to rushhpc workers: {type(e).__name__}: {e}. The task function, "
                "its globals and Hydra callbacks must be picklable (cloudpickle)."
            ) from None
        script_dir = os.path.abspath(sys.path[0]) if sys.path and sys.path[0] else os.getcwd()
        code = getattr(launcher.task_function, "__code__", None)
        self.loop_args = {"payload": payload, "cwd": os.getcwd(), "sys_path": [script_dir],
                          "source_file": os.path.abspath(code.co_filename) if code is not None else None}
        self.start_options = {k: v for k, v in (("heartbeat_period", p.heartbeat_period),
                                                ("heartbeat_expire", p.heartbeat_expire)) if v is not None}
        cfg = redis_of(p)
        plan = plan_for(worker_type=p.worker_type, launcher_options=dict(p.launcher_options),
                        heartbeat_period=p.heartbeat_period, heartbeat_expire=p.heartbeat_expire,
                        start_worker_timeout=p.start_worker_timeout)
        self.rush = rushhpc.Rush(network_id_for(p, str(launcher.config.hydra.job.name)), config=cfg, plan=plan)
        with _LOCK:
            _SESSIONS.append(self)
        # before rushhpc's own exit hooks: managers (MANAGERS) close, then the embedded Redis stops
        lifecycle.at_exit(lifecycle.MANAGERS - 1, shutdown_all)
        try:
            self.start(n)
        except BaseException:
            self.shutdown()
            raise

    # ------------------------------------------------------------------ workers
    def start(self, n: int) -> list[str]:
        ids = self.rush.start_workers(hydra_worker_loop, n_workers=n, **self.start_options, **self.loop_args)
        log.info("rushhpc: started %d %s worker(s) on network %s (Redis %s)", len(ids), self.params.worker_type,
                 self.rush.network_id, self.rush.config.address)
        if self.local:  # a local worker that cannot start says so within seconds
            self.rush.wait_for_workers(worker_ids=ids)
        return ids

    def _replace_workers(self, worker_ids: Sequence[str]) -> list[str]:
        return self.rush.replace_workers(worker_ids)

    def _replace(self, worker_ids: list[str], budgeted: bool) -> None:
        """Replace lost workers within hydra.launcher.restart_budget (``budgeted``), or unbudgeted: those this
        launcher killed for job_timeout."""
        if budgeted:
            if not self.params.replace_lost_workers:
                return
            new = self.replacer.replace(worker_ids)
        else:
            new = self._replace_workers(worker_ids) if worker_ids else []
        if self.local and new:
            try:
                self.rush.wait_for_workers(worker_ids=new)
            except (RushWorkerError, RushTimeoutError) as e:
                log.error("rushhpc: a replacement worker did not start: %s", e)

    def n_alive(self) -> int:
        counts = self.rush.worker_counts()
        return counts[WorkerState.RUNNING] + counts[WorkerState.PENDING]

    def _no_worker_reason(self) -> str:
        rows = [r for r in self.rush.worker_rows() if r["state"] in FINAL_WORKER_STATES]
        if not rows:
            return "no rushhpc worker is running"
        last = max(rows, key=lambda r: r["stopped_at"] or 0.0)
        why = (last["reason"] or "").strip()
        why = why.splitlines()[-1] if why else "no reason recorded"
        return (f"no rushhpc worker is left to run it ({len(rows)} ended; the last, {last['worker_id']}, "
                f"{last['state']}: {why}). Its stderr is in {self.rush.run_dir / 'workers'}")

    # ------------------------------------------------------------------ batches
    def run_batch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        rush = self.rush
        try:
            if self.n_alive() == 0:
                log.warning("rushhpc: no worker of network %s is alive; starting %d", rush.network_id, self.n_workers)
                self.start(self.n_workers)
            overrides = [list(o) for o in job_overrides]
            log.info("rushhpc: launching %d job(s) on network %s, sweep output dir %s", len(overrides),
                     rush.network_id, self.sweep_dir)
            for i, o in enumerate(overrides):
                log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(o)))
            keys = rush.push_tasks([{"job_num": initial_job_idx + i, "overrides": o} for i, o in enumerate(overrides)],
                                   max_retries=self.params.max_retries)
            return self._collect(keys, overrides, initial_job_idx)
        except BaseException:
            if isinstance(sys.exc_info()[1], KeyboardInterrupt):
                log.warning("rushhpc: interrupted; killing the workers of network %s", rush.network_id)
            self.shutdown()
            raise

    def _collect(self, keys: list[str], overrides: list[list[str]], first_idx: int) -> list[JobReturn]:
        rush = self.rush
        tasks = rush.network.tasks  # the batch's tasks are read through the network view, no raw Redis
        index = {k: i for i, k in enumerate(keys)}
        out: list[JobReturn | None] = [None] * len(keys)
        pending = list(keys)
        sleep = 0.005
        last_check = time.monotonic()
        while pending:
            rows = tasks.task_fields(pending, ["state", "started_at", "worker_id"])
            if any(r[0] is None for r in rows) and not rush.exists():
                raise RushNetworkLostError(
                    f"network {rush.network_id!r} is gone from Redis at {rush.config.address} while a batch ran "
                    "(a Redis restart without persistence, or a reset by another manager): its jobs are lost")
            done = [k for k, r in zip(pending, rows) if r[0] is None or r[0] in TERMINAL_TASK_STATES]
            queued = [k for k, r in zip(pending, rows) if r[0] == TaskState.QUEUED]
            if done:
                records = {r["keys"]: r for r in tasks.task_records(done)}
                for k in done:
                    i = index[k]
                    out[i] = self._job_return(records.get(k), overrides[i], first_idx + i, k)
                gone = set(done)
                running = [(k, r) for k, r in zip(pending, rows) if k not in gone and r[0] == TaskState.RUNNING]
                pending = [k for k in pending if k not in gone]
                sleep = 0.005
            else:
                running = [(k, r) for k, r in zip(pending, rows) if r[0] == TaskState.RUNNING]
            if not pending:
                break
            now = time.monotonic()
            if now - last_check >= defaults.HYDRA_CHECK_INTERVAL:
                last_check = now
                self._check(queued, running)
            time.sleep(sleep)
            sleep = min(defaults.HYDRA_MAX_POLL, sleep * 2)
        return [r for r in out if r is not None]

    def _check(self, queued: list[str], running: list[tuple[str, list]]) -> None:
        """Once a second while a batch runs: lost workers, job timeouts, and whether any worker is left."""
        rush = self.rush
        lost = rush.detect_lost_workers()
        if lost:
            # a worker that never started (bad environment, job refused) would fail again: not replaced
            never = rush.never_started(lost)
            if never:
                wid, why = next(iter(never.items()))
                log.error("rushhpc: %d worker(s) ended before they started, e.g. %s: %s", len(never), wid, why)
            self._replace([w for w in lost if w not in never], budgeted=True)
        timeout = self.params.job_timeout
        if timeout and running:
            server_now = rush.network.server_time()  # started_at is Redis's clock
            over = [(k, r[2]) for k, r in running
                    if r[1] and r[2] and k not in self.reasons and server_now - float(r[1]) > timeout]
            if over:
                for k, wid in over:
                    self.reasons[k] = (f"timed out: it ran longer than hydra.launcher.job_timeout={timeout:g} s; "
                                       f"its worker {wid} was killed")
                    log.error("rushhpc: task %s ran over job_timeout=%g s: killing worker %s", k, timeout, wid)
                wids = sorted({w for _, w in over})
                rush.stop_workers(type="kill", worker_ids=wids)
                self._replace(wids, budgeted=False)
        if queued and self.n_alive() == 0:
            # nobody can pop them (no worker), so what was queued at the last read still is
            reason = self._no_worker_reason()
            log.error("rushhpc: %s; failing the %d queued job(s)", reason, len(queued))
            for k in queued:
                self.reasons.setdefault(k, reason)
            rush.empty_queue()

    def _job_return(self, rec: dict[str, Any] | None, overrides: list[str], idx: int, key: str) -> JobReturn:
        where = f"job #{idx} ({' '.join(filter_overrides(overrides)) or 'no overrides'})"
        if rec is None:
            return self._failed(overrides, f"{where}: its task {key} disappeared from Redis (was network "
                                            f"{self.rush.network_id} reset?)")
        took = ""
        if rec.get("started_at") and rec.get("finished_at"):
            took = f" in {float(rec['finished_at']) - float(rec['started_at']):.1f} s"
        worker = rec.get("worker_id") or "?"
        if rec["state"] == TaskState.FINISHED:
            blob = (rec.get("ys_extra") or {}).get(JOB_RETURN_FIELD)
            if not blob:  # finished by something else than this launcher's worker loop
                return self._failed(overrides, f"{where} was finished on worker {worker} without a Hydra JobReturn")
            try:
                ret = decode_job_return(blob)
            except Exception as e:  # noqa: BLE001 - unpickling raises many types
                return self._failed(overrides, f"{where} finished on worker {worker}, but its result cannot be read "
                                               f"here: {type(e).__name__}: {e}")
            log.info("rushhpc: #%d finished on %s%s", idx, worker, took)
            return ret
        cond = rec.get("condition")
        message = (cond.get("message") if isinstance(cond, dict) else str(cond or "")) or "failed"
        override = self.reasons.get(key)
        blob = cond.get(JOB_RETURN_FIELD) if isinstance(cond, dict) and not override else None
        if blob:
            try:
                ret = decode_job_return(blob)
            except Exception:  # noqa: BLE001 - e.g. an exception class this process cannot import
                ret = None
            if ret is not None:
                exc = ret._return_value
                if isinstance(exc, BaseException) and exc.__cause__ is None:
                    exc.__cause__ = RemoteTraceback(f"(on rushhpc worker {worker})\n{message}")
                log.error("rushhpc: #%d failed on %s%s: %s", idx, worker, took, _last_line(message))
                return ret
        text = override or message
        log.error("rushhpc: #%d failed: %s", idx, _last_line(text))
        return self._failed(overrides, f"{where} failed on rushhpc network {self.rush.network_id}: {text}")

    @staticmethod
    def _failed(overrides: list[str], message: str) -> JobReturn:
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        ret.return_value = RushhpcJobError(message)
        return ret

    # ------------------------------------------------------------------ end
    def shutdown(self) -> None:
        """Stop the workers (idle ones end by themselves, the rest are killed) and delete the network,
        unless ``keep_network``."""
        with _LOCK:
            if self.closed:
                return
            self.closed = True
            if self in _SESSIONS:
                _SESSIONS.remove(self)
        rush = self.rush
        try:
            if rush.n_running_tasks == 0:
                rush.stop_workers(type="terminate")
                deadline = time.monotonic() + defaults.HYDRA_STOP_GRACE
                while rush.n_running_workers and time.monotonic() < deadline:
                    time.sleep(0.05)
            rush.stop_workers(type="kill")  # what is left, and batch jobs still waiting in the queue
            if not self.params.keep_network:
                rush.reset()
        except (redis.RedisError, RushError, OSError) as e:  # e.g. Redis gone: the workers end by themselves
            log.warning("rushhpc: stopping the workers of network %s: %s", rush.network_id, e)
        finally:
            rush.close()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else text

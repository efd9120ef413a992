"""Local workers: child processes of the manager on this machine.

Each worker runs in its own session (so a terminal's Ctrl-C reaches the
manager, which then stops them in order), with stdout and stderr in
``<run_dir>/workers/<worker_id>.out|.err``. They do not outlive the manager:
the manager kills them at exit, they get SIGKILL if the manager dies
(PR_SET_PDEATHSIG), and their heartbeat also watches the manager's pid.
``launcher_options={"detach": True}`` (in the plan or per start call) lets them outlive it.
``launcher_options={"gpus_per_worker": 1}`` gives each worker its own GPUs (`rushhpc.launchers.gpus`) in
``CUDA_VISIBLE_DEVICES``, refused before any worker starts when the visible GPUs do not suffice.
They inherit the manager's environment except the variables that may hold a Redis
password (``RUSHHPC_REDIS_URL``, ``REDIS_URL``, ``RUSHHPC_REDIS_PASSWORD``): they read
Redis from the 0600 credentials file.

A manager that attaches to a network has no handles for workers another manager
started: their heartbeats decide, and kills go through their kill lists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any, Sequence

from rushhpc.core.states import JobState
from rushhpc.errors import RushConfigError
from rushhpc.launchers.base import JobStatus, LaunchContext, Launcher, LaunchRecord
from rushhpc.launchers.batch import scheduler_environment
from rushhpc.launchers.gpus import GpuError, GpuPool, gpu_environment, visible_gpus
from rushhpc.processes import kill_tree, set_parent_death_signal


class LocalLauncher(Launcher):
    """Start workers as local processes; poll their handles; kill their process groups."""

    name = "local"

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.processes: dict[str, subprocess.Popen] = {}
        self.detached: set[str] = set()
        self.gpus: dict[str, list[str]] = {}  # worker id -> the GPUs it was given (gpus_per_worker)

    def launch(self, start_id: str, worker_ids: list[str], options: dict[str, Any]) -> list[LaunchRecord]:
        per_call = options.get("launcher_options") or {}
        detach = bool(per_call.get("detach", self.options.get("detach", False)))
        shares = self._gpu_shares(worker_ids, per_call.get("gpus_per_worker", self.options.get("gpus_per_worker")))
        main_thread = threading.current_thread() is threading.main_thread()
        records = []
        for wid in worker_ids:
            env = scheduler_environment()
            if wid in shares:  # this worker's own GPUs, disjoint from every other live worker's
                env.update(gpu_environment(shares[wid], os.environ))
            spec = self.spec(start_id, wid, options, watch_pid=None if detach else os.getpid())
            out = open(self.log_dir / f"{wid}.out", "ab")
            err = open(self.log_dir / f"{wid}.err", "ab")
            try:
                proc = subprocess.Popen(
                    spec.argv(),
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=set_parent_death_signal if (main_thread and not detach) else None,
                    cwd=os.getcwd(),
                    # the worker reads Redis from its credentials file: a Redis URL with a
                    # password in the manager's environment stays out of the worker's
                    env=env,
                )
            finally:
                out.close()
                err.close()
            self.processes[wid] = proc
            self.calls += 1
            if detach:
                self.detached.add(wid)
            extra: dict[str, Any] = {"detach": detach} if detach else {}
            if wid in shares:
                self.gpus[wid] = shares[wid]
                extra["gpus"] = shares[wid]
            records.append(LaunchRecord(worker_id=wid, launcher=self.name, job_id=str(proc.pid), start_id=start_id,
                                        extra=extra))
        self.submissions += 1
        return records

    def _gpu_shares(self, worker_ids: list[str], per_worker: Any) -> dict[str, list[str]]:
        """Each new worker's GPUs (``gpus_per_worker``), refused as a whole before any starts when they do not fit.

        A worker whose process ended frees its share, so a replacement takes it.
        """
        if not per_worker:
            return {}
        held = {w: g for w, g in self.gpus.items() if w in self.processes and self.processes[w].poll() is None}
        self.gpus = dict(held)
        try:
            pool = GpuPool(visible_gpus(), per_worker, held=held)
            pool.check(len(worker_ids))
        except GpuError as e:
            raise RushConfigError(f"launcher option gpus_per_worker: {e}") from None
        return {wid: pool.take(wid) for wid in worker_ids}

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        out = {}
        for rec in records:
            proc = self.processes.get(rec.worker_id)
            if proc is None:
                continue
            code = proc.poll()
            if code is None:
                out[rec.worker_id] = JobStatus(JobState.RUNNING, raw="alive")
            else:
                reason = f"exit code {code}" if code >= 0 else f"killed by signal {signal.Signals(-code).name}"
                out[rec.worker_id] = JobStatus(JobState.FINISHED, reason=reason, raw=str(code), exit_code=code)
        return out

    def ended(self) -> dict[str, int]:
        """Worker id -> exit code of every local worker process that has ended."""
        return {wid: p.returncode for wid, p in list(self.processes.items()) if p.poll() is not None}

    def forget(self, worker_ids: Sequence[str]) -> None:
        """Drop the handles of ended workers whose fate is recorded in Redis."""
        for wid in list(worker_ids):
            self.processes.pop(wid, None)
            self.detached.discard(wid)

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        procs = [self.processes[r.worker_id] for r in records if r.worker_id in self.processes]
        for proc in procs:
            if proc.poll() is None:
                # the worker's tree first: a program it runs (rushhpc.worker.command) has a session of its own, which
                # the worker's process group does not reach; then the group: the worker, its heartbeat
                kill_tree(proc.pid)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def owned_workers(self) -> list[str]:
        return [w for w in self.processes if w not in self.detached]

    def close(self) -> None:
        """Kill every worker this launcher started that is not detached (manager exit)."""
        self.kill([LaunchRecord(worker_id=w, launcher=self.name) for w in self.owned_workers()])

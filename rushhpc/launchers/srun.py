"""srun: workers across the nodes of the SLURM allocation the manager runs in, as one job step.

``start_workers(..., worker_type="srun")`` inside an allocation (``sbatch -N 3``, ``salloc``)
starts N workers as ONE ``srun --ntasks=N`` step spread over the allocation's nodes. Each task
runs ``python -m rushhpc worker ...`` with the id ``<prefix>-<SLURM_PROCID>``: the ids are made
before the step starts (``w-<random>-<i>``), so `wait_for_workers` knows them.

- ``--kill-on-bad-exit=0`` and ``--wait=0``: a task that dies does not end the others.
- ``--overlap``: the step shares CPUs with the batch step (where the manager and the embedded
  Redis run) and with later steps (replacement workers), so a start never waits for CPUs.
- ``overcommit: true`` adds ``--overcommit``: more tasks than the allocation has CPUs.
- ``cpus_per_task``, ``gpus_per_task`` (``gpus_per_worker`` is the same), ``mem_per_cpu`` and
  ``srun_options`` (a list of further srun options) come from launcher options / sweep resources.
- Each task's stdout/stderr go to ``<run_dir>/workers/<worker_id>.out|.err`` (``--output=..%t``),
  srun's own messages to ``<run_dir>/workers/<prefix>.srun.err``.

Watched like local workers: srun reports each task that ends badly on its stderr
(``srun: error: n2: task 3: Killed``, ``tasks 0-1: Exited with exit code 2``); `ended` reads
those lines (and the srun process's end), so a dead task is a lost worker at the manager's next
`detect_lost_workers`, whatever its heartbeat key says. The password is never in argv or in the
environment: workers read the network's 0600 credentials file (the run directory must be on a
file system the nodes share, as for the batch launchers).

`kill` goes through the kill list first (the manager sends it), then ``scancel JOBID.STEPID``
when every live task of a step is to die; one task of a step that is still running after the kill
list is killed by an ``srun --overlap`` of ``kill -KILL PID`` on its node. A new manager (attach)
has no srun handle: the heartbeats decide, and kills use the stored records (step name, job id).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from rushhpc import defaults
from rushhpc.core.states import JobState, LostReason
from rushhpc.errors import RushConfigError
from rushhpc.launchers.base import JobStatus, LaunchContext, Launcher, LaunchRecord
from rushhpc.launchers.batch import run_command, scheduler_environment
from rushhpc.launchers.slurm.states import STEP_FORMAT, allocation_cpus, parse_node, parse_steps, parse_task_lines
from rushhpc.processes import set_parent_death_signal

log = logging.getLogger("rushhpc.launchers")

RESOURCE_KEYS = ("cpus_per_task", "gpus_per_task", "gpus_per_worker", "mem_per_cpu", "srun_options", "overcommit",
                 "partition", "time", "job_name")
BEHAVIOUR_KEYS = ("python", "startup_grace", "vanish_grace", "poll_interval", "max_poll_interval", "submit_timeout",
                  "detach", "kill_wait")
# srun reads these from its environment as if they were options; inherited from the batch step
# (``#SBATCH --ntasks-per-node=1``, ``--cpus-per-task=16``) they would contradict --ntasks.
SRUN_INPUT_VARIABLES = ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NTASKS_PER_NODE", "SLURM_NTASKS_PER_SOCKET",
                        "SLURM_NTASKS_PER_CORE", "SLURM_NTASKS_PER_GPU", "SLURM_CPUS_PER_TASK", "SLURM_TRES_PER_TASK",
                        "SLURM_GPUS_PER_TASK", "SLURM_DISTRIBUTION", "SLURM_EXACT", "SLURM_OVERLAP")
# One argv for every task: the task takes its id from SLURM_PROCID ($0 is the ids' prefix).
TASK_WRAPPER = 'exec "$@" --worker-id "$0-$SLURM_PROCID"'


def no_allocation_error() -> RushConfigError:
    return RushConfigError(
        "worker_type 'srun' starts workers inside a SLURM allocation, and SLURM_JOB_ID is not set here: run the "
        "manager inside `sbatch -N ...` or `salloc` (examples/sweep_slurm_allocation.sbatch), or use worker_type "
        "'slurm' to submit a job per worker"
    )


def _resolve(name: str) -> str | None:
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return None
    return str(infos[0][4][0]) if infos else None


def reachable_address(env: dict[str, str] | None = None, scontrol: Callable[[str], str] | None = None,
                      resolve: Callable[[str], str | None] = _resolve) -> str:
    """The IPv4 address of this (batch) node that the allocation's other nodes reach it by.

    Loopback outside an allocation or when the allocation has one node. Otherwise the node's
    ``NodeAddr`` as SLURM knows it (``scontrol show node $SLURMD_NODENAME``; SLURM's nodes talk to
    each other through it), resolved when it is a name; failing that, this host name's address.
    Never ``0.0.0.0``. On a cluster whose nodes all are this one host (the test cluster), NodeAddr
    is 127.0.0.1, which is then right.

    Example:
        >>> reachable_address({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"})
        '127.0.0.1'
    """
    env = dict(os.environ) if env is None else env
    nnodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1"
    if not env.get("SLURM_JOB_ID") or not nnodes.isdigit() or int(nnodes) <= 1:
        return "127.0.0.1"
    node = env.get("SLURMD_NODENAME") or socket.gethostname()
    if scontrol is None:
        def scontrol(name: str) -> str:
            out = run_command(["scontrol", "-o", "show", "node", name], timeout=defaults.SCHEDULER_LIMITS_TIMEOUT)
            return out.stdout if out.returncode == 0 else ""
    fields = parse_node(scontrol(node))
    for candidate in (fields.get("NodeAddr"), fields.get("NodeHostName"), node, socket.gethostname()):
        if not candidate or candidate in ("(null)", "0.0.0.0"):
            continue
        try:
            ip = str(ipaddress.IPv4Address(candidate))
        except ValueError:
            ip = resolve(candidate) or ""
        if ip and ip != "0.0.0.0":
            return ip
    raise RushConfigError(
        f"cannot find an address of node {node} that the allocation's other nodes reach (scontrol show node {node} "
        "names none that resolves): give the sweep a Redis (redis: {url: ..., password_file: ...})"
    )


class _Step:
    """One srun step this manager started: its process, its ids, its srun stderr file."""

    def __init__(self, proc: subprocess.Popen | None, name: str, job_id: str, worker_ids: list[str], srun_err: str,
                 detached: bool = False):
        self.proc, self.name, self.job_id, self.worker_ids = proc, name, job_id, worker_ids
        self.srun_err, self.detached = srun_err, detached
        self.step_id: str | None = None

    def ended(self) -> dict[str, int]:
        try:
            text = Path(self.srun_err).read_text(errors="replace")
        except OSError:
            text = ""
        by_task = parse_task_lines(text)
        out = {self.worker_ids[t]: c for t, c in by_task.items() if t < len(self.worker_ids)}
        code = self.proc.poll() if self.proc is not None else None
        if code is not None:
            # srun ended: the tasks it named ended badly; the rest exited 0 (or never ran, when
            # srun itself failed: no step, no task line)
            rest = code if (code != 0 and not by_task) else 0
            for wid in self.worker_ids:
                out.setdefault(wid, rest)
        return out


class SrunLauncher(Launcher):
    """Start workers as one ``srun`` step over the allocation's nodes; watch its tasks; ``scancel`` the step.

    Example:
        >>> rush_plan(worker_type="srun", launcher_options={"cpus_per_task": 1})
        >>> ids = rush.start_workers(queue_loop, n_workers=24, fun=objective)   # inside sbatch -N 3
    """

    name = "srun"

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self._check(self.options, "launcher option")
        self.steps: dict[str, _Step] = {}  # step name -> step
        self.by_worker: dict[str, str] = {}  # worker id -> step name
        self._lock = threading.Lock()

    @staticmethod
    def _check(options: dict[str, Any], what: str) -> None:
        unknown = sorted(set(options) - set(RESOURCE_KEYS) - set(BEHAVIOUR_KEYS))
        if unknown:
            raise RushConfigError(f"unknown srun {what}(s) {unknown}; resources: {list(RESOURCE_KEYS)}, "
                                  f"behaviour: {list(BEHAVIOUR_KEYS)}")
        extra = options.get("srun_options")
        if extra is not None and not (isinstance(extra, (str, list)) and all(isinstance(a, str) for a in extra)):
            raise RushConfigError(f"srun {what} srun_options: expected a list of srun options, got {extra!r}")

    def make_worker_ids(self, n: int) -> list[str]:
        """``w-<random>-<i>``: task i of the step takes id i (SLURM_PROCID)."""
        prefix = "w-" + secrets.token_hex(4)
        return [f"{prefix}-{i}" for i in range(n)]

    @staticmethod
    def step_name(prefix: str) -> str:
        """The step's name (``srun --job-name``), by which ``squeue --steps`` finds it."""
        return f"rushhpc-{prefix.removeprefix('w-')}"

    def srun_argv(self, prefix: str, n: int, opts: dict[str, Any]) -> list[str]:
        """The srun command line of a step of ``n`` tasks (without the worker command); task i
        writes ``<log_dir>/<prefix>-<i>.out|.err``, its worker's files."""
        argv = ["srun", f"--job-name={self.step_name(prefix)}", f"--ntasks={n}", "--kill-on-bad-exit=0", "--wait=0",
                "--overlap", "--input=none", f"--output={self.log_dir}/{prefix}-%t.out",
                f"--error={self.log_dir}/{prefix}-%t.err"]
        argv.append(f"--cpus-per-task={int(opts.get('cpus_per_task') or 1)}")
        gpus = opts.get("gpus_per_task") or opts.get("gpus_per_worker")
        if gpus:
            argv.append(f"--gpus-per-task={int(gpus)}")
        if opts.get("mem_per_cpu"):
            argv.append(f"--mem-per-cpu={opts['mem_per_cpu']}")
        if opts.get("overcommit"):
            argv.append("--overcommit")
        if opts.get("partition"):
            argv.append(f"--partition={opts['partition']}")
        if opts.get("time"):
            argv.append(f"--time={opts['time']}")
        extra = opts.get("srun_options") or []
        argv += shlex.split(extra) if isinstance(extra, str) else list(extra)
        return argv

    def launch(self, start_id: str, worker_ids: list[str], options: dict[str, Any]) -> list[LaunchRecord]:
        job_id = os.environ.get("SLURM_JOB_ID")
        if not job_id:
            raise no_allocation_error()
        n = len(worker_ids)
        prefix = worker_ids[0].rsplit("-", 1)[0]
        if worker_ids != [f"{prefix}-{i}" for i in range(n)]:
            raise RushConfigError(f"srun worker ids must be <prefix>-0..{n - 1} (from make_worker_ids), got {worker_ids[:3]}")
        per_call = dict(options.get("launcher_options") or {})
        self._check(per_call, "launcher_options key")
        opts = {**self.options, **per_call}
        cpus = int(opts.get("cpus_per_task") or 1)
        have = allocation_cpus(os.environ.get("SLURM_JOB_CPUS_PER_NODE", ""))
        if have and n * cpus > have and not opts.get("overcommit"):
            raise RushConfigError(
                f"{n} srun workers x {cpus} CPU(s) need {n * cpus} CPUs, and allocation {job_id} has {have}: ask for "
                "more (#SBATCH --ntasks or --cpus-per-task), start fewer, or set the launcher option overcommit: true "
                "(workers then share CPUs)"
            )
        detach = bool(opts.get("detach", False))
        name = self.step_name(prefix)
        spec = self.spec(start_id, None, options, watch_pid=None)  # the manager's pid means nothing on another node
        argv = self.srun_argv(prefix, n, opts) + ["/bin/sh", "-c", TASK_WRAPPER, prefix,
                                                *spec.argv(python=self.behaviour("python", None))]
        srun_err = self.log_dir / f"{prefix}.srun.err"
        env = {k: v for k, v in scheduler_environment().items() if k not in SRUN_INPUT_VARIABLES}
        main_thread = threading.current_thread() is threading.main_thread()
        with open(srun_err, "ab") as err:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True, env=env,
                    cwd=os.getcwd(),
                    # srun forwards a SIGTERM to every task: the workers end with a manager that dies
                    preexec_fn=(lambda: set_parent_death_signal(signal.SIGTERM)) if main_thread and not detach else None,
                )
            except FileNotFoundError:
                raise RushConfigError("srun not found: run the manager on a node of the SLURM allocation, with "
                                      "SLURM's commands on PATH") from None
        self.calls += 1
        self.submissions += 1
        with self._lock:
            self.steps[name] = _Step(proc, name, job_id, list(worker_ids), str(srun_err), detach)
            for wid in worker_ids:
                self.by_worker[wid] = name
        return [LaunchRecord(worker_id=wid, launcher=self.name, job_id=job_id, start_id=start_id,
                             extra={"step_name": name, "task": i, "ntasks": n, "srun_err": str(srun_err),
                                    "stderr": str(self.log_dir / f"{wid}.err"), "host": socket.gethostname(),
                                    "srun_pid": proc.pid, **({"detach": True} if detach else {})})
                for i, wid in enumerate(worker_ids)]

    # ------------------------------------------------------------ watching
    def ended(self) -> dict[str, int]:
        """Worker id -> exit code (negative: signal) of every task srun reported ended, and of
        every task of a step whose srun has exited."""
        out: dict[str, int] = {}
        with self._lock:
            steps = list(self.steps.values())
            known = set(self.by_worker)
        for step in steps:
            out.update({w: c for w, c in step.ended().items() if w in known})
        return out

    def forget(self, worker_ids: Sequence[str]) -> None:
        with self._lock:
            for wid in worker_ids:
                self.by_worker.pop(wid, None)
            for name, step in list(self.steps.items()):
                settled = not any(w in self.by_worker for w in step.worker_ids)
                if settled and (step.proc is None or step.proc.poll() is not None):
                    del self.steps[name]

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        """Tasks of this manager's steps from their srun handle and stderr (no query); tasks of
        steps it did not start from one ``squeue --steps`` query (running while their step is)."""
        out: dict[str, JobStatus] = {}
        dead = self.ended()
        others = []
        for rec in records:
            if rec.worker_id in dead:
                code = dead[rec.worker_id]
                reason = LostReason.COMPLETED if code == 0 else LostReason.FAILED
                out[rec.worker_id] = JobStatus(JobState.FINISHED, reason=reason, raw=str(code), exit_code=code)
            elif rec.worker_id in self.by_worker:
                out[rec.worker_id] = JobStatus(JobState.RUNNING, raw="alive")
            else:
                others.append(rec)
        if others:
            live = self._live_steps({r.job_id for r in others if r.job_id})
            for rec in others:
                if rec.extra.get("step_name") in live:
                    out[rec.worker_id] = JobStatus(JobState.RUNNING, raw=live[rec.extra["step_name"]])
        return out

    def _live_steps(self, job_ids: set[str]) -> dict[str, str]:
        """Step name -> ``JOBID.STEPID`` of the running steps of these jobs (one squeue call)."""
        if not job_ids:
            return {}
        self.calls += 1
        out = run_command(["squeue", "-h", "-s", "-j", ",".join(sorted(job_ids)), "-o", STEP_FORMAT],
                          timeout=float(self.behaviour("submit_timeout", defaults.SUBMIT_TIMEOUT)))
        return parse_steps(out.stdout)

    # ------------------------------------------------------------ stopping
    def adopt(self, records: Sequence[LaunchRecord]) -> None:
        """Steps another manager started: known by name, without an srun handle (heartbeats decide)."""
        with self._lock:
            for rec in records:
                name = rec.extra.get("step_name")
                if not name or not rec.job_id:
                    continue
                step = self.steps.get(name)
                if step is None:
                    ntasks = int(rec.extra.get("ntasks") or 0)
                    prefix = rec.worker_id.rsplit("-", 1)[0]
                    step = self.steps[name] = _Step(None, name, rec.job_id, [f"{prefix}-{i}" for i in range(ntasks)],
                                                    str(rec.extra.get("srun_err", "")), True)

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        """After the kill list: ``scancel JOBID.STEPID`` of each step all of whose live tasks are to
        die; a task of a step that goes on is killed on its node (``srun --overlap ... kill -KILL``)
        if the kill list did not end it within ``kill_wait`` seconds (default 5)."""
        self.adopt(records)
        by_step: dict[str, set[str]] = {}
        for rec in records:
            name = rec.extra.get("step_name") or self.by_worker.get(rec.worker_id)
            if name in self.steps:
                by_step.setdefault(name, set()).add(rec.worker_id)
        if not by_step:
            return
        whole: list[str] = []
        partial: list[str] = []
        for name, wids in by_step.items():
            step = self.steps[name]
            alive = set(step.worker_ids) - set(step.ended())
            (whole if alive <= wids else partial).append(name)
        if whole:
            live = self._live_steps({self.steps[n].job_id for n in whole})
            ids = [live[n] for n in whole if n in live]
            if ids:
                self.calls += 1
                run_command(["scancel", *ids], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
            for name in whole:
                proc = self.steps[name].proc
                if proc is not None and name not in live and proc.poll() is None:
                    proc.terminate()  # no step yet (srun still waits for it): srun gives up, or forwards it
                if proc is not None:
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        if partial:
            deadline = time.monotonic() + float(self.behaviour("kill_wait", defaults.SRUN_KILL_WAIT))
            targets = {w for n in partial for w in by_step[n]}
            while time.monotonic() < deadline:
                done = {w for n in partial for w in self.steps[n].ended()}
                if targets <= done:
                    return
                time.sleep(0.2)
            left = sorted(targets - {w for n in partial for w in self.steps[n].ended()})
            self._kill_tasks(left)

    def _kill_tasks(self, worker_ids: list[str]) -> None:
        """SIGKILL single workers on their nodes: one small ``srun --overlap`` each."""
        pids = self.context.worker_field(worker_ids, "pid")
        nodes = self.context.worker_field(worker_ids, "node")
        for wid, pid, node in zip(worker_ids, pids, nodes):
            step = self.steps.get(self.by_worker.get(wid, ""))
            if not pid or not node or step is None:
                log.warning("srun worker %s: no pid or node registered; it ends with its step", wid)
                continue
            self.calls += 1
            run_command(["srun", "--overlap", f"--jobid={step.job_id}", f"--nodelist={node}", "-N1", "-n1",
                         "--cpus-per-task=1", "kill", "-KILL", str(pid)], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)

    def owned_workers(self) -> list[str]:
        with self._lock:
            return [w for w, n in self.by_worker.items() if not self.steps[n].detached]

    def close(self) -> None:
        """Stop every step this manager started that is not detached (manager exit)."""
        owned = self.owned_workers()
        if owned:
            self.kill([LaunchRecord(worker_id=w, launcher=self.name, extra={"step_name": self.by_worker[w]})
                       for w in owned])

    def stderr_tail(self, worker_id: str, n: int = 20) -> str:
        """The task's stderr, then what srun said (a step it could not create says why there)."""
        own = super().stderr_tail(worker_id, n)
        step = self.steps.get(self.by_worker.get(worker_id, ""))
        srun = ""
        if step is not None:
            try:
                srun = "\n".join(Path(step.srun_err).read_text(errors="replace").splitlines()[-n:])
            except OSError:
                pass
        return "\n".join(t for t in (own, srun) if t)

"""A sweep's Redis and workers: connect (its plan), start the workers, keep them (replace lost ones).

`Fleet` owns the run's `Rush`. It starts the strategy's worker loop (`Schedule.loop_args`) with
``workers.n`` workers, or an adapting monitor (``workers.adapt``); every 2 s it reads the workers'
states, shrinks the sweep for workers stopped on purpose and replaces lost ones while
``workers.restarts`` lasts.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rushhpc.core.states import ALIVE_JOB_STATES, LostReason, SweepStatus, WorkerState
from rushhpc.manager.supervise import Replacer
from rushhpc.store.diagnostics import RedisUnusableError, in_words_of
from rushhpc.sweeps.config import SweepConfig, SweepConfigError
from rushhpc.sweeps.progress import Stats
from rushhpc.sweeps.state import Stop

if TYPE_CHECKING:
    from rushhpc.manager.rush import Rush
    from rushhpc.sweeps.scheduling import Schedule
    from rushhpc.sweeps.state import SweepState

class Fleet:
    """The network and workers of one run of a sweep.

    Example::

        fleet = Fleet(cfg, schedule, state, stats, say=print)
        fleet.connect()              # the run's network <name>-<6 hex>
        fleet.start_workers(4)
        fleet.health()               # every 2 s in the engine's loop
    """

    def __init__(self, cfg: SweepConfig, schedule: Schedule, state: SweepState, stats: Stats,
                 say: Callable[[str], None]):
        self.cfg, self.schedule, self.state, self.stats, self.say = cfg, schedule, state, stats, say
        w = cfg.data["workers"]
        self.wanted = w["n"]
        # lost workers are replaced through the one replace-under-budget loop (rushhpc.manager.supervise)
        self.replacer = Replacer(self._replace_lost, w["restarts"], start=self._start_fresh)
        self.adapter: Any = None  # the rushhpc.manager.adapt.Adapter when workers.adapt is set
        self.rush_: Rush | None = None
        self.redis_cfg: Any = None
        self.launched: dict[str, float] = {}  # worker id -> launch time
        self.worker_reason = ""
        self.ended_seen: set[str] = set()  # ended workers whose reason was read
        self.out_of_memory: list[str] = []  # lost out_of_memory, not replaced yet (workers.resources.mem_retry)

    @property
    def rush(self) -> Rush:
        assert self.rush_ is not None, "not connected"
        return self.rush_

    # ------------------------------------------------------------------ Redis and the plan
    def _redis_config(self) -> Any:
        spec = self.cfg["redis"]
        if self.cfg["workers"]["launcher"] == "srun" and not os.environ.get("SLURM_JOB_ID"):
            raise SweepConfigError(
                f"{self.cfg.source}: workers.launcher: srun starts the workers inside a SLURM allocation, and "
                "SLURM_JOB_ID is not set: run the sweep from a job script (sbatch -N ..., see "
                "examples/sweep_slurm_allocation.sbatch) or salloc, or use launcher: slurm")
        if spec == "embedded":
            from rushhpc.server.embedded import embedded_redis  # not exported by rushhpc: see the module docstring

            if self.cfg["workers"]["launcher"] == "srun":
                # workers on the allocation's other nodes reach the batch node's address (loopback
                # when the allocation has one node); the server has its generated password
                from rushhpc.launchers.srun import reachable_address

                return embedded_redis(reachable_address())
            return embedded_redis()
        if spec == "env":
            return None
        from rushhpc.store.connection import redis_config

        return redis_config(**spec)

    def _plan(self, redis_cfg: Any) -> Any:
        """This sweep's manager plan: the workers: section over the process-wide plan (`rush_plan`),
        given to its manager, never set as the process's plan."""
        from rushhpc.manager.plan import Plan, rush_config

        prev = rush_config()
        w = self.cfg["workers"]
        plan: dict[str, Any] = {k: prev.get(k) for k in ("log_thresholds", "large_objects_path", "max_object_size", "run_dir")
                if prev.get(k) is not None}
        options = dict(prev.get("launcher_options") or {})
        options.update(w["resources"])
        if w.get("gpus_per_worker"):
            options["gpus_per_worker"] = w["gpus_per_worker"]
        return Plan(
            n_workers=self.wanted,
            config=redis_cfg if redis_cfg is not None else prev.get("config"),
            worker_type=w["launcher"],
            start_worker_timeout=w["start_timeout"],
            heartbeat_period=w["heartbeat_period"] if w["heartbeat_period"] is not None else prev.get("heartbeat_period"),
            heartbeat_expire=w["heartbeat_expire"] if w["heartbeat_expire"] is not None else prev.get("heartbeat_expire"),
            launcher_options=options,
            **plan,
        )

    def connect(self) -> None:
        """Open this run's network (``<name>-<6 hex>``) in the sweep's Redis."""
        from rushhpc.manager.rush import rsh

        self.redis_cfg = self._redis_config()
        network = f"{self.cfg['name']}-{secrets.token_hex(3)}"
        try:
            self.rush_ = rsh(network, config=self.redis_cfg, plan=self._plan(self.redis_cfg))
        except RedisUnusableError as e:
            # raised in Python's words ("leave the config unset ..."): a sweep's user fixes the redis: key
            raise SweepConfigError(f"{self.cfg.source}: redis: {in_words_of(e, 'sweep')}") from None

    def close(self, reset: bool) -> None:
        """Delete the network (``reset``: also its run dir) and close the connection."""
        rush, self.rush_ = self.rush_, None
        if rush is not None:
            try:
                if reset:
                    rush.reset()  # also removes the network's run dir (~/.rushhpc/runs/<network>)
                rush.close()
            except Exception:  # noqa: BLE001 - Redis may be gone; the journal has everything we read
                pass

    # ------------------------------------------------------------------ workers
    def start_workers(self, n: int, first: bool = True) -> list[str]:
        from rushhpc.errors import RushTimeoutError, RushWorkerError

        if self.schedule.design_mode:
            self.schedule.top_up(self.rush, self.wanted, self.state.evals)
        loop, args = self.schedule.loop_args(self.state.out)
        w = self.cfg["workers"]
        options = {}
        if w["heartbeat_period"] is not None:
            options["heartbeat_period"] = w["heartbeat_period"]
        if w["heartbeat_expire"] is not None:
            options["heartbeat_expire"] = w["heartbeat_expire"]
        a = w.get("adapt")
        if a is not None:
            # the monitor follows the queue (kept at twice max by top_up); it replaces lost
            # workers and pauses itself after failed starts (health reads that)
            self.adapter = self.rush.adapt(loop, minimum=a["min"], maximum=a["max"], idle_timeout=a["idle_timeout"],
                                           backlog=a["backlog"], **options, **args)
            self.say(f"adapting between {a['min']} and {a['max']} {w['launcher']} worker(s) on network "
                     f"{self.rush.network_id} (Redis {self.rush.config.address})")
            return []
        ids = self.rush.start_workers(loop, n_workers=n, **options, **args)
        now = time.monotonic()
        for wid in ids:
            self.launched[wid] = now
        if first and w["launcher"] in ("local", "srun"):
            try:
                self.rush.wait_for_workers(worker_ids=ids, timeout=w["start_timeout"], progress=False)
            except (RushWorkerError, RushTimeoutError) as e:
                raise Stop(SweepStatus.FAILED, f"the workers did not start: {e}") from None
        self.say(f"started {len(ids)} {w['launcher']} worker(s) on network {self.rush.network_id}"
                 f" (Redis {self.rush.config.address})")
        return ids

    def _read_ended(self, states: dict[str, str]) -> None:
        """Workers ended since the last look: one stopped on purpose (`rushhpc stop W`, `stop_workers`:
        killed, or asked to terminate) shrinks the sweep by one; one that was lost or failed is replaced."""
        ended = sorted(w for w, s in states.items() if s not in ALIVE_JOB_STATES and w not in self.ended_seen)
        if not ended:
            return
        self.ended_seen.update(ended)
        flags = self.rush.worker_field(ended, "terminate")
        stopped = [w for w, f in zip(ended, flags) if states[w] == WorkerState.KILLED or f == "1"]
        others = [w for w in ended if w not in stopped]
        raw = self.rush.worker_field(others, "reason") if others else []
        reasons = [r for r in raw if r]
        self.out_of_memory += [w for w, r in zip(others, raw) if r == LostReason.OUT_OF_MEMORY]
        if reasons:
            self.worker_reason = reasons[-1].strip().splitlines()[-1][:300]
        if stopped:
            self.wanted = max(0, self.wanted - len(stopped))
            self.stats.workers_wanted = self.wanted
            if self.wanted == 0:
                raise Stop(SweepStatus.INTERRUPTED, f"every worker was stopped by a stop request (last: {stopped[-1]})")
            self.say(f"worker(s) {', '.join(stopped)} stopped by a stop request, not replaced: "
                     f"the sweep continues with {self.wanted} worker(s)")

    def health(self) -> None:
        """Replace lost workers while there is work and restarts are left; give up when none is left.
        With workers.adapt the monitor does that; the sweep fails when it paused itself."""
        if self.adapter is not None:
            if self.adapter.paused and self.rush.n_running_workers == 0 and self.rush.n_running_tasks == 0:
                raise Stop(SweepStatus.FAILED, f"adapting paused: {self.adapter.paused}")
            return
        # the worker sets by state, not worker_info: every 2 s, and at 1,000 workers reading every
        # worker's hash costs Redis ~15 ms a call (bench/many_workers.py); reasons only of the newly ended
        states = self.rush.worker_states()
        now = time.monotonic()
        grace = self.cfg["workers"]["start_timeout"]
        alive = sum(1 for s in states.values() if s in ALIVE_JOB_STATES)
        alive += sum(1 for w, t in self.launched.items() if w not in states and now - t < grace)
        self.stats.workers_alive = sum(1 for s in states.values() if s == WorkerState.RUNNING)
        self._read_ended(states)
        sch = self.schedule
        if alive >= self.wanted or not sch.work_left(len(self.state.records)):
            return
        if not sch.design_mode and sch.limit is not None and self.rush.n_tasks >= sch.limit:
            # model-based workers stop by themselves once the budget's tasks exist
            if alive == 0 and self.rush.n_running_tasks == 0:
                raise Stop(SweepStatus.COMPLETED, f"budget of {sch.limit} evaluations reached"
                           f" ({self.state.n_cancelled} cancelled by stopped workers)")
            return
        k = self.replacer.grant(self.wanted - alive)
        if k:
            why = f" (last: {self.worker_reason})" if self.worker_reason else ""
            self.say(f"{self.wanted - alive} worker(s) gone{why}; starting {k} replacement(s)")
            # workers lost out_of_memory are replaced by the manager with more memory (workers.resources.mem_retry:
            # `Rush.replace_workers`, which logs its decision); the rest start afresh
            oom, self.out_of_memory = self.out_of_memory[:k], self.out_of_memory[k:]
            self.replacer.replace(oom if self.cfg["workers"]["resources"].get("mem_retry") else [], gone=k)
        elif alive == 0 and self.rush.n_running_tasks == 0:
            why = f"; last worker: {self.worker_reason}" if self.worker_reason else ""
            raise Stop(SweepStatus.FAILED, f"no workers left and no restarts left (workers.restarts){why}")

    def _replace_lost(self, lost: Sequence[str]) -> list[str]:
        """Replacements of these lost workers, started by the manager the way they were (`Rush.replace_workers`)."""
        ids = self.rush.replace_workers(lost)
        now = time.monotonic()
        for wid in ids:
            self.launched[wid] = now
        return ids

    def _start_fresh(self, n: int) -> list[str]:
        return self.start_workers(n, first=False)

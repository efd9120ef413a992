"""The sweep manager: one run of ``rushhpc sweep`` (or `rushhpc.sweep`).

It uses rushhpc's public API only: ``rsh`` for the network, ``start_workers`` with the sweep's
worker loops (`rushhpc.sweeps.worker`), ``push_tasks`` / ``fetch_new_tasks`` /
``fetch_failed_tasks`` for points and results, ``detect_lost_workers`` and ``worker_info``
to keep the workers, ``empty_queue`` and ``stop_workers`` to stop.

Each run of a sweep (the first, and each ``--resume``) uses a fresh network
``<name>-<6 hex>``; the output folder's ``state.json`` lists them. On resume the previous
network, if its Redis still holds it, is read for results the journal missed (its workers
are killed first, so nothing changes while it is read), then deleted.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import threading
import time
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from rushhpc import defaults
from rushhpc.errors import RushError
from rushhpc.store.connection import RedisUnusableError, in_words_of
from rushhpc.sweeps.config import DESIGN_STRATEGIES, SweepConfig, SweepConfigError, load_config
from rushhpc.sweeps.lock import OutputLock
from rushhpc.sweeps.progress import Display, Stats
from rushhpc.sweeps.results import Journal, best_document, build_table, read_json, write_json, write_tables

if TYPE_CHECKING:
    import pandas as pd

    from rushhpc.manager.rush import Rush
    from rushhpc.sweeps.designs import Design

CANCELLED = ("Removed from queue", "worker was killed")  # not evaluations: the point is done again
ALIVE_STATES = ("running", "pending", "held", "starting", "suspended")
EXIT_COMPLETED, EXIT_FAILED = 0, 1  # the CLI's convention: 1 = an unmet budget
EXIT_ALL_FAILED = 3  # the budget was spent and every evaluation failed (2 is an invalid config)
CHECKPOINT_INTERVAL = 30.0


@dataclass
class SweepResult:
    """What a sweep run ends with (`rushhpc.sweep` returns ``table``)."""

    table: "pd.DataFrame"
    status: str  # completed | interrupted | failed
    reason: str
    exit_code: int
    best: dict[str, Any] | None
    output: Path
    counts: dict[str, int] = field(default_factory=dict)


def run_sweep(source: Any, overrides: Any = (), resume: bool = False, from_python: bool = False) -> SweepResult:
    """Validate, then run (or resume) a sweep; see `SweepRun`."""
    cfg = load_config(source, overrides)
    return SweepRun(cfg, resume=resume, from_python=from_python).run()


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _ts(v: Any) -> float | None:
    """Unix seconds from a float (plain rows) or a pandas Timestamp (tables); None for missing."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return None if math.isnan(v) else float(v)
    try:
        if v != v:  # NaT
            return None
        return float(v.timestamp())
    except (AttributeError, TypeError, ValueError):
        return None


class _Stop(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class SweepRun:
    """One run of a sweep, from the validated config to the written results."""

    def __init__(self, cfg: SweepConfig, resume: bool = False, from_python: bool = False):
        self.cfg = cfg
        self.resume = resume
        self.from_python = from_python
        self.out = cfg.output
        d = cfg.data
        self.design_mode = cfg.strategy in DESIGN_STRATEGIES
        self.metric, self.direction = d["metric"], d["direction"]
        self.budget = d["budget"]
        self.wanted = d["workers"]["n"]
        self.adapter: Any = None  # the rushhpc.manager.adapt.Adapter when workers.adapt is set
        self.rush_: Rush | None = None
        self.journal_: Journal | None = None
        self.state: dict[str, Any] = {}
        self.status: str | None = None
        self.reason = ""
        self.signal_code = 0
        self.interrupts = 0
        self.phase = "starting"
        self.prev_elapsed = 0.0
        self.t0 = time.monotonic()
        self.records: list[dict[str, Any]] = []
        self.evals: set[int] = set()
        self.seen_keys: set[str] = set()
        self.nodes: dict[str, str | None] = {}  # worker id -> the node it runs on (results' node column)
        self.n_failed = 0
        self.best: dict[str, Any] | None = None
        self.run_done = 0
        self.inflight: dict[str, int] = {}  # task key -> eval index (designs)
        self.holes: deque[int] = deque()
        self.next_index = 0
        self.next_eval = 0  # eval id of the next model-based result
        self.eval_offset = 0  # model-based programs: eval = the task's place in the network + this
        self.failed_seen = 0
        self.launched: dict[str, float] = {}  # worker id -> launch time
        self.restarts_left = d["workers"]["restarts"]
        self.n_cancelled = 0
        self.last_health = 0.0
        self.last_detect = 0.0
        self.last_checkpoint = time.monotonic()
        self.worker_reason = ""
        self.ended_seen: set[str] = set()  # ended workers whose reason was read
        self.out_of_memory: list[str] = []  # lost out_of_memory, not replaced yet (workers.resources.mem_retry)
        self.display_: Display | None = None
        self.lock_: OutputLock | None = None
        self.all_failed = False
        self.saved_plan: dict | None = None
        self.plan_set = False
        self.limit: int | None = None
        self.design_: Design | None = None
        self.stats = Stats(metric=self.metric, budget=None, walltime=self.budget["walltime"],
                           workers_wanted=self.wanted)

    @property
    def rush(self) -> Rush:
        assert self.rush_ is not None, "not connected"
        return self.rush_

    @property
    def journal(self) -> Journal:
        assert self.journal_ is not None, "no output folder open"
        return self.journal_

    @property
    def display(self) -> Display:
        assert self.display_ is not None, "no display"
        return self.display_

    @property
    def design(self) -> Design:
        assert self.design_ is not None, "not a design strategy"
        return self.design_

    # ------------------------------------------------------------------ entry
    def run(self) -> SweepResult:
        """Lock the output folder (`OutputLock`: one sweep at a time runs in it), then run."""
        if self.out.exists() and not self.out.is_dir():
            raise SweepConfigError(f"{self.cfg.source}: output: {self.out} is a file, not a folder")
        from rushhpc.ui.notebook import no_progress_bars

        self.lock_ = OutputLock(self.out, source=self.cfg.source)
        self.lock_.acquire()  # before anything is read or started: a second run is refused here
        try:
            with no_progress_bars():  # the sweep's display is the only one: no manager's tqdm bar above it
                return self._run_locked()
        finally:
            self.lock_.release()

    def _run_locked(self) -> SweepResult:
        self._check_output()
        try:
            self._connect()  # a Redis that cannot be reached is an error before anything is written
        except BaseException:
            self._restore_plan()
            raise
        ok_to_reset = False
        try:
            self._open_output()
            with self._signals():
                try:
                    self._absorb_networks()
                    self._record_sweep()
                    self._plan_work()
                    reached = self._budget_reached()
                    if reached is None:
                        self._start_workers(self.wanted)
                        self.phase = "running"
                        self._loop()
                    else:
                        self._set_status("completed", reached)
                except _Stop as s:
                    self._set_status(s.status, s.reason)
                except KeyboardInterrupt:  # a signal while starting (the handler raises it then)
                    self.signal_code = self.signal_code or signal.SIGINT
                    self._set_status("interrupted", "SIGTERM" if self.signal_code == signal.SIGTERM else "Ctrl-C")
                except RushError as e:  # a launcher that refused the workers, and the like
                    self._set_status("failed", f"{type(e).__name__}: {e}")
                self._stop()
                ok_to_reset = True
        except RushError as e:
            self._set_status("failed", f"{type(e).__name__}: {e}")
        except Exception as e:
            import redis

            if not isinstance(e, (redis.RedisError, OSError)):
                self._finish(ok_to_reset=False)
                raise
            self._set_status("failed", f"lost Redis: {type(e).__name__}: {e}")
        return self._finish(ok_to_reset)

    def _set_status(self, status: str, reason: str) -> None:
        if self.status is None:
            self.status, self.reason = status, reason

    # ------------------------------------------------------------------ output folder
    def _check_output(self) -> None:
        """Before anything starts: a new sweep never writes over another; a resumed one
        must agree on what fixes its points."""
        out, src = self.out, self.cfg.source
        state_file, journal_file = out / "state.json", out / "journal.jsonl"
        has_sweep = state_file.exists() or journal_file.exists()
        if has_sweep and not self.resume:
            raise SweepConfigError(
                f"{src}: output: {out} already holds a sweep; pass --resume to continue it "
                "(resume=True in Python), or choose another output (output=...)"
            )
        if not has_sweep:
            self.resume = False
            return
        state = read_json(state_file) or {}
        saved = state.get("fingerprint")
        if saved:
            if self.cfg.seed_was_chosen:
                self.cfg.data["seed"] = saved.get("seed", self.cfg.data["seed"])
            import json

            now = json.loads(json.dumps(self.cfg.fingerprint()))
            for key in ("space", "strategy", "seed", "evaluations"):
                if now.get(key) != saved.get(key):
                    where = "budget.evaluations" if key == "evaluations" else key
                    raise SweepConfigError(
                        f"{src}: {where}: differs from the sweep being resumed in {out} (see its config.yaml): "
                        f"{saved.get(key)!r} there, {now.get(key)!r} here. A resumed sweep keeps its space, "
                        "strategy and seed (budget, workers and Redis may change)"
                    )
        self.state = state
        self.prev_elapsed = float(state.get("elapsed") or 0.0)

    def _open_output(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(
            "# resolved by rushhpc sweep: overrides applied, defaults filled in, durations in seconds\n"
            + self.cfg.to_yaml()
        )
        self.state.setdefault("version", 1)
        self.state["name"] = self.cfg["name"]
        self.state["fingerprint"] = self.cfg.fingerprint()
        self.state.setdefault("networks", [])
        self.state["status"] = "running"
        self._write_state()
        self.journal_ = Journal(self.out / "journal.jsonl")
        for r in self.journal.records:
            self._remember(r)
        self.display_ = Display(self.cfg["progress"], self.cfg["progress_interval"], f"sweep {self.cfg['name']}")
        for w in self.cfg.warnings:
            self.display.message(f"warning: {w}")
        old = self.lock_.took_over if self.lock_ is not None else None
        if old is not None:
            self.display.message(f"took over the lock of {self.out} from a run that is gone (host {old.get('host')}, "
                                 f"pid {old.get('pid')})")
        if self.journal.records:
            self.display.message(f"resuming: {len(self.journal.records)} evaluations in {self.out / 'journal.jsonl'}")

    def _write_state(self) -> None:
        self.state["elapsed"] = self._elapsed()
        self.state["updated_at"] = time.time()
        write_json(self.out / "state.json", self.state)

    def _elapsed(self) -> float:
        return self.prev_elapsed + (time.monotonic() - self.t0)

    def _remember(self, r: dict[str, Any]) -> None:
        self.records.append(r)
        self.evals.add(r["eval"])
        if r.get("key"):
            self.seen_keys.add(r["key"])
        if r["state"] == "failed":
            self.n_failed += 1
        v = r.get("value")
        if r["state"] == "finished" and v is not None:
            b = self.best
            if b is None or (v < b["value"] if self.direction == "minimize" else v > b["value"]):
                self.best = r
                if self.journal_ is not None and self.phase != "starting":
                    self._write_best()
        self.next_eval = max(self.next_eval, r["eval"] + 1)

    def _write_best(self) -> None:
        doc = best_document(self.best, self.metric, self.direction)
        if doc is not None:
            write_json(self.out / "best.json", doc)

    # ------------------------------------------------------------------ Redis and workers
    def _redis_config(self):
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

    def _set_plan(self, redis_cfg: Any) -> None:
        from rushhpc.manager.plan import rush_config, rush_plan

        prev = rush_config()
        self.saved_plan = prev
        w = self.cfg["workers"]
        plan = {k: prev.get(k) for k in ("log_thresholds", "large_objects_path", "max_object_size", "run_dir")
                if prev.get(k) is not None}
        options = dict(prev.get("launcher_options") or {})
        options.update(w["resources"])
        if w.get("gpus_per_worker"):
            options["gpus_per_worker"] = w["gpus_per_worker"]
        rush_plan(
            n_workers=self.wanted,
            config=redis_cfg if redis_cfg is not None else prev.get("config"),
            worker_type=w["launcher"],
            start_worker_timeout=w["start_timeout"],
            heartbeat_period=w["heartbeat_period"] if w["heartbeat_period"] is not None else prev.get("heartbeat_period"),
            heartbeat_expire=w["heartbeat_expire"] if w["heartbeat_expire"] is not None else prev.get("heartbeat_expire"),
            launcher_options=options,
            **plan,
        )
        self.plan_set = True

    def _restore_plan(self) -> None:
        if not self.plan_set:
            return
        from rushhpc.manager.plan import remove_rush_plan, rush_config, rush_plan

        remove_rush_plan()
        prev = self.saved_plan or {}
        if prev and rush_config() != prev:  # it was set in Python, not read from RUSHHPC_CONFIG
            rush_plan(**prev)
        self.plan_set = False

    def _connect(self) -> None:
        from rushhpc.manager.rush import rsh

        self.redis_cfg = self._redis_config()
        self._set_plan(self.redis_cfg)
        network = f"{self.cfg['name']}-{secrets.token_hex(3)}"
        try:
            self.rush_ = rsh(network, config=self.redis_cfg)
        except RedisUnusableError as e:
            # raised in Python's words ("leave the config unset ..."): a sweep's user fixes the redis: key
            raise SweepConfigError(f"{self.cfg.source}: redis: {in_words_of(e, 'sweep')}") from None

    def _absorb_networks(self) -> None:
        for net in list(self.state.get("networks", []))[-3:]:
            self._absorb_network(net["id"], self.redis_cfg)
        self.state["networks"].append(
            {"id": self.rush.network_id, "redis": self.rush.config.address, "started_at": time.time()})
        self._write_state()

    def _record_sweep(self) -> None:
        """What this network is, in Redis (``{net}:sweep``), for the CLI, dashboard and notebooks."""
        from rushhpc.core.records import SweepInfo

        b, d, src = self.budget, self.cfg.data, self.cfg.source
        if not src.startswith("<"):  # a file (not <dict>): absolute, for whoever reads it
            src = str((self.cfg.cwd / src).resolve())
        self.rush.set_sweep_info(SweepInfo(
            name=self.cfg["name"], strategy=self.cfg.strategy, metric=self.metric, direction=self.direction,
            evaluations=b["evaluations"], walltime=b["walltime"], target=b["target"], seed=d["seed"],
            config=src, output=str(self.out), started_at=time.time(),
        ))

    def _absorb_network(self, network: str, redis_cfg: Any) -> None:
        """Results of an earlier run that its Redis holds and the journal missed (that run's
        manager died before it read them); then the network is deleted."""
        from rushhpc.manager.rush import Rush

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Redis restarted since the network was created"
            try:
                old = Rush.attach(network, config=redis_cfg)
            except RushError:  # not in this Redis (gone, restarted, embedded): the journal is all there is
                return
        try:
            old.stop_workers(type="kill")  # nothing may finish while we read
            rows = old.task_rows(states=("finished", "failed"))
            new = [r for r in (self._record(row, network) for row in rows) if r is not None]
            if new:
                self.journal.append(new)
                self.display.message(f"resuming: {len(new)} evaluations read from network {network} in Redis")
        finally:
            old.reset()  # with its run dir: a crashed run's leftovers
            old.close()

    def _plan_work(self) -> None:
        """What this run evaluates: the indices not final yet (designs)."""
        if self.design_mode:
            from rushhpc.sweeps.designs import make_design
            from rushhpc.sweeps.space import Space

            self.design_ = make_design(Space(self.cfg.space), self.cfg.data["strategy"], self.cfg["seed"],
                                      self.budget["evaluations"])
            limits = [x for x in (self.budget["evaluations"], self.design.size) if x is not None]
            self.limit = min(limits) if limits else None
            hwm = max(self.evals) + 1 if self.evals else 0
            self.holes = deque(i for i in range(hwm) if i not in self.evals and (self.limit is None or i < self.limit))
            self.next_index = hwm
        else:
            self.limit = self.budget["evaluations"]
            if self.records:  # history for the workers' samplers, and their budget count
                fin = [r for r in self.records if r["state"] == "finished"]
                bad = [r for r in self.records if r["state"] != "finished"]
                if fin:
                    keys = self.rush.push_finished_tasks(
                        [{"params": r["params"]} for r in fin],
                        [{"outputs": r["outputs"], "value": r["value"]} for r in fin],
                        xss_extra=[{"eval": r["eval"]} for r in fin],
                    )
                    self.seen_keys.update(keys)
                if bad:
                    keys = self.rush.push_failed_tasks(
                        [{"params": r["params"]} for r in bad], xss_extra=[{"eval": r["eval"]} for r in bad],
                        conditions=[{"message": r.get("error") or "failed"} for r in bad],
                    )
                    self.seen_keys.update(keys)
                    self.failed_seen = self.rush.n_failed_tasks
            # a program's evaluation is numbered by its task's place in the network (see model_loop): the
            # numbers of a resumed sweep go on after its history's
            self.eval_offset = self.next_eval - self.rush.n_tasks
        self.stats.budget = self.limit

    def _loop_args(self) -> tuple[Any, dict[str, Any]]:
        d = self.cfg.data
        objective = self.cfg.objective_fn or d["objective"]
        if self.cfg.objective_kind == "command":  # where its trials go and what its placeholders may name
            objective = {**d["objective"], "context": {
                "trials": str((self.out / "trials").resolve()), "base_dir": str(self.cfg.base_dir),
                "parameters": list(d["space"]), "seed": d["seed"], "timeout": d["timeout"],
                "eval_offset": self.eval_offset}}
        args = {"objective": objective, "pythonpath": d["pythonpath"], "metric": d["metric"],
                "timeout": d["timeout"], "retries": d["retries"]}
        if self.design_mode:
            from rushhpc.sweeps.worker import design_loop

            return design_loop, args
        from rushhpc.sweeps.worker import model_loop

        args.update(space=d["space"], strategy=d["strategy"], direction=d["direction"], seed=d["seed"],
                    max_evaluations=self.budget["evaluations"])
        return model_loop, args

    def _start_workers(self, n: int, first: bool = True) -> None:
        from rushhpc.errors import RushTimeoutError, RushWorkerError

        if self.design_mode:
            self._top_up()
        loop, args = self._loop_args()
        w = self.cfg["workers"]
        options = {}
        if w["heartbeat_period"] is not None:
            options["heartbeat_period"] = w["heartbeat_period"]
        if w["heartbeat_expire"] is not None:
            options["heartbeat_expire"] = w["heartbeat_expire"]
        a = w.get("adapt")
        if a is not None:
            # the monitor follows the queue (kept at twice max by _top_up); it replaces lost
            # workers and pauses itself after failed starts (_health reads that)
            self.adapter = self.rush.adapt(loop, minimum=a["min"], maximum=a["max"], idle_timeout=a["idle_timeout"],
                                           backlog=a["backlog"], **options, **args)
            self.display.message(f"adapting between {a['min']} and {a['max']} {w['launcher']} worker(s) on network "
                                 f"{self.rush.network_id} (Redis {self.rush.config.address})")
            return
        ids = self.rush.start_workers(loop, n_workers=n, **options, **args)
        now = time.monotonic()
        for wid in ids:
            self.launched[wid] = now
        if first and w["launcher"] in ("local", "srun"):
            try:
                self.rush.wait_for_workers(worker_ids=ids, timeout=w["start_timeout"], progress=False)
            except (RushWorkerError, RushTimeoutError) as e:
                raise _Stop("failed", f"the workers did not start: {e}") from None
        self.display.message(f"started {len(ids)} {w['launcher']} worker(s) on network {self.rush.network_id}"
                             f" (Redis {self.rush.config.address})")

    # ------------------------------------------------------------------ results
    @staticmethod
    def _rows(tbl: "pd.DataFrame") -> Iterator[dict[str, Any]]:
        if tbl is None or not len(tbl):
            return iter(())
        return iter(tbl.to_dict("records"))

    def _record(self, row: dict[str, Any], network: str) -> dict[str, Any] | None:
        """A task row -> a journal record, or None (seen already, or cancelled, not evaluated)."""
        key: Any = row.get("keys")
        if key in self.seen_keys:
            return None
        idx = self.inflight.pop(key, None)
        raw_ev: Any = row.get("eval")
        ev = None if _nan(raw_ev) else int(raw_ev)
        if ev is not None and ev in self.evals:  # history pushed for the samplers, or read twice
            self.seen_keys.add(key)
            return None
        if ev is None and idx is not None:
            ev = idx
        state = row.get("state")
        if state is None:
            state = "failed" if not _nan(row.get("condition")) else "finished"
        params = row.get("params") if isinstance(row.get("params"), dict) else {}
        self.seen_keys.add(key)
        if state == "failed":
            cond = row.get("condition")
            text = "failed" if _nan(cond) else str(cond)
            if text in CANCELLED:
                self.n_cancelled += 1
                if ev is not None and self.design_mode and ev not in self.evals:
                    self.holes.appendleft(ev)
                return None
            short, _, tb = text.partition("\n")
            rec = {"eval": ev, "state": "failed", "params": params, "outputs": None, "value": None,
                   "error": short, "traceback": tb or None}
        else:
            outputs = row.get("outputs") if isinstance(row.get("outputs"), dict) else {}
            value: Any = row.get("value")
            rec = {"eval": ev, "state": "finished", "params": params, "outputs": outputs,
                   "value": None if _nan(value) else float(value), "error": None, "traceback": None}
        if rec["eval"] is None:
            rec["eval"] = self.next_eval
            self.next_eval += 1
        started, finished = _ts(row.get("started_at")), _ts(row.get("finished_at"))
        runtime = row.get("runtime")
        if _nan(runtime):
            runtime = finished - started if started is not None and finished is not None else None
        attempts: Any = row.get("attempts")
        rec.update(worker_id=row.get("worker_id"), node=self._node(row.get("worker_id")),
                   created_at=_ts(row.get("created_at")), started_at=started,
                   finished_at=finished, runtime=runtime, attempts=None if _nan(attempts) else int(attempts),
                   key=key, network=network)
        self._remember(rec)
        return rec

    def _node(self, worker_id: Any) -> str | None:
        """The node a worker ran on (its hash's ``node``, else its host name), read once per worker."""
        if not isinstance(worker_id, str) or not worker_id:
            return None
        import redis

        if worker_id not in self.nodes:
            try:
                node, host = (self.rush.worker_field([worker_id], f)[0] for f in ("node", "hostname"))
            except (RushError, redis.RedisError):
                return None  # asked again for its next evaluation
            self.nodes[worker_id] = node or host or None
        return self.nodes[worker_id]

    def _ingest(self, wait: float = 0.0) -> int:
        rush = self.rush
        rows = list(self._rows(rush.fetch_new_tasks(timeout=wait)))
        n_failed = rush.n_failed_tasks
        if n_failed != self.failed_seen:
            self.failed_seen = n_failed
            rows += [r for r in rush.task_rows(states=("failed",)) if r.get("keys") not in self.seen_keys]
        for r in rows:
            r.setdefault("state", "failed" if not _nan(r.get("condition")) else "finished")
        new = [rec for rec in (self._record(r, rush.network_id) for r in rows) if rec is not None]
        self.journal.append(new)
        self.run_done += len(new)
        return len(new)

    # ------------------------------------------------------------------ the loop
    def _budget_reached(self) -> str | None:
        b = self.budget
        done = len(self.records)
        if self.limit is not None and done >= self.limit:
            if self.design_mode and self.design.size is not None and self.limit == self.design.size and (
                b["evaluations"] is None or b["evaluations"] > self.design.size
            ):
                return f"all {self.design.size} points of the {self.cfg.strategy} evaluated"
            return f"budget of {self.limit} evaluations reached"
        if b["target"] is not None and self.best is not None:
            v = self.best["value"]
            if (v <= b["target"]) if self.direction == "minimize" else (v >= b["target"]):
                return f"target {self.metric} {'<=' if self.direction == 'minimize' else '>='} {b['target']:g} reached"
        if b["walltime"] is not None and time.monotonic() - self.t0 >= b["walltime"]:  # per run
            return f"walltime of {b['walltime']:g} s reached"
        return None

    def _check_stop(self) -> None:
        reason = self._budget_reached()
        if reason:
            raise _Stop("completed", reason)
        mf = self.cfg["max_failures"]
        if mf is not None and self.n_failed > mf:
            raise _Stop("failed", f"{self.n_failed} evaluations failed, more than max_failures={mf}")
        if self.interrupts:
            raise _Stop("interrupted", "SIGTERM" if self.signal_code == signal.SIGTERM else "Ctrl-C")

    def _work_left(self) -> bool:
        if self.design_mode:
            return bool(self.inflight) or bool(self.holes) or self.limit is None or self.next_index < self.limit
        return self.limit is None or len(self.records) < self.limit

    def _next_indices(self, k: int) -> list[int]:
        out: list[int] = []
        while self.holes and len(out) < k:
            i = self.holes.popleft()
            if i not in self.evals and i not in out and i not in self.inflight.values():
                out.append(i)
        while len(out) < k and (self.limit is None or self.next_index < self.limit):
            if self.next_index not in self.evals:
                out.append(self.next_index)
            self.next_index += 1
        return out

    def _top_up(self) -> None:
        want = max(defaults.SWEEP_LOOKAHEAD_MIN, defaults.SWEEP_LOOKAHEAD_PER_WORKER * self.wanted) - len(self.inflight)
        if want <= 0:
            return
        idx = self._next_indices(want)
        if not idx:
            return
        points: list[dict[str, Any]] = []
        lo = 0
        while lo < len(idx):  # runs of consecutive indices in one call (a sobol fast-forward each)
            hi = lo + 1
            while hi < len(idx) and idx[hi] == idx[hi - 1] + 1:
                hi += 1
            points += self.design.points(idx[lo], idx[hi - 1] + 1)
            lo = hi
        keys = self.rush.push_tasks([{"params": p} for p in points], xss_extra=[{"eval": i} for i in idx],
                                    max_retries=self.cfg["retries"])
        self.inflight.update(zip(keys, idx))

    def _health(self) -> None:
        """Replace lost workers while there is work and restarts are left; give up when none is left.
        With workers.adapt the monitor does that; the sweep fails when it paused itself."""
        if self.adapter is not None:
            if self.adapter.paused and self.rush.n_running_workers == 0 and self.rush.n_running_tasks == 0:
                raise _Stop("failed", f"adapting paused: {self.adapter.paused}")
            return
        # the worker sets by state, not worker_info: every 2 s, and at 1,000 workers reading every
        # worker's hash costs Redis ~15 ms a call (bench/many_workers.py); reasons only of the newly ended
        states = self.rush.worker_states()
        now = time.monotonic()
        grace = self.cfg["workers"]["start_timeout"]
        alive = sum(1 for s in states.values() if s in ALIVE_STATES)
        alive += sum(1 for w, t in self.launched.items() if w not in states and now - t < grace)
        self.stats.workers_alive = sum(1 for s in states.values() if s == "running")
        ended = sorted(w for w, s in states.items() if s not in ALIVE_STATES and w not in self.ended_seen)
        if ended:
            self.ended_seen.update(ended)
            # a worker stopped on purpose (`rushhpc stop W`, `stop_workers`: killed, or asked to
            # terminate) shrinks the sweep by one; one that was lost or failed is replaced
            flags = self.rush.worker_field(ended, "terminate")
            stopped = [w for w, f in zip(ended, flags) if states[w] == "killed" or f == "1"]
            others = [w for w in ended if w not in stopped]
            raw = self.rush.worker_field(others, "reason") if others else []
            reasons = [r for r in raw if r]
            self.out_of_memory += [w for w, r in zip(others, raw) if r == "out_of_memory"]
            if reasons:
                self.worker_reason = reasons[-1].strip().splitlines()[-1][:300]
            if stopped:
                self.wanted = max(0, self.wanted - len(stopped))
                self.stats.workers_wanted = self.wanted
                if self.wanted == 0:
                    raise _Stop("interrupted", f"every worker was stopped by a stop request (last: {stopped[-1]})")
                self.display.message(f"worker(s) {', '.join(stopped)} stopped by a stop request, not replaced: "
                                     f"the sweep continues with {self.wanted} worker(s)")
        if alive >= self.wanted or not self._work_left():
            return
        if not self.design_mode and self.limit is not None and self.rush.n_tasks >= self.limit:
            # model-based workers stop by themselves once the budget's tasks exist
            if alive == 0 and self.rush.n_running_tasks == 0:
                raise _Stop("completed", f"budget of {self.limit} evaluations reached"
                            f" ({self.n_cancelled} cancelled by stopped workers)")
            return
        if self.restarts_left > 0:
            k = min(self.wanted - alive, self.restarts_left)
            self.restarts_left -= k
            why = f" (last: {self.worker_reason})" if self.worker_reason else ""
            self.display.message(f"{self.wanted - alive} worker(s) gone{why}; starting {k} replacement(s)")
            grown = self._replace_out_of_memory(k)
            if k > len(grown):
                self._start_workers(k - len(grown), first=False)
        elif alive == 0 and self.rush.n_running_tasks == 0:
            why = f"; last worker: {self.worker_reason}" if self.worker_reason else ""
            raise _Stop("failed", f"no workers left and no restarts left (workers.restarts){why}")

    def _replace_out_of_memory(self, k: int) -> list[str]:
        """Up to ``k`` replacements of workers lost out_of_memory, started by the manager with more memory
        (workers.resources.mem_retry: `Rush.replace_workers`, which logs its decision); the rest start afresh."""
        lost, self.out_of_memory = self.out_of_memory[:k], self.out_of_memory[k:]
        if not lost or not self.cfg["workers"]["resources"].get("mem_retry"):
            return []
        ids = self.rush.replace_workers(lost)
        now = time.monotonic()
        for wid in ids:
            self.launched[wid] = now
        return ids

    def _update_stats(self, phase: str | None = None) -> None:
        st = self.stats
        st.done = len(self.records)
        st.failed = self.n_failed
        st.best = self.best["value"] if self.best else None
        st.elapsed = time.monotonic() - self.t0
        st.run_elapsed = time.monotonic() - self.t0
        st.run_done = self.run_done
        st.phase = phase or self.phase
        try:
            counts = self.rush.n_running_tasks, self.rush.n_queued_tasks
            st.running, st.queued = counts
        except Exception:  # noqa: BLE001 - display only
            pass

    def _loop(self) -> None:
        while True:
            self._check_stop()
            if self.design_mode:
                self._top_up()
            now = time.monotonic()
            if now - self.last_detect >= 1.0:
                self.last_detect = now
                if self.rush.detect_lost_workers():
                    self.last_health = 0.0  # replace them now
            if now - self.last_health >= 2.0:
                self.last_health = now
                self._health()
            if now - self.last_checkpoint >= CHECKPOINT_INTERVAL:
                self.last_checkpoint = now
                self._checkpoint()
            self._update_stats()
            self.display.update(self.stats)
            self._ingest(wait=0.1)

    def _checkpoint(self) -> None:
        self._write_state()
        df, _ = build_table(self.records, list(self.cfg.space), self.metric)
        write_tables(self.out, df)

    def _stop(self) -> None:
        """Stop proposing, let running evaluations finish (``workers.stop_grace``; a second
        Ctrl-C cuts it short), then kill what is left and read the last results."""
        rush = self.rush
        self.phase = "stopping"
        try:
            rush.stop_monitor()  # an adapting monitor must not start workers while the sweep stops
            if self.design_mode:
                rush.empty_queue()
            rush.stop_workers(type="terminate")
            deadline = time.monotonic() + self.cfg["workers"]["stop_grace"]
            last_detect = 0.0
            shown = False
            while rush.n_running_tasks > 0 and time.monotonic() < deadline and self.interrupts < 2:
                if not shown:
                    again = ", Ctrl-C again to kill them" if self.status == "interrupted" else ""
                    self.display.message(f"stopping ({self.reason}): waiting for {rush.n_running_tasks} running "
                                         f"evaluation(s){again}")
                    shown = True
                self._ingest(wait=0.2)
                if time.monotonic() - last_detect > 1.0:
                    last_detect = time.monotonic()
                    rush.detect_lost_workers()
                self._update_stats("stopping")
                self.display.update(self.stats)
            rush.stop_workers(type="kill")
            self._ingest()
            self._ingest()
        finally:
            self.phase = "done"

    # ------------------------------------------------------------------ signals
    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):  # noqa: ANN001
            self.interrupts += 1
            self.signal_code = self.signal_code or signum
            if self.phase == "starting":
                raise KeyboardInterrupt
            if self.interrupts >= 2 and self.display_ is not None:
                self.display.message("second interrupt: killing the workers")

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ the end
    def _finish(self, ok_to_reset: bool) -> SweepResult:
        if self.status is None:
            self.status, self.reason = "completed", self._budget_reached() or "done"
        interrupted = 128 + int(self.signal_code or signal.SIGINT)
        exit_code = {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED}.get(self.status, interrupted)
        self.all_failed = bool(self.records) and all(r["state"] == "failed" for r in self.records)
        if self.status == "completed" and self.all_failed:
            # a budget spent on nothing but errors is no result: its own exit code, and the first error
            first = next(r for r in self.records if r["state"] == "failed")
            self.status, exit_code = "failed", EXIT_ALL_FAILED
            self.reason = f"all {len(self.records)} evaluations failed; the first: {first.get('error') or 'failed'}"
        rush, self.rush_ = self.rush_, None
        if rush is not None:
            try:
                if ok_to_reset:
                    rush.reset()  # also removes the network's run dir (~/.rushhpc/runs/<network>)
                rush.close()
            except Exception:  # noqa: BLE001 - Redis may be gone; the journal has everything we read
                pass
        self._restore_plan()
        params = list(self.cfg.space)
        df, cols = build_table(self.records, params, self.metric)
        files = write_tables(self.out, df)
        if self.best is not None:
            self._write_best()
            files.append("best.json")
        n_fin = sum(1 for r in self.records if r["state"] == "finished")
        counts = {"evaluations": len(self.records), "finished": n_fin, "failed": len(self.records) - n_fin,
                  "this_run": self.run_done, "cancelled": self.n_cancelled}
        summary = {"status": self.status, "reason": self.reason, "exit_code": exit_code, "counts": counts,
                   "budget": self.budget, "elapsed": time.monotonic() - self.t0, "elapsed_total": self._elapsed(),
                   "networks": self.state.get("networks", []),
                   "best": best_document(self.best, self.metric, self.direction), "columns": cols}
        write_json(self.out / "summary.json", summary)
        self.state["status"] = self.status
        self._write_state()
        if self.journal_ is not None:
            self.journal.close()
        if self.display_ is not None:
            self._update_stats_final()
            self.display.close(self.stats)
        print(self._summary_text(counts, files), flush=True)
        df.attrs.update(status=self.status, reason=self.reason, exit_code=exit_code, output=str(self.out),
                        best=best_document(self.best, self.metric, self.direction), columns=cols)
        return SweepResult(df, self.status, self.reason, exit_code, summary["best"], self.out, counts)

    def _update_stats_final(self) -> None:
        st = self.stats
        st.done, st.failed = len(self.records), self.n_failed
        st.best = self.best["value"] if self.best else None
        st.elapsed = st.run_elapsed = time.monotonic() - self.t0
        st.run_done = self.run_done
        st.phase, st.running, st.queued, st.workers_alive = self.status or "done", 0, 0, 0

    def _summary_text(self, counts: dict[str, int], files: list[str]) -> str:
        el = time.monotonic() - self.t0
        lines = [f"sweep {self.cfg['name']}: {self.status} ({self.reason}) after {el:.1f} s"]
        rate = self.run_done / max(time.monotonic() - self.t0, 1e-9)
        lines.append(f"  {counts['evaluations']} evaluations: {counts['finished']} finished, {counts['failed']} failed"
                     f" ({counts['this_run']} in this run, {rate:.2f}/s)")
        if self.best is not None:
            ps = ", ".join(f"{k}={v!r}" if not isinstance(v, float) else f"{k}={v:.6g}"
                           for k, v in (self.best.get("params") or {}).items())
            lines.append(f"  best {self.metric} = {self.best['value']:.6g} (eval {self.best['eval']}): {ps}")
        else:
            lines.append("  no finished evaluation")
        lines.append(f"  output: {self.out} ({', '.join(files + ['config.yaml', 'journal.jsonl'])})")
        if self.all_failed and self.status == "failed" and "max_failures" not in self.reason:
            # resuming would not evaluate them again: failed evaluations are final
            lines.append(f"  every evaluation failed: see the tracebacks in {self.out / 'journal.jsonl'}, fix the "
                         f"objective, then run again into a new output folder (output=...) or after removing {self.out}")
        elif self.status != "completed":
            how = ("rushhpc.sweep(..., resume=True)" if self.from_python
                   else f"rushhpc sweep {self.out / 'config.yaml'} --resume")
            lines.append(f"  continue with: {how}")
        return "\n".join(lines)



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

import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from rushhpc import defaults
from rushhpc.core.states import SweepStatus, TaskState
from rushhpc.errors import RushError
from rushhpc.sweeps.config import SweepConfig, SweepConfigError, load_config
from rushhpc.sweeps.fleet import Fleet
from rushhpc.sweeps.ingest import Ingest
from rushhpc.sweeps.lock import OutputLock
from rushhpc.sweeps.progress import Display, Stats
from rushhpc.sweeps.scheduling import Schedule
from rushhpc.sweeps.state import EXIT_ALL_FAILED, EXIT_COMPLETED, EXIT_FAILED, PHASE_STARTING, Stop, SweepState

if TYPE_CHECKING:
    import pandas as pd

    from rushhpc.manager.rush import Rush

def _joined(value: str | list[str]) -> str:
    """One metric (or direction) as it is, several joined by ',' (the sweep's record, the progress display)."""
    return value if isinstance(value, str) else ",".join(value)


def _objectives_json(d: dict[str, Any]) -> str | None:
    """The sweep record's ``objectives`` (for the dashboard): constraints and reference point, when there are."""
    import json

    doc = {k: d[k] for k in ("constraints", "reference_point") if d.get(k) is not None}
    return json.dumps(doc) if doc else None


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
    """Validate, then run (or resume) a sweep; see `SweepRun`.

    Example::

        res = run_sweep("sweep.yaml", ["budget.evaluations=20"])
        res.status, res.best
    """
    cfg = load_config(source, overrides)
    return SweepRun(cfg, resume=resume, from_python=from_python).run()


class SweepRun:
    """One run of a sweep, from the validated config to the written results: the loop over its parts,
    `SweepState` (output folder), `Schedule` (what to queue), `Ingest` (results, budget), `Fleet` (workers)."""

    def __init__(self, cfg: SweepConfig, resume: bool = False, from_python: bool = False):
        self.cfg = cfg
        self.from_python = from_python
        self.out = cfg.output
        self.state = SweepState(cfg, resume=resume)
        self.schedule = Schedule(cfg)
        self.ingest = Ingest(self.state, self.schedule)
        d = cfg.data
        self.stats = Stats(metric=_joined(d["metric"]), budget=None, walltime=d["budget"]["walltime"],
                           workers_wanted=d["workers"]["n"])
        self.fleet = Fleet(cfg, self.schedule, self.state, self.stats, say=self._say)
        self.status: str | None = None
        self.reason = ""
        self.signal_code = 0
        self.interrupts = 0
        self.last_health = 0.0
        self.last_detect = 0.0
        self.last_checkpoint = time.monotonic()
        self.display_: Display | None = None
        self.lock_: OutputLock | None = None

    @property
    def rush(self) -> Rush:
        return self.fleet.rush

    @property
    def display(self) -> Display:
        assert self.display_ is not None, "no display"
        return self.display_

    def _say(self, text: str) -> None:
        self.display.message(text)

    # ------------------------------------------------------------------ entry
    def run(self) -> SweepResult:
        """Lock the output folder (`OutputLock`: one sweep at a time runs in it), then run."""
        if self.out.exists() and not self.out.is_dir():
            raise SweepConfigError(f"{self.cfg.source}: output: {self.out} is a file, not a folder")
        from rushhpc.manager.display import no_progress_bars

        self.lock_ = OutputLock(self.out, source=self.cfg.source)
        self.lock_.acquire()  # before anything is read or started: a second run is refused here
        try:
            with no_progress_bars():  # the sweep's display is the only one: no manager's tqdm bar above it
                return self._run_locked()
        finally:
            self.lock_.release()

    def _run_locked(self) -> SweepResult:
        self.state.check_output()
        self.fleet.connect()  # a Redis that cannot be reached is an error before anything is written
        ok_to_reset = False
        try:
            self._open_output()
            with self._signals():
                self._run_started()
                self._stop()
                ok_to_reset = True
        except RushError as e:
            self._set_status(SweepStatus.FAILED, f"{type(e).__name__}: {e}")
        except Exception as e:
            import redis

            if not isinstance(e, (redis.RedisError, OSError)):
                self._finish(ok_to_reset=False)
                raise
            self._set_status(SweepStatus.FAILED, f"lost Redis: {type(e).__name__}: {e}")
        return self._finish(ok_to_reset)

    def _run_started(self) -> None:
        """From the open output folder to the end of the loop; the status says why it ended."""
        try:
            self._absorb_networks()
            self._record_sweep()
            self._plan_work()
            reached = self.ingest.budget_reached()
            if reached is None:
                self.fleet.start_workers(self.fleet.wanted)
                self.state.phase = SweepStatus.RUNNING
                self._loop()
            else:
                self._set_status(SweepStatus.COMPLETED, reached)
        except Stop as s:
            self._set_status(s.status, s.reason)
        except KeyboardInterrupt:  # a signal while starting (the handler raises it then)
            self.signal_code = self.signal_code or signal.SIGINT
            self._set_status(SweepStatus.INTERRUPTED, "SIGTERM" if self.signal_code == signal.SIGTERM else "Ctrl-C")
        except RushError as e:  # a launcher that refused the workers, and the like
            self._set_status(SweepStatus.FAILED, f"{type(e).__name__}: {e}")

    def _set_status(self, status: str, reason: str) -> None:
        if self.status is None:
            self.status, self.reason = status, reason

    # ------------------------------------------------------------------ before the loop
    def _open_output(self) -> None:
        self.state.open()
        self.display_ = Display(self.cfg["progress"], self.cfg["progress_interval"], f"sweep {self.cfg['name']}")
        for w in self.cfg.warnings:
            self.display.message(f"warning: {w}")
        old = self.lock_.took_over if self.lock_ is not None else None
        if old is not None:
            self.display.message(f"took over the lock of {self.out} from a run that is gone (host {old.get('host')}, "
                                 f"pid {old.get('pid')})")
        if self.state.journal.records:
            self.display.message(
                f"resuming: {len(self.state.journal.records)} evaluations in {self.out / 'journal.jsonl'}")

    def _absorb_networks(self) -> None:
        for net in list(self.state.doc.get("networks", []))[-3:]:
            self._absorb_network(net["id"], self.fleet.redis_cfg)
        self.state.add_network(self.rush.network_id, self.rush.config.address)

    def _record_sweep(self) -> None:
        """What this network is, in Redis (``{net}:sweep``), for the CLI, dashboard and notebooks."""
        from rushhpc.core.records import SweepInfo

        d, src = self.cfg.data, self.cfg.source
        b = d["budget"]
        if not src.startswith("<"):  # a file (not <dict>): absolute, for whoever reads it
            src = str((self.cfg.cwd / src).resolve())
        self.rush.set_sweep_info(SweepInfo(
            name=self.cfg["name"], strategy=self.cfg.strategy, metric=_joined(d["metric"]), direction=_joined(d["direction"]),
            evaluations=b["evaluations"], walltime=b["walltime"], target=b["target"], seed=d["seed"],
            config=src, output=str(self.out), started_at=time.time(),
            objectives=_objectives_json(d),
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
            rows = old.task_rows(states=(TaskState.FINISHED, TaskState.FAILED))
            new = [r for r in (self.ingest.record(row, network, self.rush) for row in rows) if r is not None]
            if new:
                self.state.journal.append(new)
                self.display.message(f"resuming: {len(new)} evaluations read from network {network} in Redis")
        finally:
            old.reset()  # with its run dir: a crashed run's leftovers
            old.close()

    def _plan_work(self) -> None:
        had_failed = any(r["state"] != TaskState.FINISHED for r in self.state.records)
        self.schedule.plan(self.state, self.rush)
        if not self.schedule.design_mode and had_failed:  # the failed history pushed is not read back
            self.ingest.failed_seen = self.rush.n_failed_tasks
        self.stats.budget = self.schedule.limit

    # ------------------------------------------------------------------ the loop
    def _check_stop(self) -> None:
        self.ingest.check_budget()
        if self.interrupts:
            raise Stop(SweepStatus.INTERRUPTED, "SIGTERM" if self.signal_code == signal.SIGTERM else "Ctrl-C")

    def _update_stats(self, phase: str | None = None) -> None:
        st, ss = self.stats, self.state
        st.done = len(ss.records)
        st.failed = ss.n_failed
        st.best = ss.best["value"] if ss.best else None
        st.front, st.hypervolume = ss.objectives.progress()
        st.elapsed = time.monotonic() - ss.t0
        st.run_elapsed = time.monotonic() - ss.t0
        st.run_done = ss.run_done
        st.phase = phase or ss.phase
        try:
            counts = self.rush.n_running_tasks, self.rush.n_queued_tasks
            st.running, st.queued = counts
        except Exception:  # noqa: BLE001 - display only
            pass

    def _loop(self) -> None:
        while True:
            self._check_stop()
            if self.schedule.design_mode:
                self.schedule.top_up(self.rush, self.fleet.wanted, self.state.evals)
            now = time.monotonic()
            if now - self.last_detect >= defaults.SWEEP_DETECT_INTERVAL:
                self.last_detect = now
                if self.rush.detect_lost_workers():
                    self.last_health = 0.0  # replace them now
            if now - self.last_health >= defaults.SWEEP_HEALTH_INTERVAL:
                self.last_health = now
                self.fleet.health()
            if now - self.last_checkpoint >= defaults.SWEEP_CHECKPOINT_INTERVAL:
                self.last_checkpoint = now
                self.state.checkpoint()
            self._update_stats()
            self.display.update(self.stats)
            self.ingest.ingest(self.rush, wait=0.1)

    def _stop(self) -> None:
        """Stop proposing, let running evaluations finish (``workers.stop_grace``; a second
        Ctrl-C cuts it short), then kill what is left and read the last results."""
        rush = self.rush
        self.state.phase = "stopping"
        try:
            rush.stop_monitor()  # an adapting monitor must not start workers while the sweep stops
            if self.schedule.design_mode:
                rush.empty_queue()
            rush.stop_workers(type="terminate")
            deadline = time.monotonic() + self.cfg["workers"]["stop_grace"]
            last_detect = 0.0
            shown = False
            while rush.n_running_tasks > 0 and time.monotonic() < deadline and self.interrupts < 2:
                if not shown:
                    again = ", Ctrl-C again to kill them" if self.status == SweepStatus.INTERRUPTED else ""
                    self.display.message(f"stopping ({self.reason}): waiting for {rush.n_running_tasks} running "
                                         f"evaluation(s){again}")
                    shown = True
                self.ingest.ingest(rush, wait=0.2)
                if time.monotonic() - last_detect > defaults.SWEEP_DETECT_INTERVAL:
                    last_detect = time.monotonic()
                    rush.detect_lost_workers()
                self._update_stats("stopping")
                self.display.update(self.stats)
            rush.stop_workers(type="kill")
            self.ingest.ingest(rush)
            self.ingest.ingest(rush)
        finally:
            self.state.phase = "done"

    # ------------------------------------------------------------------ signals
    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):  # noqa: ANN001
            self.interrupts += 1
            self.signal_code = self.signal_code or signum
            if self.state.phase == PHASE_STARTING:
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
        ss = self.state
        if self.status is None:
            self.status, self.reason = SweepStatus.COMPLETED, self.ingest.budget_reached() or "done"
        interrupted = 128 + int(self.signal_code or signal.SIGINT)
        codes: dict[str, int] = {SweepStatus.COMPLETED: EXIT_COMPLETED, SweepStatus.FAILED: EXIT_FAILED}
        exit_code = codes.get(self.status, interrupted)
        if self.status == SweepStatus.COMPLETED and ss.all_failed():
            # a budget spent on nothing but errors is no result: its own exit code, and the first error
            first = next(r for r in ss.records if r["state"] == TaskState.FAILED)
            self.status, exit_code = SweepStatus.FAILED, EXIT_ALL_FAILED
            self.reason = f"all {len(ss.records)} evaluations failed; the first: {first.get('error') or TaskState.FAILED.value}"
        self.fleet.close(reset=ok_to_reset)
        self.status = str(self.status)  # the plain value in results, summary.json and df.attrs
        df, cols, files, counts, summary = ss.write_end(self.status, self.reason, exit_code,
                                                        time.monotonic() - ss.t0)
        if self.display_ is not None:
            self._update_stats_final()
            self.display.close(self.stats)
        print(ss.summary_text(self.status, self.reason, counts, files, self.from_python), flush=True)
        df.attrs.update(status=self.status, reason=self.reason, exit_code=exit_code, output=str(self.out),
                        best=summary["best"], columns=cols)
        return SweepResult(df, self.status, self.reason, exit_code, summary["best"], self.out, counts)

    def _update_stats_final(self) -> None:
        st, ss = self.stats, self.state
        st.done, st.failed = len(ss.records), ss.n_failed
        st.best = ss.best["value"] if ss.best else None
        st.front, st.hypervolume = ss.objectives.progress()
        st.elapsed = st.run_elapsed = time.monotonic() - ss.t0
        st.run_done = ss.run_done
        st.phase, st.running, st.queued, st.workers_alive = self.status or "done", 0, 0, 0

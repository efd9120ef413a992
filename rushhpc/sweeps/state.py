"""A sweep's output folder and what it has evaluated: the state a run writes and a resumed run reads.

`SweepState` holds the records (from the journal, then as results arrive), the best so far, the
networks used (``state.json``) and the elapsed time over runs; it writes ``config.yaml``,
``state.json``, ``best.json`` and, at the end, the tables and ``summary.json``. It starts nothing
and reads no Redis: the engine (`rushhpc.sweeps.engine`) feeds it.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from rushhpc.core.states import SweepStatus, TaskState
from rushhpc.sweeps.config import SweepConfig, SweepConfigError
from rushhpc.sweeps.front import Objectives
from rushhpc.sweeps.results import Journal, best_document, build_table, read_json, write_json, write_tables

if TYPE_CHECKING:
    import pandas as pd

EXIT_COMPLETED, EXIT_FAILED = 0, 1  # the CLI's convention: 1 = an unmet budget
EXIT_ALL_FAILED = 3  # the budget was spent and every evaluation failed (2 is an invalid config)
PHASE_STARTING = "starting"  # the sweep's phase until its workers run (Stats.phase): then SweepStatus.RUNNING
FIN_KEY, FAIL_KEY = TaskState.FINISHED.value, TaskState.FAILED.value  # summary.json's counts


class Stop(Exception):
    """Ends the run's loop with a status (completed | interrupted | failed) and its reason."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class SweepState:
    """The output folder of one sweep and the evaluations it holds.

    Example::

        st = SweepState(cfg, resume=False)
        st.check_output()   # refuses a folder that holds another sweep
        st.open()           # config.yaml, state.json, journal.jsonl (its records replayed)
    """

    def __init__(self, cfg: SweepConfig, resume: bool = False):
        self.cfg = cfg
        self.out = cfg.output
        self.resume = resume
        self.metric, self.direction = cfg.data["metric"], cfg.data["direction"]
        self.doc: dict[str, Any] = {}  # state.json
        self.prev_elapsed = 0.0
        self.t0 = time.monotonic()
        self.records: list[dict[str, Any]] = []
        self.evals: set[int] = set()
        self.seen_keys: set[str] = set()
        self.n_failed = 0
        self.n_cancelled = 0
        self.best: dict[str, Any] | None = None
        self.run_done = 0
        self.next_eval = 0  # eval id of the next model-based result
        self.phase: str = PHASE_STARTING  # then running, stopping, done; best.json follows the best once running
        self.journal_: Journal | None = None
        self.objectives = Objectives(cfg.data)  # several metrics: the front; constraints: feasibility

    @property
    def journal(self) -> Journal:
        assert self.journal_ is not None, "no output folder open"
        return self.journal_

    def check_output(self) -> None:
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
            now = json.loads(json.dumps(self.cfg.fingerprint()))
            for key in ("space", "strategy", "seed", "evaluations", "fidelity"):
                if now.get(key) != saved.get(key):
                    where = "budget.evaluations" if key == "evaluations" else key
                    raise SweepConfigError(
                        f"{src}: {where}: differs from the sweep being resumed in {out} (see its config.yaml): "
                        f"{saved.get(key)!r} there, {now.get(key)!r} here. A resumed sweep keeps its space, "
                        "strategy and seed (budget, workers and Redis may change)"
                    )
        self.doc = state
        self.prev_elapsed = float(state.get("elapsed") or 0.0)

    def open(self) -> None:
        """Write config.yaml and state.json, open the journal and replay its records."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(
            "# resolved by rushhpc sweep: overrides applied, defaults filled in, durations in seconds\n"
            + self.cfg.to_yaml()
        )
        self.doc.setdefault("version", 1)
        self.doc["name"] = self.cfg["name"]
        self.doc["fingerprint"] = self.cfg.fingerprint()
        self.doc.setdefault("networks", [])
        self.doc["status"] = SweepStatus.RUNNING.value
        self.write_state()
        self.journal_ = Journal(self.out / "journal.jsonl")
        for r in self.journal.records:
            self.remember(r)

    def add_network(self, network_id: str, address: str) -> None:
        self.doc["networks"].append({"id": network_id, "redis": address, "started_at": time.time()})
        self.write_state()

    def write_state(self) -> None:
        self.doc["elapsed"] = self.elapsed()
        self.doc["updated_at"] = time.time()
        write_json(self.out / "state.json", self.doc)

    def elapsed(self) -> float:
        """Seconds over every run of this sweep."""
        return self.prev_elapsed + (time.monotonic() - self.t0)

    def remember(self, r: dict[str, Any]) -> None:
        """Count one journal record (replayed or new) and keep the best."""
        self.records.append(r)
        self.evals.add(r["eval"])
        if r.get("key"):
            self.seen_keys.add(r["key"])
        if r["state"] == TaskState.FAILED:
            self.n_failed += 1
        v = r.get("value")
        if self.objectives.add(r) and self.journal_ is not None and self.phase != PHASE_STARTING:
            self.write_best()  # several metrics: best.json follows the front
        if r["state"] == TaskState.FINISHED and v is not None and self.objectives.feasible(r):
            b = self.best
            # asha: the best result at the highest rung reached (a low rung's value is not comparable)
            rung, brung = r.get("rung", 0), -1 if b is None else b.get("rung", 0)
            better = b is not None and rung == brung and (v < b["value"] if self.direction == "minimize" else v > b["value"])
            if b is None or rung > brung or better:
                self.best = r
                if self.journal_ is not None and self.phase != PHASE_STARTING:
                    self.write_best()
        self.next_eval = max(self.next_eval, r["eval"] + 1)

    def write_best(self) -> None:
        if self.objectives.multi:
            write_json(self.out / "best.json", self.objectives.front_document())
            return
        doc = best_document(self.best, self.metric, self.direction)
        if doc is not None:
            write_json(self.out / "best.json", doc)

    def checkpoint(self) -> None:
        self.write_state()
        df, cols = build_table(self.records, list(self.cfg.space), self.metric)
        self.objectives.add_feasible(df, cols, self.records)
        write_tables(self.out, df)
        self.objectives.write_pareto(self.out, df, cols)

    def all_failed(self) -> bool:
        return bool(self.records) and all(r["state"] == TaskState.FAILED for r in self.records)

    def write_end(self, status: str, reason: str, exit_code: int,
                  run_elapsed: float) -> tuple["pd.DataFrame", dict, list[str], dict[str, int], dict[str, Any]]:
        """The tables, best.json, summary.json and the final state.json; closes the journal."""
        df, cols = build_table(self.records, list(self.cfg.space), self.metric)
        self.objectives.add_feasible(df, cols, self.records)
        files = write_tables(self.out, df) + self.objectives.write_pareto(self.out, df, cols)
        if self.best is not None or self.objectives.multi:
            self.write_best()
            files.append("best.json")
        n_fin = sum(1 for r in self.records if r["state"] == TaskState.FINISHED)
        counts = {"evaluations": len(self.records), FIN_KEY: n_fin, FAIL_KEY: len(self.records) - n_fin,
                  "this_run": self.run_done, "cancelled": self.n_cancelled}  # points done again
        summary = {"status": str(status), "reason": reason, "exit_code": exit_code, "counts": counts,
                   "budget": self.cfg.data["budget"], "elapsed": run_elapsed, "elapsed_total": self.elapsed(),
                   "networks": self.doc.get("networks", []),
                   "best": best_document(self.best, self.metric, self.direction), "columns": cols}
        if self.objectives.multi:  # best.json's front, and the hypervolume with its reference point
            summary.update(best=self.objectives.front_document(), pareto=self.objectives.summary(self.records))
        elif self.objectives.constraints:
            summary["constraints"] = self.objectives.summary(self.records)
        if self.cfg.data.get("fidelity") is not None:  # asha, hyperband: the fidelity the evaluations' claims spent
            summary["fidelity_spent"] = sum(float(r.get("cost") or 0.0) for r in self.records)
        write_json(self.out / "summary.json", summary)
        self.doc["status"] = str(status)
        self.write_state()
        if self.journal_ is not None:
            self.journal.close()
        return df, cols, files, counts, summary

    def summary_text(self, status: str, reason: str, counts: dict[str, int], files: list[str],
                     from_python: bool) -> str:
        """The lines printed when the run ends."""
        el = time.monotonic() - self.t0
        lines = [f"sweep {self.cfg['name']}: {status} ({reason}) after {el:.1f} s"]
        rate = self.run_done / max(time.monotonic() - self.t0, 1e-9)
        lines.append(f"  {counts['evaluations']} evaluations: {counts[FIN_KEY]} finished, {counts[FAIL_KEY]} failed"
                     f" ({counts['this_run']} in this run, {rate:.2f}/s)")
        if self.objectives.multi:
            lines.append(self.objectives.text())
        elif self.best is not None:
            ps = ", ".join(f"{k}={v!r}" if not isinstance(v, float) else f"{k}={v:.6g}"
                           for k, v in (self.best.get("params") or {}).items())
            lines.append(f"  best {self.metric} = {self.best['value']:.6g} (eval {self.best['eval']}): {ps}")
        else:
            lines.append("  no finished evaluation")
        lines.append(f"  output: {self.out} ({', '.join(files + ['config.yaml', 'journal.jsonl'])})")
        if self.all_failed() and status == SweepStatus.FAILED and "max_failures" not in reason:
            # resuming would not evaluate them again: failed evaluations are final
            lines.append(f"  every evaluation failed: see the tracebacks in {self.out / 'journal.jsonl'}, fix the "
                         f"objective, then run again into a new output folder (output=...) or after removing {self.out}")
        elif status != SweepStatus.COMPLETED:
            how = ("rushhpc.sweep(..., resume=True)" if from_python
                   else f"rushhpc sweep {self.out / 'config.yaml'} --resume")
            lines.append(f"  continue with: {how}")
        return "\n".join(lines)

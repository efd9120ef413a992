"""Results arriving: a task row becomes a journal record (or is dropped), and the budget they spend.

A row already seen, a sampler's history or a point cancelled (its worker was stopped, the queue
emptied: not an evaluation, the point is queued again; `cancel_cause`) writes nothing. `Ingest.budget_reached`
says when the evaluations, the target or the walltime end the run.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Iterator

from rushhpc.core.states import CANCEL_FIELD, CancelCause, SweepStatus, TaskState
from rushhpc.errors import RushError
from rushhpc.sweeps.state import Stop

if TYPE_CHECKING:
    import pandas as pd

    from rushhpc.manager.rush import Rush
    from rushhpc.sweeps.scheduling import Schedule
    from rushhpc.sweeps.state import SweepState

# Tasks failed without being evaluated (the queue emptied, their worker killed): the point is done again.
# The store writes why in the task's CANCEL_FIELD (a CancelCause) in the same script that fails the task;
# the message is for people and never read here (rewording it changes nothing).
_CAUSES = frozenset(CancelCause.values())


def cancel_cause(row: dict[str, Any]) -> CancelCause | None:
    """Why a failed task was not an evaluation (its CANCEL_FIELD), or None when it was one.

    Example:
        >>> cancel_cause({"condition": "worker was killed", "cancel": "worker_killed"})
        <CancelCause.WORKER_KILLED: 'worker_killed'>
        >>> cancel_cause({"condition": "worker was killed"}) is None
        True
    """
    cause = row.get(CANCEL_FIELD)
    if isinstance(cause, str) and cause in _CAUSES:
        return CancelCause(cause)
    return None


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


def _state_of(row: dict[str, Any]) -> str:
    """A row without a state column (a plain fetch): failed when it has a condition."""
    return TaskState.FAILED.value if not _nan(row.get("condition")) else TaskState.FINISHED.value


def _rows(tbl: "pd.DataFrame") -> Iterator[dict[str, Any]]:
    if tbl is None or not len(tbl):
        return iter(())
    return iter(tbl.to_dict("records"))


class Ingest:
    """Reads new results from the network into the sweep's state.

    Example::

        ing = Ingest(state, schedule)
        n = ing.ingest(rush, wait=0.1)   # records written to the journal
        ing.budget_reached()             # "budget of 20 evaluations reached" or None
    """

    def __init__(self, state: SweepState, schedule: Schedule):
        self.state = state
        self.schedule = schedule
        self.cfg = state.cfg
        self.failed_seen = 0
        self.nodes: dict[str, str | None] = {}  # worker id -> the node it runs on (results' node column)
        self.fidelity_spent: str | None = None  # why budget.fidelity ends the run, once it does

    def _failed_record(self, row: dict[str, Any], ev: int | None, params: dict) -> dict[str, Any] | None:
        cond = row.get("condition")
        text = TaskState.FAILED.value if _nan(cond) else str(cond)
        if cancel_cause(row) is not None:
            self.state.n_cancelled += 1
            self.schedule.give_back(ev, self.state.evals)
            return None
        short, _, tb = text.partition("\n")
        return {"eval": ev, "state": TaskState.FAILED.value, "params": params, "outputs": None, "value": None,
                "error": short, "traceback": tb or None}

    def record(self, row: dict[str, Any], network: str, rush: Rush) -> dict[str, Any] | None:
        """A task row -> a journal record, or None (seen already, or cancelled, not evaluated)."""
        st = self.state
        key: Any = row.get("keys")
        if key in st.seen_keys:
            return None
        idx = self.schedule.take(key)
        raw_ev: Any = row.get("eval")
        ev = None if _nan(raw_ev) else int(raw_ev)
        if ev is not None and ev in st.evals:  # history pushed for the samplers, or read twice
            st.seen_keys.add(key)
            return None
        if ev is None and idx is not None:
            ev = idx
        state = row.get("state")
        if state is None:
            state = _state_of(row)
        raw_params: Any = row.get("params")
        params: dict = raw_params if isinstance(raw_params, dict) else {}
        st.seen_keys.add(key)
        if state == TaskState.FAILED:
            rec = self._failed_record(row, ev, params)
            if rec is None:
                return None
        else:
            outputs = row.get("outputs") if isinstance(row.get("outputs"), dict) else {}
            value: Any = row.get("value")
            rec = {"eval": ev, "state": TaskState.FINISHED.value, "params": params, "outputs": outputs,
                   "value": None if _nan(value) else float(value), "error": None, "traceback": None}
        if rec["eval"] is None:
            rec["eval"] = st.next_eval
            st.next_eval += 1
        started, finished = _ts(row.get("started_at")), _ts(row.get("finished_at"))
        runtime = row.get("runtime")
        if _nan(runtime):
            runtime = finished - started if started is not None and finished is not None else None
        attempts: Any = row.get("attempts")
        rec.update(worker_id=row.get("worker_id"), node=self._node(rush, row.get("worker_id")),
                   created_at=_ts(row.get("created_at")), started_at=started,
                   finished_at=finished, runtime=runtime, attempts=None if _nan(attempts) else int(attempts),
                   key=key, network=network)
        if not _nan(row.get("rung")):  # asha: the configuration, its fidelity and rung
            rec.update(config=row.get("config"), fidelity=row.get("fidelity"), rung=int(row["rung"]))
            if not _nan(row.get("bracket")):  # hyperband
                rec["bracket"] = int(row["bracket"])
            if not _nan(row.get("cost")):  # the fidelity its claim spent (budget.fidelity)
                rec["cost"] = float(row["cost"])
        st.remember(rec)
        return rec

    def _node(self, rush: Rush, worker_id: Any) -> str | None:
        """The node a worker ran on (its hash's ``node``, else its host name), read once per worker."""
        if not isinstance(worker_id, str) or not worker_id:
            return None
        import redis

        if worker_id not in self.nodes:
            try:
                node, host = (rush.worker_field([worker_id], f)[0] for f in ("node", "hostname"))
            except (RushError, redis.RedisError):
                return None  # asked again for its next evaluation
            self.nodes[worker_id] = node or host or None
        return self.nodes[worker_id]

    def ingest(self, rush: Rush, wait: float = 0.0) -> int:
        """New results (waiting up to ``wait`` s for one) into the journal; how many were written."""
        rows = list(_rows(rush.fetch_new_tasks(timeout=wait)))
        n_failed = rush.n_failed_tasks
        if n_failed != self.failed_seen:
            self.failed_seen = n_failed
            rows += [r for r in rush.task_rows(states=(TaskState.FAILED,)) if r.get("keys") not in self.state.seen_keys]
        for r in rows:
            r.setdefault("state", _state_of(r))
        new = [rec for rec in (self.record(r, rush.network_id, rush) for r in rows) if rec is not None]
        self.state.journal.append(new)
        self.state.run_done += len(new)
        self._check_fidelity(rush)
        return len(new)

    def _check_fidelity(self, rush: Rush) -> None:
        """budget.fidelity (asha, hyperband) is spent when a claim was refused for it and nothing runs any more."""
        limit = self.cfg.data["budget"].get("fidelity")
        if limit is None or self.fidelity_spent is not None:
            return
        spent, refused = rush.protocol.asha_budget()
        if refused and rush.n_running_tasks == 0:
            self.fidelity_spent = f"budget of {limit:g} fidelity reached ({spent:g} claimed; no claim fits in the rest)"

    def budget_reached(self) -> str | None:
        """Why the budget ends the run (evaluations, target, walltime), or None."""
        b, st, sch = self.cfg.data["budget"], self.state, self.schedule
        done = len(st.records)
        if sch.limit is not None and done >= sch.limit:
            if sch.design_mode and sch.design.size is not None and sch.limit == sch.design.size and (
                b["evaluations"] is None or b["evaluations"] > sch.design.size
            ):
                return f"all {sch.design.size} points of the {self.cfg.strategy} evaluated"
            return f"budget of {sch.limit} evaluations reached"
        if self.fidelity_spent is not None:
            return self.fidelity_spent
        if b["target"] is not None and st.best is not None:
            v = st.best["value"]
            if (v <= b["target"]) if st.direction == "minimize" else (v >= b["target"]):
                return f"target {st.metric} {'<=' if st.direction == 'minimize' else '>='} {b['target']:g} reached"
        if b["walltime"] is not None and time.monotonic() - st.t0 >= b["walltime"]:  # per run
            return f"walltime of {b['walltime']:g} s reached"
        return None

    def check_budget(self) -> None:
        """Raise `Stop` when the budget is reached or more than max_failures evaluations failed."""
        reason = self.budget_reached()
        if reason:
            raise Stop(SweepStatus.COMPLETED, reason)
        mf = self.cfg["max_failures"]
        if mf is not None and self.state.n_failed > mf:
            raise Stop(SweepStatus.FAILED, f"{self.state.n_failed} evaluations failed, more than max_failures={mf}")

"""What a sweep queues next: a design's indices (with a lookahead), or a sampler's history and budget.

A design strategy (points fixed by seed and index) is fed by the manager: `Schedule.top_up` keeps
``max(SWEEP_LOOKAHEAD_MIN, SWEEP_LOOKAHEAD_PER_WORKER x workers)`` points queued, the indices not
evaluated yet first (the holes a resumed or cancelled run left). A model-based strategy proposes in
its workers: the manager only pushes the history of a resumed sweep for their samplers.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rushhpc import defaults
from rushhpc.core.states import TaskState
from rushhpc.sweeps import strategies
from rushhpc.sweeps.config import SweepConfig

if TYPE_CHECKING:
    from rushhpc.manager.rush import Rush
    from rushhpc.sweeps.designs import Design
    from rushhpc.sweeps.state import SweepState


class Schedule:
    """The indices in flight and still to queue (designs), the evaluation limit, the worker loop.

    Example::

        sch = Schedule(cfg)
        sch.plan(state, rush)        # the limit; a resumed sweep's holes or history
        sch.top_up(rush, wanted=4, evals=state.evals)
    """

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg
        self.design_mode = strategies.is_design(cfg.strategy)
        self.design_: Design | None = None
        self.limit: int | None = None
        self.inflight: dict[str, int] = {}  # task key -> eval index (designs)
        self.holes: deque[int] = deque()
        self.next_index = 0
        self.eval_offset = 0  # model-based programs: eval = the task's place in the network + this

    @property
    def design(self) -> Design:
        assert self.design_ is not None, "not a design strategy"
        return self.design_

    def plan(self, state: SweepState, rush: Rush) -> None:
        """What this run evaluates: the indices not final yet (designs), or the samplers' history."""
        budget = self.cfg.data["budget"]
        if self.design_mode:
            from rushhpc.sweeps.space import Space

            self.design_ = strategies.make_design(Space(self.cfg.space), self.cfg.data["strategy"], self.cfg["seed"],
                                       budget["evaluations"])
            limits = [x for x in (budget["evaluations"], self.design.size) if x is not None]
            self.limit = min(limits) if limits else None
            evals = state.evals
            hwm = max(evals) + 1 if evals else 0
            self.holes = deque(i for i in range(hwm) if i not in evals and (self.limit is None or i < self.limit))
            self.next_index = hwm
            return
        self.limit = budget["evaluations"]
        if state.records:  # history for the workers' samplers, and their budget count
            fin = [r for r in state.records if r["state"] == TaskState.FINISHED]
            bad = [r for r in state.records if r["state"] != TaskState.FINISHED]
            if fin:
                keys = rush.push_finished_tasks(
                    [{"params": r["params"]} for r in fin],
                    [{"outputs": r["outputs"], "value": r["value"]} for r in fin],
                    xss_extra=[{"eval": r["eval"]} for r in fin],
                )
                state.seen_keys.update(keys)
            if bad:
                keys = rush.push_failed_tasks(
                    [{"params": r["params"]} for r in bad], xss_extra=[{"eval": r["eval"]} for r in bad],
                    conditions=[{"message": r.get("error") or TaskState.FAILED.value} for r in bad],
                )
                state.seen_keys.update(keys)
        resume = strategies.get(self.cfg.strategy).resume
        if state.records and resume is not None:  # asha: rankings, promotions, fidelity spent
            resume(self.cfg, state.records, rush)
        # a program's evaluation is numbered by its task's place in the network (see model_loop): the
        # numbers of a resumed sweep go on after its history's
        self.eval_offset = state.next_eval - rush.n_tasks

    def work_left(self, n_records: int) -> bool:
        if self.design_mode:
            return bool(self.inflight) or bool(self.holes) or self.limit is None or self.next_index < self.limit
        return self.limit is None or n_records < self.limit

    def next_indices(self, k: int, evals: set[int]) -> list[int]:
        out: list[int] = []
        while self.holes and len(out) < k:
            i = self.holes.popleft()
            if i not in evals and i not in out and i not in self.inflight.values():
                out.append(i)
        while len(out) < k and (self.limit is None or self.next_index < self.limit):
            if self.next_index not in evals:
                out.append(self.next_index)
            self.next_index += 1
        return out

    def top_up(self, rush: Rush, wanted: int, evals: set[int]) -> None:
        """Queue design points until the lookahead is full."""
        want = max(defaults.SWEEP_LOOKAHEAD_MIN, defaults.SWEEP_LOOKAHEAD_PER_WORKER * wanted) - len(self.inflight)
        if want <= 0:
            return
        idx = self.next_indices(want, evals)
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
        keys = rush.push_tasks([{"params": p} for p in points], xss_extra=[{"eval": i} for i in idx],
                               max_retries=self.cfg["retries"])
        self.inflight.update(zip(keys, idx))

    def take(self, key: Any) -> int | None:
        """The design index a task evaluated (None for a model-based task), no longer in flight."""
        return self.inflight.pop(key, None)

    def give_back(self, ev: int | None, evals: set[int]) -> None:
        """A cancelled point (its worker was stopped, the queue emptied) is queued again first."""
        if ev is not None and self.design_mode and ev not in evals:
            self.holes.appendleft(ev)

    def loop_args(self, out: Path) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The worker loop of this strategy and its arguments."""
        d = self.cfg.data
        objective = self.cfg.objective_fn or d["objective"]
        if self.cfg.objective_kind == "command":  # where its trials go and what its placeholders may name
            objective = {**d["objective"], "context": {
                "trials": str((out / "trials").resolve()), "base_dir": str(self.cfg.base_dir),
                "parameters": list(d["space"]), "seed": d["seed"], "timeout": d["timeout"],
                "eval_offset": self.eval_offset}}
        args = {"objective": objective, "pythonpath": d["pythonpath"], "metric": d["metric"],
                "timeout": d["timeout"], "retries": d["retries"]}
        if self.design_mode:
            from rushhpc.sweeps.worker import design_loop

            return design_loop, args
        from rushhpc.sweeps.worker import model_loop

        args.update(space=d["space"], strategy=d["strategy"], direction=d["direction"], seed=d["seed"],
                    max_evaluations=d["budget"]["evaluations"])
        strategy = strategies.get(self.cfg.strategy)
        if strategy.loop is not None:  # a loop of its own (asha): the fidelity, and the output folder for checkpoints
            args.update(fidelity={**d["fidelity"], "budget": d["budget"].get("fidelity")}, output=str(out.resolve()))
            return strategy.loop, args
        module = strategy.module
        if not module.startswith("rushhpc.sweeps.strategies."):  # registered outside rushhpc: the workers import it
            args["strategy_module"] = module
        if d.get("constraints"):  # their values on each trial, for the samplers that read them
            args["constraints"] = d["constraints"]
        return model_loop, args

"""The sweep's worker loops (run by ``python -m rushhpc worker`` processes).

Tasks in Redis, the same for both loops::

    xs       = {"params": {name: value, ...}}          # the point, under the user's names
    xs_extra = {"eval": i}                              # designs: the point's index
    ys       = {"outputs": {...}, "value": v, "runtime": s, "attempts": n}
    condition = {"message": "ValueError: ...\\n<traceback>"}   # failed tasks

The point sits under one key, ``params``, so a parameter may be called ``state``, ``keys``
or ``y`` without meeting rushhpc's own task columns or the outputs.

- `design_loop` (random, grid, sobol, halton, lhs): pop the next queued point, evaluate, report.
  The manager queues points by index, a few ahead of the workers, so a free worker takes its
  next point at once (no batch barrier) and the set of points never depends on timing.
- `model_loop` (tpe, optuna): the decentralized pattern of rush's model-based optimisation.
  Each worker reads the finished and running tasks from Redis (``task_rows``), brings its study
  up to date with them (`History`; running ones as pending trials: constant liar), proposes one point, creates its own
  running task with ``push_running_tasks`` (capped at the budget, atomically: never more
  tasks than ``budget.evaluations``), evaluates it and reports.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rushhpc.core.states import TaskState
from rushhpc.sweeps.objective import CommandObjective, evaluate, is_command, load_objective

if TYPE_CHECKING:
    from rushhpc.sweeps.space import Space
    from rushhpc.worker.api import RushWorker


def _report(rush: RushWorker, key: str, ok: bool, res: dict[str, Any]) -> None:
    if ok:
        rush.finish_tasks([key], [{"outputs": res["outputs"], "value": res["value"],
                                   "runtime": res["runtime"], "attempts": res["attempts"]}])
    else:
        rush.fail_tasks([key], [{"message": res["message"]}])


def design_loop(rush: RushWorker, objective: str | dict[str, Any] | Callable[..., Any], pythonpath: Sequence[str],
                metric: str, timeout: float | None, retries: int) -> None:
    """Evaluate queued points until the manager terminates this worker (a function, or a program per point)."""
    if is_command(objective):  # a program: it gets the point's eval number and its own timeout
        program = CommandObjective(objective, rush.worker_id)  # type: ignore[arg-type]
        while not rush.terminated:
            task = rush.pop_task(timeout=1)
            if task is None:
                continue
            eval_id = (task.get("xs_extra") or {}).get("eval", task["key"])
            ok, res = evaluate(program.bind(eval_id), task["xs"]["params"], metric, None, retries)
            _report(rush, task["key"], ok, res)
        return
    fn = load_objective(objective, pythonpath)  # type: ignore[arg-type]
    while not rush.terminated:
        task = rush.pop_task(timeout=1)
        if task is None:
            continue
        ok, res = evaluate(fn, task["xs"]["params"], metric, timeout, retries)
        _report(rush, task["key"], ok, res)


# ---------------------------------------------------------------------------- model-based
def distributions(space: dict[str, dict]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, p in space.items():
        if p["type"] == "float":
            out[name] = FloatDistribution(p["low"], p["high"], log=p["log"], step=p["step"])
        elif p["type"] == "int":
            out[name] = IntDistribution(p["low"], p["high"], log=p["log"], step=p["step"] or 1)
        elif p["type"] == "categorical":
            out[name] = CategoricalDistribution(p["choices"])
    return out


MISSING_VIOLATION = 1e100  # the constraint violation a sampler sees for a constrained output that is missing


def make_sampler(strategy: dict, seed: int, module: str = "", constrained: bool = False) -> Any:
    """The Optuna sampler of a model strategy (from the registry; ``module`` registers one defined elsewhere).

    ``constrained``: Optuna before 5 reads the trials' constraint values only when the sampler has a
    ``constraints_func``; one that returns them is passed (Optuna 5 reads them without it)."""
    from rushhpc.sweeps import strategies

    build = strategies.load(strategy["name"], module).sampler
    if build is None:
        raise ValueError(f"strategy {strategy['name']} is a design: its points come from the manager")
    if constrained and strategy["name"] in ("tpe", "optuna") and _optuna_major() < 5:
        options = {**(strategy.get("options") or {}), "constraints_func": _stored_constraints}
        strategy = {**strategy, "options": options}
    return build(strategy, seed)


def _optuna_major() -> int:
    import optuna

    return int(optuna.__version__.split(".")[0])


def _stored_constraints(trial: Any) -> Any:
    """The constraint values `History` stored on a trial (Optuna before 5)."""
    return trial.system_attrs.get("constraints", ())


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Ask the trial for each active parameter, in condition order (define-by-run)."""
    values: dict[str, Any] = {}
    for name in space.order:
        p = space.spec[name]
        if not space.is_active(name, values):
            continue
        t = p["type"]
        if t == "fixed":
            values[name] = p["value"]
        elif t == "float":
            values[name] = float(trial.suggest_float(name, p["low"], p["high"], log=p["log"], step=p["step"]))
        elif t == "int":
            values[name] = int(trial.suggest_int(name, p["low"], p["high"], step=p["step"] or 1, log=p["log"]))
        else:
            values[name] = trial.suggest_categorical(name, p["choices"])
    return {n: values[n] for n in space.names if n in values}


def worker_seed(seed: int, worker_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{worker_id}".encode()).hexdigest()[:8], 16)


class History:
    """A worker's sampler history: one in-memory Optuna study kept for the worker's life, in
    step with the network's running and finished tasks.

    Each proposal brings it up to date incrementally: a task seen for the first time becomes a
    trial (running, or complete with its value), a running trial whose task finished gets its
    value, one whose task is neither running nor finished any more (failed, or requeued after
    its worker was lost) becomes failed, so the constant liar forgets it. Nothing is rebuilt: a
    fresh study with every trial added again cost more than the sampler itself (about 30 ms at
    200 trials, 6-D).
    """

    def __init__(self, dists: dict[str, Any], direction: str | Sequence[str], sampler: Any,
                 metrics: Sequence[str] | None = None, constraints: dict[str, dict[str, float]] | None = None):
        import optuna

        self.dists = dists
        self.storage = optuna.storages.InMemoryStorage()
        if isinstance(direction, str):
            self.study = optuna.create_study(storage=self.storage, sampler=sampler,
                                             direction="maximize" if direction == "maximize" else "minimize")
        else:  # several metrics: one value per metric, read from the outputs (`values_of`)
            self.study = optuna.create_study(storage=self.storage, sampler=sampler, directions=list(direction))  # type: ignore[arg-type]
        self.metrics = list(metrics) if metrics is not None and not isinstance(direction, str) else None
        self.constraints = constraints or None
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.trials: dict[str, int] = {}  # task key -> trial id
        self.running: set[str] = set()  # task keys whose trial is running

    def _add(self, key: str, params: dict, state: Any, values: list[float] | None = None,
             attrs: dict[str, Any] | None = None) -> None:
        from optuna.trial import create_trial

        ps = {k: v for k, v in params.items() if k in self.dists}
        t = create_trial(params=ps, distributions={k: self.dists[k] for k in ps}, values=values, state=state,
                         system_attrs=attrs)
        self.trials[key] = self.storage.create_new_trial(self.study_id, template_trial=t)

    def values_of(self, row: dict[str, Any]) -> tuple[list[float] | None, dict[str, Any] | None]:
        """A finished row's values for the study (None: no usable value) and its constraint values,
        stored on the trial the way Optuna's samplers read them (``system_attrs["constraints"]``)."""
        from rushhpc.sweeps import pareto

        outputs = row.get("outputs") if isinstance(row.get("outputs"), dict) else {}
        if self.metrics is not None:
            values = pareto.metric_values(outputs, self.metrics)
        else:
            try:
                values = [float(row["value"])]
            except (KeyError, TypeError, ValueError):
                values = None
        if values is None or not self.constraints:
            return values, None
        # a constrained output missing (or not a number) is infeasible, and the samplers must learn that: hidden from
        # them, a sampler whose other trials are all infeasible keeps proposing where the output goes missing. Optuna
        # sums violations, so a large finite one (not inf: inf - inf is NaN) ranks it below every measured violation.
        viol = [MISSING_VIOLATION if v == float("inf") else v for v in pareto.violations(outputs, self.constraints)]
        return values, {"constraints": viol}

    def update(self, rows: Sequence[dict[str, Any]]) -> None:
        """Bring the study in step with these task rows (running and finished, as `task_rows` gives)."""
        from optuna.trial import TrialState

        seen: set[str] = set()
        for row in rows:
            params, key = row.get("params"), str(row.get("keys"))
            if not isinstance(params, dict):
                continue
            seen.add(key)
            known = key in self.trials
            if row.get("state") == TaskState.FINISHED:
                if known and key not in self.running:
                    continue  # complete (or failed) already
                values, attrs = self.values_of(row)
                if not known:
                    if values is not None:
                        self._add(key, params, TrialState.COMPLETE, values, attrs)
                    else:
                        self.trials[key] = -1  # no usable value: never a trial
                    continue
                self.running.discard(key)
                if values is None:
                    self.storage.set_trial_state_values(self.trials[key], TrialState.FAIL)
                else:
                    for k, v in (attrs or {}).items():  # before it completes: a finished trial is read-only
                        self.storage.set_trial_system_attr(self.trials[key], k, v)
                    self.storage.set_trial_state_values(self.trials[key], TrialState.COMPLETE, values)
            elif not known:
                self._add(key, params, TrialState.RUNNING)
                self.running.add(key)
        for key in [k for k in self.running if k not in seen]:  # failed, or back in the queue
            self.running.discard(key)
            self.storage.set_trial_state_values(self.trials[key], TrialState.FAIL)

    def ask(self) -> Any:
        """A new trial of the study (running), for `suggest`."""
        return self.study.ask()

    def own(self, key: str, trial: Any) -> None:
        """The task this worker created for ``trial``: its trial already, not a new one."""
        self.trials[key] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.running.add(key)

    def drop(self, trial: Any) -> None:
        """A trial whose task was not created (the budget was full): failed, not pending."""
        from optuna.trial import TrialState

        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.storage.set_trial_state_values(tid, TrialState.FAIL)


def model_loop(rush: RushWorker, objective: str | dict[str, Any] | Callable[..., Any], pythonpath: Sequence[str],
               metric: str | list[str], timeout: float | None, retries: int, space: dict[str, dict], strategy: dict,
               direction: str | list[str], seed: int, max_evaluations: int | None, strategy_module: str = "",
               constraints: dict[str, dict[str, float]] | None = None) -> None:
    """Propose, evaluate and report until terminated or ``max_evaluations`` tasks exist. Several metrics
    (lists): a multi-objective study; ``constraints``: their values on each trial, for the samplers that read them."""
    import optuna

    from rushhpc.sweeps.space import Space  # noqa: F811 - at run time too

    program = CommandObjective(objective, rush.worker_id) if is_command(objective) else None  # type: ignore[arg-type]
    fn = None if program is not None else load_objective(objective, pythonpath)  # type: ignore[arg-type]
    eval_offset = int(objective.get("context", {}).get("eval_offset", 0)) if program is not None else 0  # type: ignore[union-attr]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sp = Space(space)
    sampler = make_sampler(strategy, worker_seed(seed, rush.worker_id), strategy_module, constrained=bool(constraints))
    history = History(distributions(space), direction, sampler, [metric] if isinstance(metric, str) else metric, constraints)

    while not rush.terminated:
        if max_evaluations is not None and rush.n_tasks >= max_evaluations:
            return
        # plain rows, one atomic read (no pandas in the worker)
        history.update(rush.task_rows(states=(TaskState.RUNNING, TaskState.FINISHED)))
        trial = history.ask()
        params = suggest(trial, sp)
        # the budget's slot is taken atomically with the task's creation: workers that proposed
        # at the same instant never create more than max_evaluations tasks between them
        if program is None:
            keys = rush.push_running_tasks([{"params": params}], max_tasks=max_evaluations)
            if not keys:
                history.drop(trial)
                return  # another worker took the last slot
            history.own(keys[0], trial)
            ok, res = evaluate(fn, params, metric, timeout, retries)  # type: ignore[arg-type]
        else:
            # A program's trial folder and {eval} need the evaluation's number before it runs: the task is
            # created only if no other task appeared since n was read (max_tasks=n+1, atomic), so it is task
            # number n; otherwise another worker got there first, and this one proposes again.
            n = rush.n_tasks
            if max_evaluations is not None and n >= max_evaluations:
                history.drop(trial)
                return
            keys = rush.push_running_tasks([{"params": params}], xss_extra=[{"eval": n + eval_offset}], max_tasks=n + 1)
            if not keys:
                history.drop(trial)
                continue
            history.own(keys[0], trial)
            ok, res = evaluate(program.bind(n + eval_offset), params, metric, None, retries)
        _report(rush, keys[0], ok, res)

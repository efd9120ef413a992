"""``asha``: asynchronous successive halving (Li et al., MLSys 2020), decided by each free worker.

Options: ``eta`` (an integer >= 2, default 3), ``sampler`` (``random``, the default, or ``tpe``: _asha_tpe.py).
The sweep file's ``fidelity: {name, min, max}`` names the objective's argument that receives the fidelity; the rungs are
``min, min*eta, ...`` below ``max``, then ``max`` (`rungs`).

A free worker runs one Redis script (``asha_claim.lua``): highest rung first, a configuration in the top
``floor(n/eta)`` of its rung's ``n`` finished results that was not promoted from it yet is promoted (it is
evaluated at the next rung); else a new random configuration starts at the lowest rung. The choice and the
claim are that one step, so two workers never promote the same configuration, and the evaluation's
``started_at`` is the claim's server time. A result enters its rung's sorted set in the script that
finishes it (``asha_finish.lua``). A promoted evaluation whose worker is lost fails like any task a worker
created (it is not requeued: a failed evaluation in the results) and its configuration may be promoted from that
rung again, at most ``retries`` times, if it is still in the top at a later claim; one whose objective failed is
not promoted again. ``budget.fidelity`` is decided in the same claim (`rushhpc.store.lua` asha_claim.lua).
A resumed sweep's network gets the state from the journal (`resume_state`). ``hyperband`` (hyperband.py) is this
loop with a bracket drawn per claim (`bracket_weights`).

The objective receives the fidelity under its name (``epochs=9``) and, when its signature takes it,
``checkpoint_dir``: ``OUTPUT/checkpoints/<config>/``, the same folder at every rung. A program objective gets
them as the placeholders ``{fidelity}`` (or ``{epochs}``) and ``{checkpoint_dir}``; its trial folder is
``OUTPUT/trials/<config>-r<rung>/``.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rushhpc import defaults
from rushhpc.core import codec
from rushhpc.core.states import TaskState, WorkerState
from rushhpc.sweeps.strategies import MODEL, Checks, Strategy, register

if TYPE_CHECKING:
    from rushhpc.worker.api import RushWorker

SAMPLERS = ("random", "tpe")


def rungs(low: int, high: int, eta: int) -> list[int]:
    """The fidelity of each rung: ``low * eta**k`` while below ``high``, then ``high``.

    Example:
        >>> rungs(1, 27, 3)
        [1, 3, 9, 27]
        >>> rungs(2, 10, 2)
        [2, 4, 8, 10]
    """
    if eta < 2 or low < 1 or high < low:
        raise ValueError(f"rungs need 1 <= min <= max and eta >= 2, got min={low} max={high} eta={eta}")
    out = []
    f = low
    while f < high:
        out.append(f)
        f *= eta
    out.append(high)
    return out


def options(c: Checks, raw: dict[str, Any]) -> dict[str, Any]:
    eta = c.int_("strategy.eta", raw.get("eta", defaults.SWEEP_ASHA_ETA), minimum=2)
    sampler = c.string("strategy.sampler", raw.get("sampler", "random"))
    if sampler not in SAMPLERS:
        raise c.fail("strategy.sampler", f"one of {', '.join(SAMPLERS)}", sampler)
    if sampler == "tpe" and importlib.util.find_spec("optuna") is None:
        from rushhpc.sweeps.strategies._optuna import OPTUNA_HINT

        raise c.fail("strategy.sampler", f"tpe needs optuna: {OPTUNA_HINT}", sampler)
    return {"eta": eta, "sampler": sampler}


def _score(value: Any, direction: str) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(v):
        return None
    return -v if direction == "maximize" else v


def _bind(fn: Callable[..., Any], fidelity_name: str, fidelity: Any, checkpoint: Path | None) -> Callable[..., Any]:
    def call(**params: Any) -> Any:
        extra: dict[str, Any] = {fidelity_name: fidelity}
        if checkpoint is not None:
            checkpoint.mkdir(parents=True, exist_ok=True)
            extra["checkpoint_dir"] = str(checkpoint)
        return fn(**params, **extra)

    return call


def bracket_weights(n_rungs: int, eta: int) -> list[float]:
    """Hyperband's share of new configurations per bracket (bracket b starts at rung b): proportional to the
    configurations synchronous Hyperband gives it, ``(smax+1)/(s+1) * eta**s`` with ``s = smax - b`` halvings.

    Example:
        >>> [round(w, 3) for w in bracket_weights(4, 3)]
        [0.551, 0.245, 0.122, 0.082]
    """
    smax = n_rungs - 1
    raw = [(smax + 1) / (smax - b + 1) * eta ** (smax - b) for b in range(n_rungs)]
    return [w / sum(raw) for w in raw]


class _Objective:
    """The objective of a fidelity loop: a function or a program, bound to one evaluation's fidelity and folder."""

    def __init__(self, objective: Any, pythonpath: Sequence[str], fidelity_name: str, worker_id: str, output: Path):
        from rushhpc.sweeps.objective import CommandObjective, is_command, load_objective

        self.name, self.out = fidelity_name, output
        self.program = CommandObjective(objective, worker_id) if is_command(objective) else None
        if self.program is not None:
            from rushhpc.worker.command import placeholders

            self.resumes = "checkpoint_dir" in placeholders(self.program.spec)
        else:
            self.fn = load_objective(objective, pythonpath)
            self.resumes = "checkpoint_dir" in inspect.signature(self.fn).parameters

    def bind(self, config: str, rung: int, fidelity: Any) -> Callable[..., Any]:
        ckpt = self.out / "checkpoints" / config
        if self.program is None:
            return _bind(self.fn, self.name, fidelity, ckpt if self.resumes else None)
        if self.resumes:
            ckpt.mkdir(parents=True, exist_ok=True)
        # a program's trial folder and {eval}: <config>-r<rung>, one per configuration and rung
        return self.program.bind(f"{config}-r{rung}", {"fidelity": fidelity, self.name: fidelity,
                                                      "checkpoint_dir": str(ckpt)})


def asha_loop(rush: RushWorker, objective: str | dict[str, Any] | Callable[..., Any], pythonpath: Sequence[str],
              metric: str, timeout: float | None, retries: int, space: dict[str, dict], strategy: dict, direction: str,
              seed: int, max_evaluations: int | None, fidelity: dict[str, Any], output: str) -> None:
    """Claim (promote or start), evaluate at the rung's fidelity, finish and rank; until terminated or the budget's
    tasks exist (or the fidelity budget refuses a claim). Hyperband (``strategy.name: hyperband``): each claim is
    made in a bracket drawn with `bracket_weights`."""
    import numpy as np

    from rushhpc.sweeps.objective import evaluate
    from rushhpc.sweeps.space import Space

    obj = _Objective(objective, pythonpath, fidelity["name"], rush.worker_id, Path(output))
    sp = Space(space)
    fids = rungs(fidelity["min"], fidelity["max"], strategy["eta"])
    rng = np.random.default_rng([seed, int(uuid.uuid5(uuid.NAMESPACE_OID, rush.worker_id).int % 2**32)])
    weights = bracket_weights(len(fids), strategy["eta"]) if strategy.get("name") == "hyperband" else None
    # the ASHA steps are the sweep's, not calls of the worker API (which stays at what every loop may call):
    # they go through a network view of the worker's own network, opened once per worker
    from rushhpc.network.view import Network

    protocol = Network.open(rush.network_id, rush.config).protocol
    tpe = None
    if strategy.get("sampler") == "tpe":
        from rushhpc.sweeps.strategies._asha_tpe import TpeProposer

        tpe = TpeProposer(space, sp, protocol)
    while not rush.terminated:
        config = "c" + uuid.uuid4().hex[:12]
        bracket = None if weights is None else int(rng.choice(len(weights), p=weights))
        low = bracket or 0
        params = sp.from_unit(rng.random(sp.n_dims)) if tpe is None else tpe.propose(rng, range(low, len(fids)), bracket)
        xs = codec.encode_dict({"params": params}, "xs")
        reply = protocol.asha_claim(rush.worker_id, max_evaluations, strategy["eta"], fids[low:],
                                    (uuid.uuid4().hex, config, xs), uuid.uuid4().hex, retries=retries,
                                    max_fidelity=fidelity.get("budget"), incremental=obj.resumes, rung_offset=low,
                                    bracket=bracket)
        if reply[0] != WorkerState.RUNNING or reply[1] == "1" or reply[2] != "1":
            return  # stopped, asked to terminate, or the budget's tasks (or fidelity) are spent
        key, params = reply[3], codec.decode(reply[4])["params"]
        extra = codec.decode(reply[5])
        rung = int(extra["rung"])
        fn = obj.bind(extra["config"], rung, extra["fidelity"])
        ok, res = evaluate(fn, params, metric, None if obj.program is not None else timeout, retries)
        if ok:
            ys = codec.encode_dict({"outputs": res["outputs"], "value": res["value"], "runtime": res["runtime"],
                                    "attempts": res["attempts"]}, "ys")
            protocol.asha_finish(rush.worker_id, key, ys, extra["config"], rung, _score(res["value"], direction),
                                 bracket=bracket)
        else:  # failed in its objective: final, and (asha_done) never promoted again
            protocol.asha_finish(rush.worker_id, key, codec.condition({"message": res["message"]}), extra["config"],
                                 rung, None, bracket=bracket, state=TaskState.FAILED)


def resume_state(cfg: Any, records: Sequence[dict[str, Any]], rush: Any) -> None:
    """A resumed sweep's ASHA (or Hyperband) state in its fresh network, from the journal, before workers start:
    each finished evaluation in its rung's ranking, each configuration's parameters, a configuration with an
    evaluation (finished or failed) at a rung above its bracket's lowest counted as promoted from the rung below, and
    the fidelity those evaluations cost. (The evaluation count is the history `Schedule.plan` pushes.)"""
    direction = cfg.data["direction"]
    ranked: list[tuple[int | None, int, str, float]] = []
    configs: dict[str, str] = {}
    promoted: list[str] = []
    spent = 0.0
    for r in records:
        if r.get("config") is None or r.get("rung") is None:
            continue
        config, rung, bracket = str(r["config"]), int(r["rung"]), r.get("bracket")
        bracket = None if bracket is None else int(bracket)
        configs[config] = codec.encode_dict({"params": r.get("params") or {}}, "xs")
        spent += float(r.get("cost") or 0.0)
        if rung > (bracket or 0):
            promoted.append(f"{config}:{rung - 1}")
        score = _score(r.get("value"), direction) if r["state"] == TaskState.FINISHED else None
        if score is not None:
            ranked.append((bracket, rung, config, score))
    rush.protocol.asha_seed(ranked, configs, promoted, spent)


def _no_sampler(strategy: dict, seed: int) -> Any:
    raise ValueError("asha proposes in its own worker loop (asha_loop), not through an Optuna sampler")


STRATEGY = register(Strategy("asha", MODEL, keys=("eta", "sampler"), options=options, sampler=_no_sampler,
                             loop=asha_loop, needs_fidelity=True, resume=resume_state, module=__name__))

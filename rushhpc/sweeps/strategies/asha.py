"""``asha``: asynchronous successive halving (Li et al., MLSys 2020), decided by each free worker.

Options: ``eta`` (an integer >= 2, default 3), ``sampler`` (``random`` only for now). The sweep file's
``fidelity: {name, min, max}`` names the objective's argument that receives the fidelity; the rungs are
``min, min*eta, ...`` below ``max``, then ``max`` (`rungs`).

A free worker runs one Redis script (``asha_claim.lua``): highest rung first, a configuration in the top
``floor(n/eta)`` of its rung's ``n`` finished results that was not promoted from it yet is promoted (it is
evaluated at the next rung); else a new random configuration starts at the lowest rung. The choice and the
claim are that one step, so two workers never promote the same configuration, and the evaluation's
``started_at`` is the claim's server time. A result enters its rung's sorted set in the script that
finishes it (``asha_finish.lua``). A promoted evaluation whose worker is lost fails like any task a worker
created (it is not requeued) and its configuration is not promoted from that rung again.

The objective receives the fidelity under its name (``epochs=9``) and, when its signature takes it,
``checkpoint_dir``: ``OUTPUT/checkpoints/<config>/``, the same folder at every rung.
"""

from __future__ import annotations

import inspect
import math
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rushhpc import defaults
from rushhpc.core import codec
from rushhpc.core.states import WorkerState
from rushhpc.sweeps.strategies import MODEL, Checks, Strategy, register

if TYPE_CHECKING:
    from rushhpc.worker.api import RushWorker

SAMPLERS = ("random",)


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
        raise c.fail("strategy.sampler", f"one of {', '.join(SAMPLERS)} (asha proposes new configurations at random "
                     "for now)", sampler)
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


def asha_loop(rush: RushWorker, objective: str | Callable[..., Any], pythonpath: Sequence[str], metric: str,
              timeout: float | None, retries: int, space: dict[str, dict], strategy: dict, direction: str,
              seed: int, max_evaluations: int | None, fidelity: dict[str, Any], output: str) -> None:
    """Claim (promote or start), evaluate at the rung's fidelity, finish and rank; until terminated or the budget's
    tasks exist."""
    import numpy as np

    from rushhpc.sweeps.objective import evaluate, load_objective
    from rushhpc.sweeps.space import Space

    fn = load_objective(objective, pythonpath)
    takes_checkpoint = "checkpoint_dir" in inspect.signature(fn).parameters
    sp = Space(space)
    fids = rungs(fidelity["min"], fidelity["max"], strategy["eta"])
    rng = np.random.default_rng([seed, int(uuid.uuid5(uuid.NAMESPACE_OID, rush.worker_id).int % 2**32)])
    # the ASHA steps are the sweep's, not calls of the worker API (which stays at what every loop may call):
    # they go through a network view of the worker's own network, opened once per worker
    from rushhpc.network.view import Network

    protocol = Network.open(rush.network_id, rush.config).protocol
    out = Path(output)
    while not rush.terminated:
        config = "c" + uuid.uuid4().hex[:12]
        xs = codec.encode_dict({"params": sp.from_unit(rng.random(sp.n_dims))}, "xs")
        reply = protocol.asha_claim(rush.worker_id, max_evaluations, strategy["eta"], fids,
                                    (uuid.uuid4().hex, config, xs), uuid.uuid4().hex)
        if reply[0] != WorkerState.RUNNING or reply[1] == "1" or reply[2] != "1":
            return  # stopped, asked to terminate, or the budget's tasks exist
        key, params = reply[3], codec.decode(reply[4])["params"]
        extra = codec.decode(reply[5])
        ckpt = out / "checkpoints" / extra["config"] if takes_checkpoint else None
        ok, res = evaluate(_bind(fn, fidelity["name"], extra["fidelity"], ckpt), params, metric, timeout, retries)
        if ok:
            ys = codec.encode_dict({"outputs": res["outputs"], "value": res["value"], "runtime": res["runtime"],
                                    "attempts": res["attempts"]}, "ys")
            protocol.asha_finish(rush.worker_id, key, ys, extra["config"], int(extra["rung"]),
                                 _score(res["value"], direction))
        else:
            rush.fail_tasks([key], [{"message": res["message"]}])


def _no_sampler(strategy: dict, seed: int) -> Any:
    raise ValueError("asha proposes in its own worker loop (asha_loop), not through an Optuna sampler")


STRATEGY = register(Strategy("asha", MODEL, keys=("eta", "sampler"), options=options, sampler=_no_sampler,
                             loop=asha_loop, needs_fidelity=True, module=__name__))

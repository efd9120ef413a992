"""``optuna``: any sampler class of ``optuna.samplers`` by name (``sampler: GPSampler``) in each worker; needs optuna.

Options: ``sampler`` (required), ``options`` (the sampler's arguments; not seed).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from rushhpc.sweeps.strategies import MODEL, Checks, Strategy, _optuna, register

# Samplers of optuna.samplers that import a package of their own only when they first sample (Optuna 5.1)
NEEDS = {"GPSampler": ("torch", "pip install torch")}


def options(c: Checks, raw: dict[str, Any]) -> dict[str, Any]:
    return {"sampler": c.string("strategy.sampler", raw.get("sampler")),
            "options": _optuna.options_mapping(c, raw, "sampler arguments")}


def check(c: Checks, strategy: dict[str, Any], space: dict[str, dict]) -> None:
    if "seed" in strategy["options"]:
        raise c.fail("strategy.options.seed", "set the top-level seed instead")
    import optuna

    sampler = getattr(optuna.samplers, strategy["sampler"], None)
    if not (isinstance(sampler, type) and issubclass(sampler, optuna.samplers.BaseSampler)):
        raise c.fail("strategy.sampler", "expected the name of a sampler in optuna.samplers (e.g. "
                     "TPESampler, GPSampler, CmaEsSampler)", strategy["sampler"])
    need = NEEDS.get(strategy["name"] if strategy["name"] != "optuna" else strategy["sampler"])
    if need is not None and importlib.util.find_spec(need[0]) is None:
        # Optuna imports it only when the sampler first samples: in every worker, after the sweep started
        raise c.fail("strategy.sampler", f"a sampler whose package is installed: {strategy['sampler']} needs "
                     f"{need[0]} ({need[1]}), or choose another sampler", strategy["sampler"])
    _optuna.check_options(c, strategy)


def sampler(strategy: dict[str, Any], seed: int) -> Any:
    return _optuna.build(_optuna.sampler_class(strategy), dict(strategy.get("options") or {}), seed)


STRATEGY = register(Strategy("optuna", MODEL, keys=("sampler", "options"), options=options, requires="optuna",
                             install=_optuna.OPTUNA_HINT, check=check, sampler=sampler, module=__name__))

"""What the Optuna strategies (``tpe``, ``optuna``) share: the dependency, the options' checks, building a sampler."""

from __future__ import annotations

import inspect
from typing import Any

from rushhpc.sweeps.strategies import Checks

OPTUNA_HINT = "pip install 'rushhpc[tpe]'"


def options_mapping(c: Checks, raw: dict[str, Any], what: str) -> dict[str, Any]:
    opts = raw.get("options", {}) or {}
    if not isinstance(opts, dict):
        raise c.fail("strategy.options", f"expected a mapping of {what}", opts)
    return opts


def sampler_class(strategy: dict[str, Any]) -> Any:
    import optuna

    if strategy["name"] == "tpe":
        return optuna.samplers.TPESampler
    return getattr(optuna.samplers, strategy["sampler"])


def check_options(c: Checks, strategy: dict[str, Any]) -> None:
    """The options name arguments of the sampler class; the seed is the sweep's."""
    if "seed" in strategy["options"]:
        raise c.fail("strategy.options.seed", "set the top-level seed instead")
    if not strategy["options"]:
        return  # importing optuna takes a while: only when there is something to check
    cls = sampler_class(strategy)
    try:
        params: Any = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    for k in strategy["options"]:
        if params and k not in params:
            raise c.fail(f"strategy.options.{k}", f"{cls.__name__} takes no argument {k!r}")


def build(cls: Any, options: dict[str, Any], seed: int) -> Any:
    """``cls(**options)``, with ``seed`` when the sampler takes one."""
    try:
        if "seed" in inspect.signature(cls).parameters:
            options["seed"] = seed
    except (TypeError, ValueError):
        pass
    return cls(**options)

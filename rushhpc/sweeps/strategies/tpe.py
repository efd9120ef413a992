"""``tpe``: Optuna's TPESampler in each worker (constant liar), proposing from the tasks in Redis; needs optuna.

Options: ``n_startup_trials`` (default 10), ``options`` (more TPESampler arguments; not seed).
"""

from __future__ import annotations

from typing import Any

from rushhpc import defaults
from rushhpc.sweeps.strategies import MODEL, Checks, Strategy, _optuna, register


def options(c: Checks, raw: dict[str, Any]) -> dict[str, Any]:
    return {"n_startup_trials": c.int_("strategy.n_startup_trials",
                                       raw.get("n_startup_trials", defaults.SWEEP_TPE_STARTUP_TRIALS), minimum=0),
            "options": _optuna.options_mapping(c, raw, "TPESampler arguments")}


def check(c: Checks, strategy: dict[str, Any], space: dict[str, dict]) -> None:
    _optuna.check_options(c, strategy)


def sampler(strategy: dict[str, Any], seed: int) -> Any:
    opts = {"n_startup_trials": strategy.get("n_startup_trials", defaults.SWEEP_TPE_STARTUP_TRIALS),
            "constant_liar": True}
    opts.update(strategy.get("options") or {})
    return _optuna.build(_optuna.sampler_class(strategy), opts, seed)


STRATEGY = register(Strategy("tpe", MODEL, keys=("n_startup_trials", "options"), options=options, requires="optuna",
                             install=_optuna.OPTUNA_HINT, check=check, sampler=sampler, module=__name__))

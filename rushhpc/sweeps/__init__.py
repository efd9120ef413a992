"""YAML sweeps on top of rushhpc: ``rushhpc sweep CONFIG.yaml [key=value ...]`` and `sweep`.

The package builds on rushhpc's public API only (``rsh``, ``Rush``, ``RushWorker``). It is
imported by worker processes too (the worker loops live in `rushhpc.sweeps.worker`), so this
module imports nothing heavy: the engine, scipy, optuna and rich load on first use.

Example:
    >>> import rushhpc
    >>> df = rushhpc.sweep("examples/sweep_branin.yaml", **{"budget.evaluations": 50})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SweepConfigError", "SweepLockedError", "load_config", "sweep"]


def __getattr__(name: str) -> Any:
    if name in ("SweepConfigError", "load_config"):
        from rushhpc.sweeps import config

        return getattr(config, name)
    if name == "SweepLockedError":
        from rushhpc.sweeps import lock

        return lock.SweepLockedError
    raise AttributeError(f"module 'rushhpc.sweeps' has no attribute {name!r}")


def sweep(config: Any, *, resume: bool = False, **overrides: Any) -> "pd.DataFrame":
    """Run a sweep from a YAML file (path) or a dict, as ``rushhpc sweep`` does; return its results table.

    ``overrides`` set fields by dotted path: pass ``**{"budget.evaluations": 30}`` or, as
    keywords, ``budget__evaluations=30`` (``__`` stands for ``.``). ``resume=True`` continues
    the sweep whose output folder the config names. The table has the columns of
    ``results.csv``; ``df.attrs`` holds ``status``, ``exit_code``, ``best`` and ``output``.

    Example:
        >>> df = sweep({"objective": "mymod:f", "space": {"x": {"type": "float", "low": 0, "high": 1}},
        ...             "budget": {"evaluations": 20}}, workers__n=2)
        >>> df.sort_values("y").head()
    """
    from rushhpc.sweeps.engine import run_sweep

    items = [(k.replace("__", "."), v) for k, v in overrides.items()]
    return run_sweep(config, overrides=items, resume=resume, from_python=True).table

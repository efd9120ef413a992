"""The sweep file: read it, apply ``key=value`` overrides, validate every key, normalise.

Everything is checked before anything starts (no Redis, no worker, no output folder). An
error is one `SweepConfigError` naming the file, the key path and what was expected::

    sweep.yaml: budget.evaluations: expected a positive integer, got -3

The normalised config (`SweepConfig.data`) is itself a valid sweep file: it is what
``config.yaml`` in the output folder holds (absolute paths, durations in seconds, every
default filled in), so ``rushhpc sweep OUTPUT/config.yaml --resume`` works from anywhere.

- `schema`: the keys, their types and defaults, `SweepConfig`;
- `overrides`: ``key=value`` on the command line (``**{"a.b": v}`` in Python);
- `checker`, `params`, `validate`: the checks, the space, every other section;
- `load`: `load_config` and the checks outside the file (objective, program, GPUs).

Example:
    >>> from rushhpc.sweeps.config import load_config
    >>> load_config("examples/sweep_branin.yaml", ["workers.n=2"])["workers"]["n"]
    2
"""

from __future__ import annotations

from rushhpc.core.durations import parse_duration
from rushhpc.sweeps.config.load import check_objective_importable, load_config
from rushhpc.sweeps.config.overrides import Override, apply_overrides, as_overrides, parse_override
from rushhpc.sweeps.config.schema import SweepConfig, SweepConfigError

__all__ = ["Override", "SweepConfig", "SweepConfigError", "apply_overrides", "as_overrides", "check_objective_importable",
           "load_config", "parse_duration", "parse_override"]

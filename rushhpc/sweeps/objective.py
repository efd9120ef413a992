"""Loading and calling the objective (in the manager to validate it, in workers to run it).

Imports nothing heavy: worker processes load this module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence


class ObjectiveImportError(Exception):
    """The objective cannot be imported (message is one line)."""


# One class for a function's and a program's timeout: the error column reads "EvaluationTimeout: ..." for both.
from rushhpc.worker.command import (  # noqa: E402
    CommandSpec,
    EvaluationTimeout,
    InvalidResult,
    ProgramFailed,
    TrialContext,
    run_command,
)

# A program's own failure is its exit code and stderr, not a Python traceback of the worker.
_NO_TRACEBACK = (EvaluationTimeout, InvalidResult, ProgramFailed)


def _add_path(pythonpath: Sequence[str]) -> None:
    for p in reversed(list(pythonpath or ())):
        if p not in sys.path:
            sys.path.insert(0, p)


def load_objective(spec: str | Callable[..., Any], pythonpath: Sequence[str] = ()) -> Callable[..., Any]:
    """``package.module:function`` or ``/abs/path/file.py:function`` -> the function (a function
    passed from Python is returned as it is).

    A file is imported as a module of its own (its folder on ``sys.path``, so it can import
    its neighbours), under a name derived from its path, once per process.
    """
    _add_path(pythonpath)
    if callable(spec):
        return spec
    target, _, name = spec.rpartition(":")
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target)
            if not path.is_file():
                raise ObjectiveImportError(f"cannot import {spec}: no file {path}")
            modname = f"_rushhpc_objective_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            module = sys.modules.get(modname)
            if module is None:
                if str(path.parent) not in sys.path:
                    sys.path.insert(0, str(path.parent))
                mspec = importlib.util.spec_from_file_location(modname, path)
                if mspec is None or mspec.loader is None:
                    raise ObjectiveImportError(f"cannot import {spec}: not a Python file")
                module = importlib.util.module_from_spec(mspec)
                sys.modules[modname] = module
                try:
                    mspec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[modname]
                    raise
        else:
            module = importlib.import_module(target)
    except ObjectiveImportError:
        raise
    except SyntaxError as e:
        raise ObjectiveImportError(f"cannot import {spec}: SyntaxError: {e.msg} ({e.filename}, line {e.lineno})") from None
    except Exception as e:  # noqa: BLE001 - whatever the module raises at import
        raise ObjectiveImportError(f"cannot import {spec}: {type(e).__name__}: {' '.join(str(e).split())}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise ObjectiveImportError(f"cannot import {spec}: {target} has no attribute {name!r}")
    if not callable(fn):
        raise ObjectiveImportError(f"cannot import {spec}: {name} is a {type(fn).__name__}, not a function")
    return fn


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python values; other non-JSON values -> their str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return _plain(item())
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (int, float)):  # Fraction, Decimal-likes that subclass numbers
        return float(value)
    return str(value)


def normalise_outputs(result: Any, metric: str | Sequence[str]) -> tuple[dict[str, Any], float | None]:
    """The objective's return value -> (outputs, metric value). A number is output ``metric``.
    Raises ValueError when the metric is missing or not a finite number. Several metrics (a list):
    the value is None, and the result must be a dict holding every metric, each a finite number."""
    if not isinstance(metric, str):
        return _several_outputs(result, list(metric)), None
    if isinstance(result, dict):
        outputs = {str(k): _plain(v) for k, v in result.items()}
        if metric not in outputs:
            raise ValueError(
                f"the objective returned outputs {sorted(outputs)} without the metric {metric!r} "
                "(set metric: in the sweep file to the output to optimise)"
            )
    else:
        outputs = {metric: _plain(result)}
    value = outputs[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"the metric {metric!r} is {value!r}, not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"the metric {metric!r} is {value}, not a finite number")
    return outputs, value


def _several_outputs(result: Any, metrics: list[str]) -> dict[str, Any]:
    """The outputs of an objective with several metrics: a dict holding each, as a finite number."""
    if not isinstance(result, dict):
        raise ValueError(f"the objective returned {_plain(result)!r}; with several metrics it must return a dict "
                         f"holding each of {metrics} (e.g. {{{', '.join(repr(m) + ': ...' for m in metrics)}}})")
    outputs = {str(k): _plain(v) for k, v in result.items()}
    missing = [m for m in metrics if m not in outputs]
    if missing:
        raise ValueError(f"the objective returned outputs {sorted(outputs)} without the metric(s) {missing} "
                         "(metric: in the sweep file lists the outputs to optimise)")
    for m in metrics:
        value = outputs[m]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"the metric {m!r} is {value!r}, not a finite number")
    return outputs


class _Alarm:
    """SIGALRM after ``seconds`` raises EvaluationTimeout in the main thread (the worker loop's)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds if seconds and threading.current_thread() is threading.main_thread() else None
        self.old: Any = None

    def __enter__(self) -> "_Alarm":
        if self.seconds:
            def on_alarm(signum, frame):  # noqa: ANN001
                raise EvaluationTimeout(f"the evaluation took longer than the timeout of {self.seconds:g} s")

            self.old = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old or signal.SIG_DFL)


def evaluate(
    fn: Callable[..., Any], params: dict[str, Any], metric: str | Sequence[str], timeout: float | None, retries: int
) -> tuple[bool, dict[str, Any]]:
    """Call ``fn(**params)`` up to ``1 + retries`` times.

    Returns ``(True, {"outputs", "value", "runtime", "attempts"})`` or
    ``(False, {"message"})``; the message's first line is the short error
    (``ValueError: x out of range``), the traceback follows.
    """
    attempts = 0
    short, tb = "", ""
    t0 = time.perf_counter()
    while attempts <= retries:
        attempts += 1
        try:
            with _Alarm(timeout):
                result = fn(**params)
        except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
            if isinstance(e, InvalidResult):  # like a wrong return value: not retried, it would come back the same
                return False, {"message": f"InvalidResult: {e}"}
            if isinstance(e, _NO_TRACEBACK):  # first line: what happened; then the program's stderr tail, if any
                first, _, tb = f"{type(e).__name__}: {e}".partition("\n")
                short = " ".join(first.split())
            else:
                short = " ".join(f"{type(e).__name__}: {e}".split())
                tb = traceback.format_exc()
            continue
        try:
            outputs, value = normalise_outputs(result, metric)
        except ValueError as e:  # a wrong return value is not retried: it would come back the same
            return False, {"message": f"InvalidResult: {e}"}
        return True, {"outputs": outputs, "value": value, "runtime": time.perf_counter() - t0, "attempts": attempts}
    if attempts > 1:
        short = f"{short} (failed {attempts} attempts)"
    return False, {"message": f"{short}\n{tb}".rstrip()}


class CommandObjective:
    """A program as objective, in one worker: `bind` gives the function `evaluate` calls for one evaluation.

    ``objective`` is the sweep's ``objective:`` mapping plus ``context``: the trials folder, the sweep
    file's folder, every parameter's name (those missing from a point are inactive), the seed and
    the timeout (the program's own: SIGTERM to its process group, then SIGKILL).

    Example:
        >>> obj = CommandObjective({"command": "./sim -T {T}", "context": {"trials": "runs/x/trials",
        ...     "base_dir": ".", "parameters": ["T"], "seed": 1, "timeout": None}}, "w-1")
        >>> obj.bind(7)(T=300)  # doctest: +SKIP
        {'energy': -1.5}
    """

    def __init__(self, objective: dict[str, Any], worker_id: str):
        ctx = objective["context"]
        self.spec = CommandSpec.from_mapping({k: v for k, v in objective.items() if k != "context"})
        self.trials = Path(ctx["trials"])
        self.base_dir = Path(ctx["base_dir"])
        self.names = list(ctx["parameters"])
        self.seed = ctx.get("seed")
        self.timeout = ctx.get("timeout")
        self.worker_id = worker_id

    def bind(self, eval_id: int | str, extra: dict[str, Any] | None = None) -> Callable[..., Any]:
        """The function of the parameters that runs evaluation ``eval_id`` in ``trials/<eval_id>/``; ``extra``: more
        placeholder values (asha: the fidelity, checkpoint_dir)."""
        def call(**params: Any) -> Any:
            inactive = [n for n in self.names if n not in params]
            seed = self.seed + eval_id if isinstance(self.seed, int) and isinstance(eval_id, int) else self.seed
            trial = TrialContext(self.trials / str(eval_id), eval_id, seed, self.worker_id, self.base_dir, dict(extra or {}))
            return run_command(self.spec, params, trial, self.timeout, inactive)

        return call


def is_command(objective: Any) -> bool:
    """Whether the sweep's objective is a program (a mapping with ``command``)."""
    return isinstance(objective, dict) and "command" in objective

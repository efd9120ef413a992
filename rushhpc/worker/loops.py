"""Worker loops shipped with rushhpc. A worker loop is any function ``loop(rush, **args)``."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rushhpc import defaults


def queue_loop(rush: Any, fun: Callable[..., dict[str, Any]], timeout: float = 1.0, stop_when_empty: bool = False,
               prefetch: int = defaults.QUEUE_PREFETCH) -> None:
    """Pop queued tasks and evaluate ``fun(**xs)`` until the worker is terminated.

    ``fun`` returns a dict of results (a number is stored as ``{"y": value}``).
    An exception fails the task with its traceback; the worker goes on.
    With ``stop_when_empty`` the worker ends when the queue stays empty for ``timeout``.
    ``prefetch`` > 1 claims that many tasks per pop (`RushWorker.pop_task`): one Redis round
    trip per task instead of two, for short tasks; but a worker then holds up to
    ``prefetch - 1`` tasks others could run (keep 1 for long or uneven tasks). Prefetched
    tasks a worker never started go back to the queue when it stops or is lost.

    Example:
        >>> rush.start_local_workers(queue_loop, n_workers=4, fun=lambda x: {"y": x ** 2})
        >>> rush.push_tasks([{"x": i} for i in range(100)])
    """
    while not rush.terminated:
        task = rush.pop_task(timeout=timeout, prefetch=prefetch) if prefetch > 1 else rush.pop_task(timeout=timeout)
        if task is None:
            if stop_when_empty:
                return
            continue
        try:
            ys = fun(**task["xs"])
        except Exception:  # noqa: BLE001 - the task fails, the worker lives on
            rush.fail_tasks([task["key"]], [{"message": traceback.format_exc()}])
            continue
        if not isinstance(ys, dict):
            ys = {"y": ys}
        rush.finish_tasks([task["key"]], [ys])


def command_loop(rush: Any, command: str | Sequence[str], result: str | Mapping[str, str] = "stdout",
                 env: Mapping[str, str] | None = None, shell: bool = False, cwd: str | None = None,
                 trials: str = "trials", timeout: float | None = None, grace: float = defaults.COMMAND_GRACE,
                 stop_when_empty: bool = False) -> None:
    """Pop queued tasks and run one program per task: the task's ``xs`` fill the command's placeholders.

    The program mechanism of the sweeps (`rushhpc.worker.command`): ``command`` is a list, or a string split
    like a shell splits it (``shell=True`` runs it through ``/bin/sh`` instead); ``{name}`` takes the
    task's ``xs[name]`` as one argument, ``{trial_dir}``, ``{eval}`` (the task key) and ``{worker_id}``
    are known too. Each task runs in its own folder ``TRIALS/<task key>/`` (``stdout.txt``,
    ``stderr.txt``), from ``cwd`` (default: the worker's working folder; ``"trial"``: the trial
    folder). ``result``: ``"stdout"`` (the last line that is a JSON object or a number), a file in the
    trial folder, or ``{"regex": "loss: (?P<loss>\\S+)"}``. A number is stored as ``{"y": value}``.
    A non-zero exit, a timeout (SIGTERM to the program's process group, SIGKILL after ``grace``)
    or an unreadable result fails the task with the reason and stderr's last line.

    Example:
        >>> rush.start_local_workers(command_loop, n_workers=4, command="./sim -T {T} --out {trial_dir}",
        ...                          result="result.json", timeout=600)
        >>> rush.push_tasks([{"T": t} for t in (250, 300, 350)])
    """
    from rushhpc.worker.command import CONTEXT_PLACEHOLDERS, CommandSpec, TrialContext, placeholders, run_command

    spec = CommandSpec.from_mapping({"command": command, "result": result, "env": dict(env or {}), "shell": shell,
                                     "cwd": "trial" if cwd == "trial" else "sweep", "grace": grace}, "command_loop")
    base = Path(os.getcwd() if cwd in (None, "trial") else cwd).resolve()
    folder = Path(trials) if Path(trials).is_absolute() else base / trials
    needed = placeholders(spec) - set(CONTEXT_PLACEHOLDERS)
    while not rush.terminated:
        task = rush.pop_task(timeout=1.0)
        if task is None:
            if stop_when_empty:
                return
            continue
        xs, key = task["xs"], task["key"]
        missing = sorted(needed - set(xs))
        if missing:
            rush.fail_tasks([key], [{"message": f"command_loop: the task's xs have no {missing[0]!r} for the placeholder "
                                                f"{{{missing[0]}}} (its keys: {sorted(xs)})"}])
            continue
        trial = TrialContext(folder / key, key, None, rush.worker_id, base)
        try:
            ys = run_command(spec, xs, trial, timeout)
        except Exception as e:  # noqa: BLE001 - the task fails, the worker lives on
            first, _, rest = f"{type(e).__name__}: {e}".partition("\n")
            rush.fail_tasks([key], [{"message": f"{first}\n{rest}".rstrip()}])
            continue
        rush.finish_tasks([key], [ys if isinstance(ys, dict) else {"y": ys}])

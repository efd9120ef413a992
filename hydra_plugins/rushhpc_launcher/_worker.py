"""The worker side of the Hydra launcher: the worker loop each rushhpc worker runs.

A worker receives, once, what every job of the multirun needs: the task function, Hydra's
context (its config loader and callbacks), the multirun's config and Hydra's singletons
(ConfigStore, registered resolvers, ...), cloudpickled by the manager. Each task is one job,
``{"job_num": N, "overrides": [...]}``; the worker composes that job's config and calls
Hydra's own `run_job`, as Hydra's basic launcher does in-process, so output directories,
``.hydra/`` files, job logging and callbacks behave the same.

A job that returns is finished with its `JobReturn` (cloudpickled, base64) in the task's
``ys_extra``; a job whose task function raised is failed with the formatted traceback as the
condition's message and the `JobReturn` beside it; a job that could not even start
(composition error) is failed with the traceback alone.
"""

from __future__ import annotations

import base64
import os
import sys
import traceback
import types
from typing import Any

import cloudpickle

JOB_RETURN_FIELD = "_job_return"  # ys_extra (finished) or condition (failed) field holding the JobReturn


def hydra_worker_loop(rush: Any, payload: bytes, cwd: str, sys_path: list[str], source_file: str | None = None,
                      pop_timeout: float = 1.0) -> None:
    """Run Hydra jobs popped from the queue until the worker is asked to stop.

    ``payload`` is the cloudpickled dict of ``task_function``, ``hydra_context``, ``config``
    and ``singletons``, unpickled per job (each job starts from the multirun's state, as with
    Hydra's other launchers). ``cwd`` and ``sys_path`` are the manager's working directory and
    script directory: relative paths and the application's own modules resolve as they do there.
    ``source_file`` is the file the task function was defined in: tracebacks name it (cloudpickle
    sends functions of a script without their file name).
    """
    _prepare(cwd, sys_path)
    cloudpickle.loads(payload)  # fail the worker now, with the reason, if the job state cannot be loaded here
    while not rush.terminated:
        task = rush.pop_task(timeout=pop_timeout)
        if task is None:
            continue
        key = task["key"]
        xs = task["xs"]
        try:
            state = cloudpickle.loads(payload)
            if source_file:
                restore_filenames(state["task_function"], source_file)
            ret = run_one(state, int(xs["job_num"]), list(xs["overrides"]), job_id=key)
        except Exception:  # noqa: BLE001 - the job could not start (e.g. a composition error): fail it, go on
            rush.fail_tasks([key], [{"message": traceback.format_exc()}])
            continue
        report(rush, key, ret)


def _prepare(cwd: str, sys_path: list[str]) -> None:
    for p in reversed(sys_path):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    try:
        os.chdir(cwd)
    except OSError as e:
        print(f"rushhpc hydra worker: cannot enter the manager's directory {cwd} ({e.strerror}); "
              f"relative paths resolve from {os.getcwd()}", file=sys.stderr)


DYNAMIC = "<dynamic-code>"  # the file name cloudpickle gives the code it sends by value


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) and c.co_filename == DYNAMIC else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def restore_filenames(task_function: Any, filename: str) -> None:
    """Give the task function, and the functions of its module sent with it, their file name back."""
    funcs = [task_function]
    module_globals = getattr(task_function, "__globals__", None)
    if isinstance(module_globals, dict):
        funcs += [v for v in module_globals.values() if isinstance(v, types.FunctionType)]
    for f in funcs:
        code = getattr(f, "__code__", None)
        if isinstance(code, types.CodeType) and code.co_filename == DYNAMIC:
            f.__code__ = _renamed(code, filename)


def run_one(state: dict[str, Any], job_num: int, overrides: list[str], job_id: str) -> Any:
    """Compose one job's config and run it with Hydra's `run_job`; returns its `JobReturn`."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    Singleton.set_state(state["singletons"])
    setup_globals()
    hydra_context = state["hydra_context"]
    sweep_config = hydra_context.config_loader.load_sweep_config(state["config"], overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = job_id
        sweep_config.hydra.job.num = job_num
    return run_job(
        hydra_context=hydra_context,
        task_function=state["task_function"],
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def encode_job_return(ret: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(ret)).decode("ascii")


def decode_job_return(text: str) -> Any:
    return cloudpickle.loads(base64.b64decode(text))


MAX_JSON_RETURN = 16 * 1024  # bytes: a larger return value is in the JobReturn only


def _json_value(value: Any) -> Any:
    """The return value if it is small plain JSON data (shown in rushhpc's task tables), else None."""
    from rushhpc.core import codec
    from rushhpc.errors import RushPayloadError

    try:
        text = codec.encode(value)
    except RushPayloadError:
        return None
    return codec.decode(text) if len(text) <= MAX_JSON_RETURN else None


def report(rush: Any, key: str, ret: Any) -> None:
    """Finish or fail the task of one job with its `JobReturn`."""
    from hydra.core.utils import JobStatus

    if ret.status == JobStatus.COMPLETED:
        try:
            blob = encode_job_return(ret)
        except Exception as e:  # noqa: BLE001 - pickling raises many types
            rush.fail_tasks([key], [{"message": f"the job returned a value that cannot be sent back to Hydra: "
                                                f"{type(e).__name__}: {e}"}])
            return
        value = ret._return_value
        ys = {"return_value": _json_value(value)}
        if ys["return_value"] is None and value is not None:
            ys = {"return_type": type(value).__name__}
        rush.finish_tasks([key], [ys], [{"working_dir": ret.working_dir, JOB_RETURN_FIELD: blob}])
        return
    exc = ret._return_value
    if isinstance(exc, BaseException):
        message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        message = repr(exc)
    condition: dict[str, Any] = {"message": message}
    try:
        condition[JOB_RETURN_FIELD] = encode_job_return(ret)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: send its text instead
        from ._errors import RushhpcJobError

        ret.return_value = RushhpcJobError(message.rstrip().splitlines()[-1] if message.strip() else "job failed")
        try:
            condition[JOB_RETURN_FIELD] = encode_job_return(ret)
        except Exception:  # noqa: BLE001 - e.g. an unpicklable config value: the message alone
            pass
    rush.fail_tasks([key], [condition])

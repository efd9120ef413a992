"""What SLURM and PBS launchers share: the resource table, script rendering, arrays, scheduler calls.

A subclass names its template, maps the canonical resources to its
scheduler's directives (in the template), submits one array per chunk, and
parses its scheduler's answers into `JobStatus` (worker-side states):

    pending, held, starting, running, suspended, finishing, finished

A finished status carries a ``reason``: completed, failed, cancelled, timeout,
out_of_memory, node_fail, preempted, or failed_to_start.
"""

from __future__ import annotations

import getpass
import logging
import math
import os
import re
import secrets
import shlex
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import jinja2

from rushhpc import defaults
from rushhpc.core import durations, memory
from rushhpc.errors import RushConfigError, RushWorkerError
from rushhpc.launchers.base import LaunchContext, Launcher, LaunchRecord

log = logging.getLogger("rushhpc.launchers")

# The canonical resource table; each scheduler's template maps it to its own directives.
RESOURCE_KEYS = (
    "job_name", "partition", "queue", "account", "qos", "time", "walltime", "nodes", "cpus_per_task",
    "mem", "gpus", "constraint", "exclusive", "output", "error", "requeue", "extra_directives",
    "setup", "teardown",
)
# Launcher behaviour (not resources).
BEHAVIOUR_KEYS = (
    "template", "python", "startup_grace", "max_array_size", "walltime_margin", "poll_interval",
    "max_poll_interval", "submit_timeout", "detach", "vanish_grace", "array_throttle", "submit_interval", "max_submit",
    # what the manager does when a job is killed for its memory (rushhpc.core.memory): never a directive
    "mem_retry", "mem_max",
)


def parse_duration(value: Any) -> int | None:
    """Whole seconds of a walltime by the one rule of :mod:`rushhpc.core.durations`; ``None`` or ``""``: no limit.

    Example:
        >>> parse_duration("1-02:00:00"), parse_duration("90m"), parse_duration(None)
        (93600, 5400, None)
    """
    if value is None or value == "":
        return None
    try:
        return math.ceil(durations.parse_duration(value))
    except durations.DurationError as e:
        raise RushConfigError(f"launcher option time/walltime: {e}") from None


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` with ``~`` expanded, made absolute from the current folder: what a batch directive
    needs, since sbatch and qsub expand neither (``--output=~/x`` makes a folder named ``~``).

    Example:
        >>> absolute_path("~/logs/%A_%a.out")  # doctest: +SKIP
        '/home/me/logs/%A_%a.out'
    """
    return str(Path(path).expanduser().absolute())


def hms(seconds: int) -> str:
    """Seconds -> HH:MM:SS (hours may exceed 24), accepted by SLURM and PBS."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


# Never handed to a scheduler command: sbatch exports its whole environment into the job by
# default (and slurmdbd may store it), so a Redis URL with a password must not be in it.
SECRET_VARIABLES = ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_REDIS_PASSWORD")


# A worker's mark on the processes it starts (rushhpc.worker.heartbeat): a worker, job or scheduler command this
# process starts is not one of them, and must not die with a worker that happens to run here too.
WORKER_TOKEN_VARIABLE = "RUSHHPC_WORKER_TOKEN"


def scheduler_environment() -> dict[str, str]:
    """This process's environment without the variables that may hold secrets, nor a worker's token."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES and k != WORKER_TOKEN_VARIABLE}


def run_command(argv: Sequence[str], timeout: float = defaults.SCHEDULER_QUERY_TIMEOUT,
                check: bool = False) -> subprocess.CompletedProcess:
    """Run a scheduler command (without secret variables); a missing binary or a hang is a clear error."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=scheduler_environment())
    except FileNotFoundError:
        raise RushConfigError(
            f"{argv[0]} not found: is this a login node of the cluster, with its commands on PATH?"
        ) from None
    except subprocess.TimeoutExpired:
        raise RushWorkerError(f"{' '.join(argv[:2])} did not answer within {timeout:g} s") from None
    if check and out.returncode != 0:
        raise RushWorkerError(
            f"{shlex.join(argv[:3])} ... failed (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
        )
    return out


# What a batch template is given (besides the filter `q`, shell quoting).
TEMPLATE_VARIABLES = ("r", "n", "offset", "worker_prefix", "log_dir", "command", "walltime", "signal_margin",
                      "network_id", "throttle")


def _template_line(error: BaseException, name: str) -> str:
    """', line N' of the template line that raised ``error`` (jinja2 maps its frames to the
    template's lines), or '' when unknown."""
    tb = error.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f", line {line}" if line else ""


class BatchLauncher(Launcher):
    """Base class of the batch-scheduler launchers (one array submission per chunk of workers)."""

    template_name = "template.sh.j2"
    template_package = ""  # the scheduler's folder, which holds its template.sh.j2
    scheduler = ""
    memory_style = "slurm"  # how a replacement's larger mem is written (rushhpc.core.memory.format_memory)
    default_max_array_size = defaults.MAX_ARRAY_SIZE
    renders = True
    managed = True

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        unknown = sorted(set(self.options) - set(RESOURCE_KEYS) - set(BEHAVIOUR_KEYS))
        if unknown:
            raise RushConfigError(
                f"unknown launcher option(s) {unknown}; resources: {list(RESOURCE_KEYS)}, "
                f"behaviour: {list(BEHAVIOUR_KEYS)}"
            )
        self.memory_retry(None)  # a wrong mem_retry/mem_max fails before anything is submitted

    def memory_retry(self, overrides: dict[str, Any] | None = None) -> memory.MemoryRetry | None:
        """The out-of-memory retry rule of the plan's options and these per-call ``launcher_options``
        (`rushhpc.core.memory.memory_retry`), checked; None without ``mem_retry``.

        Example:
            >>> SlurmLauncher(ctx, {"mem": "300M", "mem_retry": 2}).memory_retry()  # doctest: +SKIP
            MemoryRetry(mem=300, factor=2.0, max_mb=None)
        """
        opts = {**self.options, **(overrides or {})}
        try:
            return memory.memory_retry(opts, self.memory_style)
        except memory.MemorySpecError as e:
            raise RushConfigError(f"launcher option {e.key}: {e.message}") from None

    def memory_text(self, mb: int) -> str:
        """``mb`` megabytes as this scheduler's ``mem`` takes them (``600M`` for SLURM, ``600mb`` for PBS)."""
        return memory.format_memory(mb, self.memory_style)

    # ------------------------------------------------------------ options
    def resources(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The resource table after defaults, plan options and per-call overrides."""
        res: dict[str, Any] = {k: None for k in RESOURCE_KEYS}
        res.update({k: v for k, v in self.options.items() if k in RESOURCE_KEYS})
        res.update({k: v for k, v in (overrides or {}).items() if k in RESOURCE_KEYS})
        res["job_name"] = res["job_name"] or f"rushhpc-{self.context.network_id}"
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", res["job_name"]):
            raise RushConfigError(f"job_name {res['job_name']!r}: use letters, digits, '.', '_', '-'")
        res["time"] = parse_duration(res["time"] if res["time"] is not None else res["walltime"])
        res["queue"] = res["queue"] or res["partition"]
        res["partition"] = res["partition"] or res["queue"]
        for key in ("extra_directives", "setup", "teardown"):
            v = res[key]
            res[key] = [v] if isinstance(v, str) else list(v or [])
        for key in ("output", "error"):
            # sbatch and qsub expand neither ``~`` nor variables in directives, and read a relative path
            # from the job's working folder: hand them the absolute path the user meant.
            if res[key]:
                res[key] = absolute_path(res[key])
        res["requeue"] = bool(res["requeue"])
        res["exclusive"] = bool(res["exclusive"])
        return res

    def walltime_margin(self, seconds: int | None) -> int:
        if self.options.get("walltime_margin") is not None:
            return int(self.options["walltime_margin"])
        if not seconds:
            return defaults.WALLTIME_MARGIN_UNLIMITED
        margin = max(defaults.WALLTIME_MARGIN_MIN, seconds * defaults.WALLTIME_MARGIN_FRACTION)
        return int(min(defaults.WALLTIME_MARGIN_MAX, margin))

    # ------------------------------------------------------------ rendering
    def environment(self) -> jinja2.Environment:
        template = self.options.get("template")
        if template:
            loader: jinja2.BaseLoader = jinja2.FileSystemLoader(str(Path(template).expanduser().parent))
        else:
            loader = jinja2.FunctionLoader(
                lambda name: resources.files(self.template_package).joinpath(name).read_text()
            )
        env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 trim_blocks=True, lstrip_blocks=True)
        env.filters["q"] = lambda v: shlex.quote(str(v))
        return env

    def render(self, start_id: str, worker_prefix: str, n: int, offset: int = 0,
               options: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> str:
        """The batch script for workers ``offset .. offset+n-1`` of one launch."""
        res = self.resources(overrides)
        walltime = res["time"]
        spec = self.spec(start_id, "WORKER_ID_PLACEHOLDER", options or {}, managed=True,
                         walltime=walltime or None, walltime_margin=self.walltime_margin(walltime) if walltime else None)
        argv = spec.argv(python=self.behaviour("python", None))
        command = " ".join('"$RUSHHPC_WORKER_ID"' if a == "WORKER_ID_PLACEHOLDER" else shlex.quote(a) for a in argv)
        name = Path(self.options["template"]).name if self.options.get("template") else self.template_name
        where = str(Path(self.options["template"]).expanduser()) if self.options.get("template") else \
            f"{self.template_package}/{self.template_name} (built in)"
        try:
            template = self.environment().get_template(name)
        except jinja2.TemplateNotFound:
            raise RushConfigError(f"batch template {where} not found: check launcher_options template=PATH") from None
        except jinja2.TemplateSyntaxError as e:
            raise RushConfigError(f"batch template {where}, line {e.lineno}: {e.message}") from None
        try:
            return self._render(template, res, n, offset, worker_prefix, command, walltime)
        except jinja2.UndefinedError as e:
            line = _template_line(e, name)
            raise RushConfigError(
                f"batch template {where}{line}: {e.message}; nothing was submitted. A template may use "
                f"{', '.join(TEMPLATE_VARIABLES)}, and the resources as r.NAME ({', '.join(RESOURCE_KEYS)})."
            ) from None

    def _render(self, template: jinja2.Template, res: dict[str, Any], n: int, offset: int, worker_prefix: str,
                command: str, walltime: int | None) -> str:
        return template.render(
            r=res,
            n=n,
            offset=offset,
            worker_prefix=worker_prefix,
            log_dir=absolute_path(self.log_dir),
            command=command,
            walltime=hms(walltime) if walltime else None,
            signal_margin=self.walltime_margin(walltime),
            network_id=self.context.network_id,
            throttle=int(self.behaviour("array_throttle", 0) or 0),
        )

    # ------------------------------------------------------------ launch
    def make_worker_ids(self, n: int) -> list[str]:
        """``w-<random>-<index>``: the batch script derives its worker's id from the array index."""
        prefix = "w-" + secrets.token_hex(4)
        return [f"{prefix}-{i}" for i in range(n)]

    def launch(self, start_id: str, worker_ids: list[str], options: dict[str, Any]) -> list[LaunchRecord]:
        """One array per chunk of at most the site's array size; at most ``max_submit`` jobs
        (the site's per-user limit, where it says); ``submit_interval`` seconds between chunks.
        If a chunk is refused, the chunks already submitted are recorded (so they can be
        stopped) and the error names them."""
        n = len(worker_ids)
        prefix = worker_ids[0].rsplit("-", 1)[0]
        chunk = int(self.behaviour("max_array_size", 0)) or self.max_array_size()
        limit = self.behaviour("max_submit", None) or self.max_submit()
        if limit is not None and n > int(limit):
            raise RushConfigError(
                f"{n} workers exceed the {int(limit)} jobs this site lets one user submit (MaxSubmitJobs); start "
                "fewer, or use rush.adapt(..., backlog=...) to keep fewer jobs queued at once"
            )
        overrides = options.get("launcher_options")
        self.memory_retry(overrides)
        res = self.resources(overrides)
        resources = {k: res[k] for k in ("cpus_per_task", "nodes", "gpus", "mem") if res.get(k)}
        interval = float(self.behaviour("submit_interval", 0) or 0)
        records: list[LaunchRecord] = []
        scripts_dir = Path(self.context.run_dir) / "scripts"
        scripts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for c in range(math.ceil(n / chunk)):
            offset, size = c * chunk, min(chunk, n - c * chunk)
            script = self.render(start_id, prefix, size, offset, options, overrides)
            path = scripts_dir / f"{prefix}-{offset}.{self.scheduler}.sh"
            path.write_text(script)
            if c and interval:
                time.sleep(interval)  # a site's submission rate limit
            try:
                base_id = self.submit(path, size)
            except (RushWorkerError, RushConfigError) as e:
                if not records:
                    raise
                for r in records:
                    r.extra["options"] = options
                self.context.store_records(records)
                raise RushWorkerError(
                    f"{e}. {len(records)} worker(s) of earlier chunks were submitted and keep running (stop them "
                    f"with rush.stop_workers(worker_ids=...)): {records[0].worker_id} .. {records[-1].worker_id}"
                ) from None
            self.submissions += 1
            for i in range(size):
                wid = f"{prefix}-{offset + i}"
                records.append(LaunchRecord(
                    worker_id=wid, launcher=self.name, job_id=self.element_id(base_id, i, size),
                    start_id=start_id,
                    extra={"script": str(path), "stderr": self.stderr_path(base_id, i, size), "managed": True,
                           "resources": resources},
                ))
        return records

    def max_submit(self) -> int | None:
        """How many jobs one user may have queued at the site, where the scheduler says (None: no limit known)."""
        return None

    def max_array_size(self) -> int:
        return self.default_max_array_size

    # What each scheduler's subclass provides (as dask-jobqueue's submit/cancel commands):
    def submit(self, script: Path, n: int) -> str:
        """Submit one array of ``n`` elements (e.g. ``sbatch --parsable``); return its id."""
        raise NotImplementedError

    def element_id(self, base_id: str, index: int, n: int) -> str:
        """The id the scheduler's status and kill commands accept for one element."""
        raise NotImplementedError

    def stderr_path(self, base_id: str, index: int, n: int) -> str:
        """Where the scheduler writes one element's stderr."""
        raise NotImplementedError

    def run(self, argv: Sequence[str], timeout: float | None = None, check: bool = False) -> subprocess.CompletedProcess:
        self.calls += 1
        return run_command(argv, timeout=timeout or float(self.behaviour("submit_timeout", defaults.SUBMIT_TIMEOUT)),
                           check=check)

    @staticmethod
    def user() -> str:
        return getpass.getuser()

"""Programs as objectives: run one command per evaluation and read its result.

A command objective is a program (``python3 train.py --lr {lr}``, ``./sim -T {T}``) run once per
evaluation, with the evaluation's parameters as its **arguments**, never through a shell unless the
user asks for one (``shell: true``). This module is the whole mechanism, used by the sweeps' worker
loops and by :func:`rushhpc.worker.loops.command_loop`; it imports no other rushhpc module but `rushhpc.defaults`.

What one evaluation does (``run_command``):

1. Its trial folder (``OUTPUT/trials/<eval>/`` in a sweep) is made fresh: a folder left by an
   earlier attempt is removed first, so a result file never comes from another attempt.
2. The command's placeholders are filled: ``{name}`` for each parameter, ``{trial_dir}``, ``{eval}``,
   ``{seed}``, ``{worker_id}``; ``{{`` and ``}}`` are literal braces. In the list form (or a string,
   split like a shell would split it, once, before any value is put in) each value stays one
   argument whatever it holds. The placeholder of an **inactive** parameter (a conditional one
   whose condition is false) removes its whole argument, and a flag standing right before that
   argument (``--layers {layers}``: the ``--layers``) goes with it; ``--layers={layers}`` is one
   argument and goes as one.
3. The program starts in its own session and process group (``start_new_session``), in the
   sweep file's folder (``cwd: sweep``, as a person would run it) or its trial folder
   (``cwd: trial``), with ``stdout.txt`` and ``stderr.txt`` in the trial folder, and
   ``RUSHHPC_TRIAL_DIR``, ``RUSHHPC_EVAL``, ``RUSHHPC_PARAMS`` (JSON) and the spec's ``env``
   added to its environment.
4. ``timeout``: SIGTERM to the whole process group, SIGKILL after ``grace`` seconds, and
   :class:`EvaluationTimeout`. When the program ends, anything it left running in its process
   group (a forked child) is stopped the same way: no evaluation leaves a process behind.
5. A non-zero exit (or a signal) raises :class:`ProgramFailed` with the code and the last lines of
   stderr; a result that cannot be read raises :class:`InvalidResult` naming what was looked for.

The result forms: ``stdout`` (the last line of stdout that is a JSON object or a number), a file
relative to the trial folder (a JSON object or a number), or ``{"regex": "loss: (?P<loss>\\S+)"}``
(the named groups of the last match, as numbers).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from rushhpc import defaults

__all__ = [
    "CommandSpec", "CommandSpecError", "EvaluationTimeout", "InvalidResult", "ProgramFailed", "TrialContext",
    "run_command", "render_argv", "placeholders", "CONTEXT_PLACEHOLDERS",
]

# Placeholders every command may use besides the parameters' names.
CONTEXT_PLACEHOLDERS = ("trial_dir", "eval", "seed", "worker_id")
STDERR_TAIL_LINES = 10  # lines of stderr a failed evaluation's error shows
_TAIL_BYTES = 65536  # how much of stdout the stdout result form reads, from the end


class CommandSpecError(ValueError):
    """A command objective that cannot run as written; ``key`` is where (e.g. ``objective.command``)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class EvaluationTimeout(Exception):
    """The evaluation ran longer than its ``timeout``."""


class InvalidResult(Exception):
    """The program ended well, but its result could not be read where the spec says it is."""


class ProgramFailed(Exception):
    """The program exited with a non-zero code or was killed by a signal."""


@dataclass(frozen=True)
class TrialContext:
    """Where and as what one evaluation runs.

    Example:
        >>> TrialContext(trial_dir=Path("runs/x/trials/3"), eval=3, seed=7, worker_id="w-1", base_dir=Path("."))
        TrialContext(trial_dir=PosixPath('runs/x/trials/3'), eval=3, seed=7, worker_id='w-1', base_dir=PosixPath('.'))
    """

    trial_dir: Path
    eval: int | str
    seed: int | None
    worker_id: str
    base_dir: Path  # the sweep file's folder: the program's working folder with cwd "sweep"
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)  # more placeholders: asha's {fidelity}, {checkpoint_dir}


@dataclass(frozen=True)
class CommandSpec:
    """A command objective, as validated from ``objective:`` (see `CommandSpec.from_mapping`).

    Example:
        >>> spec = CommandSpec.from_mapping({"command": "./sim -T {T} --out {trial_dir}", "result": "result.json"})
        >>> spec.argv_template, spec.result
        (('./sim', '-T', '{T}', '--out', '{trial_dir}'), 'result.json')
    """

    argv_template: tuple[str, ...] = ()  # the list form (or the string, split once like a shell)
    shell_template: str | None = None  # shell: true: the string as /bin/sh will read it
    result: str | dict[str, str] = "stdout"  # "stdout" | a file path | {"regex": pattern}
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "sweep"  # "sweep" | "trial"
    grace: float = defaults.COMMAND_GRACE  # seconds between SIGTERM and SIGKILL

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], key: str = "objective") -> "CommandSpec":
        """Validate a command objective's mapping; errors name the key (``objective.result``) and the fix.

        Example:
            >>> CommandSpec.from_mapping({"command": ["python3", "train.py", "--lr", "{lr}"]}).argv_template
            ('python3', 'train.py', '--lr', '{lr}')
        """
        known = {"command", "result", "env", "shell", "cwd", "grace"}
        unknown = sorted(set(raw) - known - {"timeout", "retries", "pythonpath"})
        if unknown:
            raise CommandSpecError(f"{key}.{unknown[0]}", f"unknown key; a command objective takes {sorted(known)}")
        command = raw.get("command")
        shell = raw.get("shell", False)
        if not isinstance(shell, bool):
            raise CommandSpecError(f"{key}.shell", f"expected true or false, got {shell!r}")
        argv: tuple[str, ...] = ()
        shell_template = None
        if isinstance(command, str) and command.strip():
            if shell:
                shell_template = command
            else:
                try:
                    argv = tuple(shlex.split(command))
                except ValueError as e:
                    raise CommandSpecError(f"{key}.command", f"cannot split {command!r} into arguments: {e}") from None
        elif isinstance(command, (list, tuple)) and command and all(isinstance(a, (str, int, float)) for a in command):
            if shell:
                raise CommandSpecError(f"{key}.shell", "shell: true takes the command as one string, not a list")
            argv = tuple(str(a) for a in command)
        else:
            raise CommandSpecError(f"{key}.command", "expected the program and its arguments, as a string "
                                   f"('./sim -T {{T}}') or a list (['./sim', '-T', '{{T}}']), got {command!r}")
        result = _result_form(raw.get("result", "stdout"), f"{key}.result")
        env = raw.get("env") or {}
        if not isinstance(env, Mapping) or not all(isinstance(k, str) for k in env):
            raise CommandSpecError(f"{key}.env", f"expected a mapping of variable names to values, got {env!r}")
        env = {k: str(v) for k, v in env.items()}
        cwd = raw.get("cwd", "sweep")
        if cwd not in ("sweep", "trial"):
            raise CommandSpecError(f"{key}.cwd", f"expected sweep (the sweep file's folder) or trial (the trial folder), "
                                   f"got {cwd!r}")
        grace = raw.get("grace", defaults.COMMAND_GRACE)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace < math.inf:
            raise CommandSpecError(f"{key}.grace", f"expected seconds >= 0 between SIGTERM and SIGKILL, got {grace!r}")
        spec = cls(argv, shell_template, result, env, cwd, float(grace))
        for where, text in spec._templates():
            try:
                _fields(text)
            except ValueError as e:
                raise CommandSpecError(f"{key}.{where}", f"{text!r}: {e} (write {{{{ and }}}} for literal braces)") from None
        return spec

    def _templates(self) -> Iterable[tuple[str, str]]:
        if self.shell_template is not None:
            yield "command", self.shell_template
        for a in self.argv_template:
            yield "command", a
        for k, v in self.env.items():
            yield f"env.{k}", v
        if isinstance(self.result, str) and self.result != "stdout":
            yield "result", self.result

    def check(self, parameters: Iterable[str], key: str = "objective") -> None:
        """Refuse, before anything starts, a placeholder that is neither a parameter nor a context name.

        Example:
            >>> CommandSpec.from_mapping({"command": "./sim {T} {x}"}).check(["T"])  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            rushhpc.worker.command.CommandSpecError: objective.command: unknown placeholder {x}: the parameters are ['T'], ...
        """
        names = set(parameters)
        for where, text in self._templates():
            for name in _fields(text):
                if name not in names and name not in CONTEXT_PLACEHOLDERS:
                    context = ", ".join("{" + c + "}" for c in CONTEXT_PLACEHOLDERS)
                    raise CommandSpecError(f"{key}.{where}", f"unknown placeholder {{{name}}}: the parameters are "
                                           f"{sorted(names)}, and {context} (write {{{{ and }}}} for literal braces)")


def _result_form(value: Any, key: str) -> str | dict[str, str]:
    if value == "stdout":
        return "stdout"
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, Mapping) and set(value) == {"regex"} and isinstance(value["regex"], str):
        try:
            pattern = re.compile(value["regex"])
        except re.error as e:
            raise CommandSpecError(f"{key}.regex", f"not a regular expression: {e}") from None
        if not pattern.groupindex:
            raise CommandSpecError(f"{key}.regex", "name the groups to read, e.g. 'loss: (?P<loss>\\S+)'")
        return {"regex": value["regex"]}
    raise CommandSpecError(key, f"expected stdout, a file the program writes (result.json), or "
                           f"{{regex: 'loss: (?P<loss>\\S+)'}}, got {value!r}")


def _fields(text: str) -> list[str]:
    """The placeholder names in ``text`` (``{{``/``}}`` are literal braces)."""
    out = []
    for _literal, name, _spec, _conv in string.Formatter().parse(text):
        if name is not None:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
                raise ValueError(f"{{{name}}} is not a placeholder name")
            out.append(name)
    return out


def placeholders(spec: CommandSpec) -> set[str]:
    """Every placeholder name the spec uses.

    Example:
        >>> sorted(placeholders(CommandSpec.from_mapping({"command": "./sim {T} --out {trial_dir}"})))
        ['T', 'trial_dir']
    """
    return {name for _where, text in spec._templates() for name in _fields(text)}


def _fill(text: str, values: Mapping[str, Any]) -> str:
    out = []
    for literal, name, fmt, conv in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            value = values[name]
            if conv:
                converters: dict[str, Callable[[Any], str]] = {"r": repr, "s": str, "a": ascii}
                value = converters[conv](value)
            out.append(format(value, fmt or ""))
    return "".join(out)


def render_argv(spec: CommandSpec, values: Mapping[str, Any], inactive: Iterable[str] = ()) -> list[str]:
    """The program's argv for these values; an inactive parameter's argument (and its flag) is left out.

    Example:
        >>> spec = CommandSpec.from_mapping({"command": "python3 train.py --lr {lr} --layers {layers} --act={act}"})
        >>> render_argv(spec, {"lr": 0.1, "layers": 3, "act": "relu"}, inactive=["layers"])
        ['python3', 'train.py', '--lr', '0.1', '--act=relu']
    """
    if spec.shell_template is not None:
        # the shell reads this string: each value is quoted, and an inactive one is an empty word
        off = set(inactive)
        quoted = {k: ("" if k in off else shlex.quote(_fill("{v}", {"v": v}))) for k, v in values.items()}
        quoted.update({k: "" for k in off})
        return ["/bin/sh", "-c", _fill(spec.shell_template, quoted)]
    off = set(inactive)
    argv: list[str] = []
    last_was_flag = False  # the last kept argument is a literal flag (--layers), which an inactive value takes along
    for arg in spec.argv_template:
        names = _fields(arg)
        if off.intersection(names):
            if last_was_flag:
                argv.pop()
            last_was_flag = False
            continue
        argv.append(_fill(arg, values))
        last_was_flag = not names and _is_flag(arg)
    return argv


def _is_flag(arg: str) -> bool:
    """``-x`` or ``--name``, not ``--name=value`` nor a negative number."""
    if not arg.startswith("-") or "=" in arg or arg in ("-", "--"):
        return False
    try:
        float(arg)
    except ValueError:
        return True
    return False


# ------------------------------------------------------------------ running
def _environment(spec: CommandSpec, params: Mapping[str, Any], ctx: TrialContext,
                 values: Mapping[str, Any]) -> dict[str, str]:
    env = dict(os.environ)  # with the worker's RUSHHPC_WORKER_TOKEN: its heartbeat finds the program by it
    env.update({k: _fill(v, values) for k, v in spec.env.items()})
    env["RUSHHPC_TRIAL_DIR"] = str(ctx.trial_dir)
    env["RUSHHPC_EVAL"] = str(ctx.eval)
    env["RUSHHPC_PARAMS"] = json.dumps(dict(params), default=str)
    return env


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the program's process group, SIGKILL whatever is left after ``grace`` s.

    The leader is our child: it is reaped here (a zombie still counts as a group member for
    ``killpg(pgid, 0)``, and would make every stop wait the whole grace).
    """
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(pgid):
            return
        time.sleep(0.01)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail_lines(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-n:])


def _read_tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        return f.read().decode("utf-8", "replace")


def _number_or_object(text: str) -> Any:
    """A JSON object or a number from ``text``; None when it is neither."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    try:
        return float(text)
    except ValueError:
        return None


def read_result(spec: CommandSpec, trial_dir: Path) -> Any:
    """The evaluation's result as the spec says where to find it; :class:`InvalidResult` otherwise.

    Example:
        >>> read_result(CommandSpec.from_mapping({"command": "true"}), Path("runs/x/trials/0"))  # doctest: +SKIP
        {'loss': 0.25}
    """
    stdout = trial_dir / "stdout.txt"
    if spec.result == "stdout":
        text = _read_tail(stdout)
        for line in reversed(text.splitlines()):
            value = _number_or_object(line)
            if value is not None:
                return value
        raise InvalidResult("no line of stdout is a JSON object or a number (result: stdout reads the last such "
                            f"line); stdout ends with: {text.strip()[-200:]!r}")
    if isinstance(spec.result, dict):
        pattern = re.compile(spec.result["regex"])
        matches = list(pattern.finditer(_read_tail(stdout)))
        if not matches:
            raise InvalidResult(f"stdout has no match of result.regex {pattern.pattern!r}")
        out: dict[str, Any] = {}
        for name, text in matches[-1].groupdict().items():
            try:
                out[name] = float(text) if text is not None else None
            except ValueError:
                raise InvalidResult(f"result.regex group {name!r} matched {text!r}, not a number") from None
        return out
    path = trial_dir / spec.result
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidResult(f"the program did not write its result file {spec.result} (in {trial_dir})") from None
    value = _number_or_object(text)
    if value is None:
        raise InvalidResult(f"the result file {spec.result} holds neither a JSON object nor a number: {text.strip()[:200]!r}")
    return value


def run_command(spec: CommandSpec, params: Mapping[str, Any], ctx: TrialContext, timeout: float | None = None,
                inactive: Sequence[str] = (), on_start: Callable[[int], None] | None = None) -> Any:
    """Run one evaluation of a command objective and return its result (a number or a dict of outputs).

    ``on_start(pgid)`` is called once the program runs. If the worker itself is SIGKILLed, its heartbeat
    process stops the program: the program inherits the worker's ``RUSHHPC_WORKER_TOKEN``.

    Example:
        >>> spec = CommandSpec.from_mapping({"command": ["python3", "-c", "print({x} ** 2)"]})
        >>> ctx = TrialContext(Path("/tmp/trial-0"), 0, None, "w-1", Path("."))
        >>> run_command(spec, {"x": 3}, ctx)
        9.0
    """
    trial = Path(ctx.trial_dir)
    if trial.exists():
        shutil.rmtree(trial)  # fresh: nothing left from an earlier attempt counts
    trial.mkdir(parents=True)
    values: dict[str, Any] = dict(params)
    values.update(trial_dir=str(trial), eval=ctx.eval, seed=ctx.seed, worker_id=ctx.worker_id)
    values.update(ctx.extra)
    argv = render_argv(spec, values, inactive)
    env = _environment(spec, params, ctx, values)
    cwd = trial if spec.cwd == "trial" else Path(ctx.base_dir)
    with open(trial / "stdout.txt", "wb") as out, open(trial / "stderr.txt", "wb") as err:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        except OSError as e:
            raise ProgramFailed(f"cannot start {argv[0]!r}: {e.strerror} (the program runs in {cwd})") from None
    pgid = proc.pid
    try:
        if on_start is not None:
            on_start(pgid)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc, spec.grace)
            raise EvaluationTimeout(f"the program ran longer than the timeout of {timeout:g} s; its process group "
                                    "was stopped (SIGTERM, then SIGKILL)") from None
    except BaseException:
        if proc.poll() is None:
            _stop_group(proc, spec.grace)  # an interrupted worker takes its program with it
        raise
    finally:
        if _group_alive(pgid):
            _stop_group(proc, spec.grace)  # what the program left running (a forked child)
    if code != 0:
        why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        tail = _tail_lines(trial / "stderr.txt", STDERR_TAIL_LINES)
        last = tail.rsplit("\n", 1)[-1].strip()[:200]
        # first line (the results' error column): the code and stderr's last line; then stderr's tail
        raise ProgramFailed(f"{argv[0]} failed ({why})" + (f": {last}\nstderr ends with:\n{tail}" if tail else ""))
    return read_result(spec, trial)

"""Reading a sweep: the file, the overrides, the validation, and the checks that look outside the file
(the objective imports and takes the parameters, a program exists, the GPUs are there)."""

from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from rushhpc.sweeps.config.overrides import apply_overrides, as_overrides
from rushhpc.sweeps.config.schema import SweepConfig, SweepConfigError, one_line
from rushhpc.sweeps.config.validate import validate


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise SweepConfigError(f"{path}: cannot read the sweep file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SweepConfigError(f"{path}: not valid YAML: {one_line(e)}") from None
    if data is None:
        raise SweepConfigError(f"{path}: the sweep file is empty; it needs at least objective, space and budget")
    if not isinstance(data, dict):
        raise SweepConfigError(f"{path}: expected a mapping of sweep keys at the top, got {type(data).__name__}")
    return data


def load_config(
    source: str | os.PathLike | dict,
    overrides: Iterable[Any] = (),
    *,
    cwd: str | os.PathLike | None = None,
    check_objective: bool = True,
) -> SweepConfig:
    """Read, override and validate a sweep configuration.

    ``source`` is a YAML file or a dict; ``overrides`` are ``"dotted.key=value"`` strings (or
    (key, value) pairs). Raises `SweepConfigError` on the first problem.

    Example:
        >>> cfg = load_config("examples/sweep_branin.yaml", ["budget.evaluations=30"])
        >>> cfg["budget"]["evaluations"]
        30
    """
    cwd = Path(cwd or os.getcwd()).resolve()
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
        name = "<dict>"
        base_dir = cwd
        stem = "sweep"
    else:
        path = Path(source).expanduser()
        name = str(source)
        raw = _read_file(path)
        base_dir = (cwd / path).resolve().parent
        stem = path.stem
    try:
        parsed = as_overrides(overrides)
    except SweepConfigError as e:
        raise SweepConfigError(f"{name}: {e}") from None
    raw = apply_overrides(raw, parsed, name)
    cfg = validate(raw, name, base_dir, cwd, stem)
    if check_objective:
        check_objective_importable(cfg)
        check_gpus(cfg)
    return cfg


def check_gpus(cfg: SweepConfig) -> None:
    """``workers.gpus_per_worker`` with local workers: enough GPUs visible here for ``workers.n``, before anything starts."""
    w = cfg["workers"]
    if not w.get("gpus_per_worker") or w["launcher"] != "local":
        return
    from rushhpc.launchers.gpus import GpuError, GpuPool, visible_gpus

    try:
        GpuPool(visible_gpus(), w["gpus_per_worker"]).check(w["n"])
    except GpuError as e:
        raise SweepConfigError(f"{cfg.source}: workers.gpus_per_worker: {e}") from None


def check_command(cfg: SweepConfig) -> None:
    """A command objective's placeholders name parameters, and a program given by path exists, before anything starts."""
    import shutil

    from rushhpc.worker.command import CommandSpec, CommandSpecError

    spec = CommandSpec.from_mapping(cfg["objective"], "objective")
    try:
        fidelity = cfg.data.get("fidelity")  # asha, hyperband: {fidelity} (or its name) and {checkpoint_dir} too
        spec.check(list(cfg.space) + ([] if fidelity is None else ["fidelity", fidelity["name"], "checkpoint_dir"]))
    except CommandSpecError as e:
        raise SweepConfigError(f"{cfg.source}: {e}") from None
    program = spec.argv_template[0] if spec.argv_template else None
    if program is None or "{" in program:
        return
    if "/" in program:
        where = cfg.base_dir if spec.cwd == "sweep" else None  # cwd: trial runs it from a folder made later
        path = Path(program).expanduser()
        path = path if path.is_absolute() or where is None else where / path
        if (path.is_absolute() or where is not None) and not path.exists():
            raise SweepConfigError(f"{cfg.source}: objective.command: {program} not found (looked at {path}; a relative "
                                   "program is found from the sweep file's folder)")
        if path.exists() and not os.access(path, os.X_OK):
            raise SweepConfigError(f"{cfg.source}: objective.command: {path} is not executable (chmod +x {path}, or "
                                   "run it through its interpreter: python3 {program} ...)")
    elif shutil.which(program) is None:
        cfg.warnings.append(f"objective.command: {program} is not on this machine's PATH; the workers must find it "
                            "on theirs")


def check_objective_importable(cfg: SweepConfig) -> Any:
    """Import the objective in this process (as the workers will) and check that it takes the
    parameters; returns the function."""
    from rushhpc.sweeps.objective import ObjectiveImportError, load_objective

    if cfg.objective_kind == "command":
        check_command(cfg)
        return None
    spec = cfg["objective"]
    try:
        fn = cfg.objective_fn or load_objective(spec, cfg["pythonpath"])
    except ObjectiveImportError as e:
        raise SweepConfigError(f"{cfg.source}: objective: {e}") from None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    params = sig.parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return fn
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty}
    missing = [n for n in cfg.space if n not in accepted]
    if missing:
        raise SweepConfigError(
            f"{cfg.source}: space.{missing[0]}: the objective {spec.rpartition(':')[2]}{sig} takes no parameter "
            f"{missing[0]!r} (add it to the function, or **kwargs)"
        )
    given = set(cfg.space)
    fidelity = cfg.data.get("fidelity")
    if fidelity is not None:  # asha passes the fidelity under its name
        if fidelity["name"] not in accepted:
            raise SweepConfigError(
                f"{cfg.source}: fidelity.name: the objective {spec.rpartition(':')[2]}{sig} takes no parameter "
                f"{fidelity['name']!r} (the argument that receives the fidelity)"
            )
        given.add(fidelity["name"])
    lacking = sorted(required - given)
    if lacking:
        raise SweepConfigError(
            f"{cfg.source}: space: the objective {spec.rpartition(':')[2]}{sig} needs {', '.join(lacking)}, "
            "which the space does not define (add them, e.g. as type: fixed)"
        )
    return fn

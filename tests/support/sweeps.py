"""Running ``rushhpc sweep`` as a user does: a sweep file, the real command line, its journal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent  # sweep_functions.py is beside this file
BRANIN_SPACE = {"x1": {"type": "float", "low": -5, "high": 10}, "x2": {"type": "float", "low": 0, "high": 15}}


def write_sweep(tmp: Path, filename: str = "sweep.yaml", **fields) -> Path:
    """A sweep file in tmp with functions.py beside it; fields override the minimal one."""
    shutil.copy(HERE / "sweep_functions.py", tmp / "functions.py")
    doc = {
        "objective": "functions.py:branin",
        "space": BRANIN_SPACE,
        "strategy": "random",
        "budget": {"evaluations": 20},
        "direction": "minimize",
        "workers": {"n": 2, "launcher": "local"},
        "redis": "embedded",
        "output": "runs/out",
        "seed": 1,
    }
    doc.update(fields)
    path = tmp / filename
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rushhpc", "sweep", *args]


def run(tmp: Path, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(sweep_cmd(*args), cwd=tmp, capture_output=True, text=True, timeout=timeout, env=e)


def journal(out: Path) -> list[dict]:
    p = out / "journal.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

"""Processes and timing logs for ``bench/sweep_algorithms.py``.

Every process the benchmark starts gets a new session (its own process group) and an environment variable
``SWEEP_ALGORITHMS_RUN=<token>`` that all its descendants inherit. Each wait has a deadline; at the end of each
run the groups are killed (SIGTERM, then SIGKILL), and so is any process left that carries the token (Ray's
services and Syne Tune's trials may start sessions of their own): what the benchmark started, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN_ENV = "SWEEP_ALGORITHMS_RUN"


def rushhpc_root() -> Path:
    """The folder holding the rushhpc this Python imports (PYTHONPATH or an install), else this checkout."""
    import importlib.util

    spec = importlib.util.find_spec("rushhpc")
    return Path(spec.origin).resolve().parent.parent if spec and spec.origin else ROOT


def base_env(token: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of every process: the rushhpc the driver imports (else this checkout) and ``bench/``
    first on PYTHONPATH (so workers import the same rushhpc, and the objectives), the run token, quiet peers."""
    env = dict(os.environ)
    parts = [str(rushhpc_root()), str(HERE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update({"PYTHONPATH": os.pathsep.join(parts), TOKEN_ENV: token, "RAY_DEDUP_LOGS": "0",
                "RAY_USAGE_STATS_ENABLED": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
                "RAY_AIR_NEW_OUTPUT": "0", "PYTHONWARNINGS": "ignore"})
    env.update(extra)
    return env


def _marked(token: str) -> list[int]:
    pids = []
    needle = f"{TOKEN_ENV}={token}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (d / "environ").read_bytes().split(b"\0"):
                pids.append(int(d.name))
    return pids


def _signal(pids: list[int], procs: list[subprocess.Popen], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def cleanup(token: str, procs: list[subprocess.Popen], grace: float = 5.0) -> int:
    """Kill what this run started (groups, then any process carrying the token); returns how many were left."""
    left = _marked(token)
    live = [p for p in procs if p.poll() is None]
    if not left and not live:
        return 0
    _signal(left, live, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and (_marked(token) or any(p.poll() is None for p in live)):
        time.sleep(0.1)
    _signal(_marked(token), live, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=2)
    return len(left)


def run_group(argvs: list[list[str]], env: dict[str, str], cwd: Path, logs: list[Path], deadline: float,
              token: str) -> dict[str, Any]:
    """Start the processes, wait for all of them until ``deadline`` (time.time()), kill what is left.

    Returns the launch time, the end time, the exit codes (None: killed at the deadline) and how many
    stray processes had to be killed."""
    procs: list[subprocess.Popen] = []
    t_launch = time.time()
    try:
        for argv, log in zip(argvs, logs):
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              cwd=cwd, env=env, start_new_session=True))
        codes: list[int | None] = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.time())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        t_end = time.time()
    finally:
        strays = cleanup(token, procs)
    return {"t_launch": t_launch, "t_end": t_end, "codes": codes, "strays": strays}


def read_log(folder: Path) -> list[dict[str, Any]]:
    """All timing records of a run (every ``*.jsonl`` in its log folder)."""
    out = []
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def tail(path: Path, n: int = 3) -> str:
    """The last lines of a log, for a failure's message."""
    with contextlib.suppress(OSError):
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
        return " | ".join(lines[-n:])[-400:]
    return ""


def importable(module: str, python: str = sys.executable) -> str | None:
    """None when ``module`` imports in this Python, else why not (one line)."""
    try:
        __import__(module)
        return None
    except Exception as e:  # noqa: BLE001 - any import failure means: skip this peer
        return f"{type(e).__name__}: {e}"[:200]


def commit(folder: Path) -> str:
    """The git commit (short) of a checkout, or "?"."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "log", "-1", "--format=%h %s"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip()[:70] or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def versions() -> dict[str, str]:
    out = {}
    for m in ("rushhpc", "optuna", "ray", "syne_tune", "pymoo"):
        with contextlib.suppress(Exception):
            out[m] = getattr(__import__(m), "__version__", "?")
    return out

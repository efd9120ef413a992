"""Objectives of ``bench/sweep_algorithms.py``: a synthetic learning curve and ZDT1/ZDT2, with their own timing log.

**The learning curve** (minimised; no download, no data). A configuration is ``lr`` (log-uniform 1e-4..1),
``layers`` (int 1..8), ``dropout`` (0..0.9) and ``wd`` (log-uniform 1e-6..1e-1). Its loss after ``e`` epochs is

    loss(e) = floor + start * e ** -speed + noise(e)
    floor   = 0.05 + 0.6 * ((log10 lr + 2) / 2)^2 + 0.015 * (layers - 5)^2 + 0.3 * (dropout - 0.35)^2
                   + 0.08 * ((log10 wd + 4) / 3)^2
    start   = 0.5 + 0.1 * layers        (bigger models start worse ...)
    speed   = 0.3 + 0.9 * (log10 lr + 4) / 4   (... and large learning rates learn faster but end higher)
    noise   ~ N(0, 0.01), seeded by the configuration, the epoch and the benchmark seed

so curves cross: what looks best after one epoch is not what is best after 27, which is what makes early
stopping a real decision. The best loss at 27 epochs is about 0.11 (lr near 1e-2, 5 layers, dropout 0.35, wd
1e-4, noise included); of 2,000 random configurations the best reached 0.114, the 20th 0.157. Every epoch
costs ``cost`` seconds (a sleep). The value at epoch ``e`` depends only on the configuration and ``e``, so a
run that resumes from a checkpoint and one that trains from scratch report the same numbers.

**ZDT1 and ZDT2** (two objectives, minimised, ``n`` variables in [0, 1]): pymoo's definitions
(Zitzler, Deb, Thiele 2000), written out here so that nothing else is needed: ``f1 = x1``,
``g = 1 + 9 * mean(x2..xn)``, ``f2 = g * (1 - sqrt(f1 / g))`` (ZDT1) or ``g * (1 - (f1 / g)^2)`` (ZDT2).

**The timing log.** Each call appends one JSON line to ``$SWEEP_ALGORITHMS_LOG/<pid>.jsonl``: the
evaluation's start and end (``time.time()``), the fidelity it trained from and to, and its values. Every tool's
utilisation, fidelity and best-over-time is computed from these lines alone, the same way for all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

LOG_ENV = "SWEEP_ALGORITHMS_LOG"
SEED_ENV = "SWEEP_ALGORITHMS_SEED"
COST_ENV = "SWEEP_ALGORITHMS_COST"
MAX_EPOCHS = 27
SPACE = {"lr": ("log", 1e-4, 1.0), "layers": ("int", 1, 8), "dropout": ("float", 0.0, 0.9), "wd": ("log", 1e-6, 1e-1)}


def log_record(tool: str, **fields: Any) -> None:
    """Append one line to this process's timing log (no log folder in the environment: nothing)."""
    folder = os.environ.get(LOG_ENV)
    if not folder:
        return
    with open(Path(folder) / f"{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps({"tool": tool, **fields}) + "\n")


def curve(lr: float, layers: int, dropout: float, wd: float, epoch: int, seed: int = 0) -> float:
    """The loss of a configuration after ``epoch`` epochs (see the module's docstring).

    Example:
        >>> round(curve(1e-2, 5, 0.35, 1e-4, 27, seed=0), 1)
        0.1
    """
    u = math.log10(lr)
    floor = 0.05 + 0.6 * ((u + 2) / 2) ** 2 + 0.015 * (layers - 5) ** 2 + 0.3 * (dropout - 0.35) ** 2 \
        + 0.08 * ((math.log10(wd) + 4) / 3) ** 2
    start = 0.5 + 0.1 * layers
    speed = 0.3 + 0.9 * (u + 4) / 4
    key = f"{lr:.12g}|{int(layers)}|{dropout:.12g}|{wd:.12g}|{int(epoch)}|{seed}".encode()
    noise = random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")).gauss(0.0, 0.01)
    return floor + start * epoch ** -speed + noise


def train_epochs(tool: str, params: dict[str, Any], first: int, last: int, cost: float, seed: int,
                 config: str = "") -> float:
    """Train epochs ``first+1 .. last`` (sleep ``cost`` per epoch), log it, return the loss at ``last``."""
    t0 = time.time()
    if last > first and cost > 0:
        time.sleep(cost * (last - first))
    y = curve(params["lr"], params["layers"], params["dropout"], params["wd"], last, seed)
    log_record(tool, config=config, f0=first, f1=last, t0=t0, t1=time.time(), value=y)
    return y


def train(lr: float, layers: int, dropout: float, wd: float, epochs: int, checkpoint_dir: str | None = None) -> dict:
    """rushhpc's objective: resume from ``checkpoint_dir`` (the epochs this configuration already trained),
    train the rest, write the checkpoint back."""
    seed, cost = int(os.environ.get(SEED_ENV, "0")), float(os.environ.get(COST_ENV, "0.05"))
    done = 0
    ckpt = Path(checkpoint_dir) / "state.json" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        done = int(json.loads(ckpt.read_text())["epochs"])
    params = {"lr": lr, "layers": layers, "dropout": dropout, "wd": wd}
    config = Path(checkpoint_dir).name if checkpoint_dir else ""
    y = train_epochs("rushhpc", params, min(done, epochs), epochs, cost, seed, config)
    if ckpt is not None:
        ckpt.write_text(json.dumps({"epochs": max(done, epochs)}))
    return {"loss": y, "resumed_from": done}


# ------------------------------------------------------------------------------------------- ZDT
def zdt(problem: str, xs: list[float]) -> tuple[float, float]:
    """ZDT1 or ZDT2 (see the module's docstring).

    Example:
        >>> zdt("zdt1", [0.25, 0.0, 0.0])
        (0.25, 0.5)
    """
    f1 = xs[0]
    g = 1 + 9 * sum(xs[1:]) / (len(xs) - 1)
    h = 1 - math.sqrt(f1 / g) if problem == "zdt1" else 1 - (f1 / g) ** 2
    return f1, g * h


def zdt_timed(tool: str, problem: str, xs: list[float], cost: float) -> tuple[float, float]:
    """Evaluate after ``cost`` seconds, log it."""
    t0 = time.time()
    if cost > 0:
        time.sleep(cost)
    f1, f2 = zdt(problem, xs)
    log_record(tool, config="", f0=0, f1=1, t0=t0, t1=time.time(), value=f1, values=[f1, f2])
    return f1, f2


def _zdt_rushhpc(problem: str, kw: dict[str, float]) -> dict:
    xs = [kw[f"x{i}"] for i in range(1, len(kw) + 1)]
    f1, f2 = zdt_timed("rushhpc", problem, xs, float(os.environ.get(COST_ENV, "0.02")))
    return {"f1": f1, "f2": f2}


def zdt1(**kw: float) -> dict:
    """rushhpc's objective: ZDT1 on x1..xn (outputs f1, f2)."""
    return _zdt_rushhpc("zdt1", kw)


def zdt2(**kw: float) -> dict:
    """rushhpc's objective: ZDT2 on x1..xn (outputs f1, f2)."""
    return _zdt_rushhpc("zdt2", kw)


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """The area dominated by ``points`` (minimised) and bounded by ``ref``.

    Example:
        >>> hypervolume_2d([(0.0, 1.0), (1.0, 0.0)], (2.0, 2.0))
        3.0
    """
    pts = sorted((p for p in points if p[0] < ref[0] and p[1] < ref[1]), key=lambda p: (p[0], p[1]))
    return _hv_exact(pts, ref)


def _hv_exact(pts: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    area, prev_f2 = 0.0, ref[1]
    for a, b in pts:  # sorted by f1; each non-dominated point adds the rectangle below the previous f2
        if b < prev_f2:
            area += (ref[0] - a) * (prev_f2 - b)
            prev_f2 = b
    return area


def true_front_hypervolume(problem: str, ref: tuple[float, float], n: int = 20000) -> float:
    """The hypervolume of the true front (g = 1) against ``ref``, on a fine grid of ``f1``."""
    pts = [zdt(problem, [i / n] + [0.0]) for i in range(n + 1)]
    return _hv_exact(sorted(pts), ref)

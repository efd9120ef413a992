"""Syne Tune's training script for ``bench/sweep_algorithms.py``: epoch after epoch of the synthetic learning
curve (``sweep_algorithms_functions``), each reported to Syne Tune, which stops the trial at a rung when ASHA
says so. Started by Syne Tune's ``LocalBackend``, one process per trial."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_algorithms_functions as fx  # noqa: E402

if __name__ == "__main__":
    from syne_tune import Reporter

    ap = argparse.ArgumentParser()
    for name, kind in (("lr", float), ("layers", int), ("dropout", float), ("wd", float), ("epochs", int),
                       ("cost", float), ("fseed", int), ("logdir", str)):
        ap.add_argument(f"--{name}", type=kind, required=True)
    a, _ = ap.parse_known_args()
    os.environ[fx.LOG_ENV] = a.logdir
    report = Reporter()
    params = {"lr": a.lr, "layers": a.layers, "dropout": a.dropout, "wd": a.wd}
    for e in range(1, a.epochs + 1):
        report(epoch=e, loss=fx.train_epochs("syne-tune", params, e - 1, e, a.cost, a.fseed))

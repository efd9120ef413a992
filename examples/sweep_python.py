"""The same sweeps from Python (a notebook, a script): `rushhpc.sweep` returns the results table.

    python examples/sweep_python.py
"""

from __future__ import annotations

from pathlib import Path

import rushhpc

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    # a YAML file, with overrides by dotted path (``__`` stands for ``.`` in keyword names)
    df = rushhpc.sweep(HERE / "sweep_branin.yaml", budget__evaluations=60, output="runs/branin-python",
                       resume=True)
    print(df.sort_values("y")[["eval", "x1", "x2", "y", "worker_id"]].head(5).to_string(index=False))
    print("status:", df.attrs["status"], "best:", df.attrs["best"]["value"])

    # or a dict: the keys of the YAML file
    df = rushhpc.sweep({
        "objective": str(HERE / "sweep_functions.py") + ":train",
        "metric": "loss",
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                  "layers": {"type": "int", "low": 1, "high": 5},
                  "optimizer": ["sgd", "adam"],          # a list is a categorical parameter
                  "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
                  "epochs": 3},                         # a plain value is a fixed one
        "strategy": "sobol",
        "budget": {"evaluations": 32},
        "workers": {"n": 2},
        "output": "runs/train-python",
        "progress": "none",
    }, resume=True)
    print(df.sort_values("loss").head(3).to_string(index=False))

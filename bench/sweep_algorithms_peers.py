"""The peers' side of ``bench/sweep_algorithms.py``: one process of each tool, run as a subprocess.

    python bench/sweep_algorithms_peers.py optuna-mf '{"storage": ..., ...}'

Every peer here is a *stopping* variant of successive halving: a trial trains epoch after epoch in one process
and is stopped at a rung when it is not in the top 1/eta; a trial that goes on simply continues, so nothing is
trained twice (the same as rushhpc's asha with ``checkpoint_dir``, which resumes a promoted configuration from
the epochs its lower rung wrote). Each epoch is one call of ``sweep_algorithms_functions.train_epochs`` (one
line of the timing log). All sample configurations at random.

- ``optuna-mf``: ``study.optimize`` with ``RandomSampler`` and ``HyperbandPruner(1, 27, 3)`` (or
  ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``) on one study in ``JournalStorage`` with a file
  backend shared by N such processes; ``trial.report`` and ``should_prune`` after every epoch.
- ``ray``: ``tune.Tuner`` with ``ASHAScheduler(time_attr=training_iteration, max_t=27, grace_period=1,
  reduction_factor=3)``, ``max_concurrent_trials=N``, ``reuse_actors=True`` (Ray's advice for short trials),
  ``num_samples=-1`` (until the time budget), ``time_budget_s``; a local Ray with ``num_cpus=N`` (one CPU per trial).
- ``syne-tune``: ``Tuner`` with ``ASHA(max_t=27, grace_period=1, reduction_factor=3)``, ``LocalBackend``
  (one process per trial, ``sweep_algorithms_syne_train.py``), ``n_workers=N``, ``StoppingCriterion(
  max_wallclock_time)``.
- ``optuna-mo``: several objectives, ``study.optimize(n_trials)`` with ``NSGAIISampler`` or ``TPESampler`` on a
  shared journal study.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_algorithms_functions as fx  # noqa: E402

ETA = 3


def _optuna_quiet() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    return optuna


def _journal(path: str) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(path))


def optuna_mf(a: dict[str, Any]) -> None:
    optuna = _optuna_quiet()
    if a["pruner"] == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=a["max"], reduction_factor=ETA)
    else:
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)
    study = optuna.load_study(study_name=a["study"], storage=_journal(a["storage"]),
                              sampler=optuna.samplers.RandomSampler(seed=a["seed"]), pruner=pruner)
    tool, cost, seed, top = a["tool"], a["cost"], a["fseed"], a["max"]

    def objective(trial: Any) -> float:
        p = {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True), "layers": trial.suggest_int("layers", 1, 8),
             "dropout": trial.suggest_float("dropout", 0.0, 0.9), "wd": trial.suggest_float("wd", 1e-6, 1e-1, log=True)}
        y = float("nan")
        for e in range(1, top + 1):
            y = fx.train_epochs(tool, p, e - 1, e, cost, seed, str(trial.number))
            trial.report(y, e)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return y

    study.optimize(objective, timeout=max(0.0, a["deadline"] - time.time()))


def optuna_mo(a: dict[str, Any]) -> None:
    optuna = _optuna_quiet()
    if a["sampler"] == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=a["seed"])
    else:
        sampler = optuna.samplers.TPESampler(seed=a["seed"], constant_liar=True)
    study = optuna.load_study(study_name=a["study"], storage=_journal(a["storage"]), sampler=sampler)
    n, problem, cost, tool = a["n_var"], a["problem"], a["cost"], a["tool"]

    def objective(trial: Any) -> tuple[float, float]:
        xs = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(1, n + 1)]
        return fx.zdt_timed(tool, problem, xs, cost)

    study.optimize(objective, n_trials=a["n_trials"])


def ray_mf(a: dict[str, Any]) -> None:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    logdir, cost, seed, top, n = a["logdir"], a["cost"], a["fseed"], a["max"], a["workers"]

    def trainable(config: dict[str, Any]) -> None:
        os.environ[fx.LOG_ENV] = logdir
        for e in range(1, top + 1):
            y = fx.train_epochs("ray", config, e - 1, e, cost, seed)
            tune.report({"loss": y})

    ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _temp_dir=a.get("ray_tmp"))
    try:
        space = {"lr": tune.loguniform(1e-4, 1.0), "layers": tune.randint(1, 9), "dropout": tune.uniform(0.0, 0.9),
                 "wd": tune.loguniform(1e-6, 1e-1)}
        sched = ASHAScheduler(time_attr="training_iteration", max_t=top, grace_period=1, reduction_factor=ETA)
        from ray.tune.search.basic_variant import BasicVariantGenerator

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=sched, num_samples=-1,
                                        max_concurrent_trials=n, reuse_actors=True,
                                        search_alg=BasicVariantGenerator(random_state=a["seed"]),
                                        time_budget_s=max(1.0, a["deadline"] - time.time())),
            run_config=tune.RunConfig(storage_path=a["work"], name="ray", verbose=0))
        tuner.fit()
    finally:
        ray.shutdown()


def syne_mf(a: dict[str, Any]) -> None:
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.config_space import loguniform, randint, uniform
    from syne_tune.optimizer.baselines import ASHA

    space = {"lr": loguniform(1e-4, 1.0), "layers": randint(1, 8), "dropout": uniform(0.0, 0.9),
             "wd": loguniform(1e-6, 1e-1), "epochs": a["max"], "cost": a["cost"], "fseed": a["fseed"],
             "logdir": a["logdir"]}
    sched = ASHA(space, metric="loss", time_attr="epoch", max_t=a["max"], do_minimize=True, random_seed=a["seed"],
                 grace_period=1, reduction_factor=ETA)
    script = str(Path(__file__).resolve().parent / "sweep_algorithms_syne_train.py")
    tuner = Tuner(trial_backend=LocalBackend(entry_point=script, binary=sys.executable), scheduler=sched,
                  stop_criterion=StoppingCriterion(max_wallclock_time=max(1.0, a["deadline"] - time.time())),
                  n_workers=a["workers"], sleep_time=a.get("sleep_time", 0.1), results_update_interval=5.0,
                  print_update_interval=3600.0, tuner_name=f"syne-{a['seed']}", save_tuner=False)
    tuner.run()


RUNNERS = {"optuna-mf": optuna_mf, "optuna-mo": optuna_mo, "ray": ray_mf, "syne-tune": syne_mf}

if __name__ == "__main__":
    RUNNERS[sys.argv[1]](json.loads(sys.argv[2]))

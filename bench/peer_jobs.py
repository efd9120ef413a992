"""What the peer workers run (imported by their worker processes; ``bench/`` is
on their PYTHONPATH). Every peer runs the same no-op objective as rushhpc:
take a point (x1, x2), return a constant at once.

- rq: `noop` is the job function.
- Dramatiq and Celery: their modules are imported only by those workers
  (`peer_dramatiq.py`, `peer_celery.py`), so that a missing package does not
  break the others.
- Optuna: ``python peer_jobs.py optuna URL STUDY START WARMUP WINDOW`` is one
  worker process of the random search (`optuna_worker`).
"""

from __future__ import annotations

import os
import sys
import time


def noop(x1: float = 0.0, x2: float = 0.0) -> float:
    """The no-op objective (rq job)."""
    return 0.0


def optuna_worker(url: str, study_name: str, warmup: float, window: float) -> None:
    """One Optuna worker: random search through ask/tell on the Redis journal storage.

    It announces itself (SADD ready), waits for the driver's start time (key
    ``go``, Redis clock), runs ask -> suggest x1, x2 -> tell(0.0) from then
    until start + warm-up + window, and reports the number of trials told
    inside the window, after the warm-up (HSET ``done``). The driver adds the
    workers' counts up.
    """
    import optuna
    import redis
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    r = redis.Redis.from_url(url)
    storage = JournalStorage(JournalRedisBackend(url))
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
    me = str(os.getpid())
    r.sadd(f"bench:{study_name}:ready", me)
    while (go := r.get(f"bench:{study_name}:go")) is None:
        time.sleep(0.005)
    # the driver's start time is on the Redis clock; convert once to ours
    s, micro = r.time()
    offset = time.time() - (s + micro / 1e6)
    start = float(go) + offset
    begin, end = start + warmup, start + warmup + window
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    while True:
        trial = study.ask()
        trial.suggest_float("x1", -5, 10)
        trial.suggest_float("x2", 0, 15)
        study.tell(trial, noop())
        now = time.time()
        if now > end:
            break
        if now >= begin:
            n += 1
    r.hset(f"bench:{study_name}:done", me, n)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "optuna":
        optuna_worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit("usage: peer_jobs.py optuna URL STUDY WARMUP WINDOW")

"""Celery's side of the peer benchmark: an app on a Redis broker and the no-op task.

Imported by ``celery -A peer_celery worker`` processes and by the driver.
No result backend (Celery's fastest configuration); the broker URL comes from
``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os

import redis
from celery import Celery
from celery.signals import worker_ready

QUEUE = "bench"

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(task_ignore_result=True, task_default_queue=QUEUE, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@worker_ready.connect
def _announce(sender=None, **kwargs) -> None:
    """Tell the driver this worker consumes (SADD bench:celery:ready)."""
    redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).sadd("bench:celery:ready", str(os.getpid()))


@app.task(name="noop")
def noop(x1: float = 0.0, x2: float = 0.0) -> None:
    """The no-op objective."""
    return

"""Dramatiq's side of the peer benchmark: a Redis broker and the no-op actor.

Imported by ``dramatiq peer_dramatiq`` worker processes and by the driver
(to send messages). The broker URL comes from ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench"

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(x1: float = 0.0, x2: float = 0.0) -> None:
    """The no-op objective."""
    return

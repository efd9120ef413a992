"""The manager-side monitor: detection in a background thread, so nobody calls
`detect_lost_workers()` by hand."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from .rush import Rush

log = logging.getLogger("rushhpc.monitor")


class Monitor:
    """Runs ``rush.detect_lost_workers()`` every ``interval`` seconds until stopped.

    Example:
        >>> rush.start_monitor(interval=5)   # creates and starts a Monitor
        >>> rush.stop_monitor()
    """

    def __init__(self, rush: "Rush", interval: float = 5.0):
        if interval <= 0:
            raise ValueError("monitor interval must be > 0 seconds")
        self.rush = rush
        self.interval = interval
        self.lost: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rushhpc-monitor-{rush.network_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.lost += self.rush.detect_lost_workers()
            except redis.RedisError as e:
                # Keep watching through Redis hiccups; the next round tries again.
                self.errors += 1
                log.warning("monitor of %s: Redis error (%s); retrying", self.rush.network_id, e)

"""The monitor: detection and reconciliation in a background thread, so nobody calls
`detect_lost_workers()` by hand; optionally it replaces lost workers.

It knows the manager only through the small `Supervised` protocol below.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol, Sequence

import redis

from rushhpc import defaults
from rushhpc.errors import RushError

log = logging.getLogger("rushhpc.manager.supervise")


class Supervised(Protocol):
    """What a monitor needs of a manager."""

    network_id: str

    def detect_lost_workers(self, poll_scheduler: bool | None = None) -> list[str]: ...

    def replace_workers(self, worker_ids: Sequence[str]) -> list[str]: ...


class Stepper(Protocol):
    """Something the monitor runs after detection every round (the adaptive scaler)."""

    def step(self) -> Any: ...


class Monitor:
    """Runs ``manager.detect_lost_workers()`` every ``interval`` seconds until stopped.

    The scheduler itself is asked less often (the launcher's adaptive poll
    interval), and early when a batch worker's heartbeat expired. With
    ``keep_workers=True`` each lost worker is replaced by a new one started the
    same way, at most ``restart_budget`` times in all.

    Example:
        >>> rush.start_monitor(interval=5, keep_workers=True, restart_budget=20)
        >>> rush.stop_monitor()
    """

    def __init__(self, manager: Supervised, interval: float = defaults.MONITOR_INTERVAL, keep_workers: bool = False,
                 restart_budget: int = defaults.RESTART_BUDGET, adapter: Stepper | None = None):
        if interval <= 0:
            raise RushError("monitor interval must be > 0 seconds")
        self.manager = manager
        self.interval = interval
        self.keep_workers = keep_workers
        self.restart_budget = restart_budget
        self.adapter = adapter
        self.lost: list[str] = []
        self.replacements: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rushhpc-monitor-{manager.network_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 30)

    def step(self) -> list[str]:
        """One round: detect, and replace what was lost while the budget lasts."""
        lost = self.manager.detect_lost_workers()
        self.lost += lost
        if lost and self.keep_workers:
            n = min(len(lost), self.restart_budget)
            if n < len(lost):
                log.warning("restart budget exhausted: %d lost worker(s) not replaced", len(lost) - n)
            if n:
                new = self.manager.replace_workers(lost[:n])
                self.restart_budget -= len(new)
                self.replacements += new
        if self.adapter is not None:
            self.adapter.step()
        return lost

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except (redis.RedisError, RushError, OSError) as e:
                # Keep watching through Redis and scheduler hiccups; the next round tries again.
                self.errors += 1
                log.warning("monitor of %s: %s; retrying", self.manager.network_id, e)

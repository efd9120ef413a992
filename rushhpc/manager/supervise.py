"""Supervision: replacing lost workers under a restart budget, and the monitor thread.

`Replacer` is the one replace-under-budget loop: lost worker ids in, replacements started
through the manager's `replace_workers` (the way the lost ones were started) while the budget
lasts, the budget decremented by what was started, what it could not replace said through a
callback. The monitor, the sweep engine and the Hydra launcher each use one.

`Monitor` runs detection and reconciliation in a background thread, so nobody calls
`detect_lost_workers()` by hand; optionally it replaces lost workers. It knows the manager
only through the small `Supervised` protocol below.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol, Sequence

import redis

from rushhpc import defaults
from rushhpc.errors import RushError

log = logging.getLogger("rushhpc.manager.supervise")


class Supervised(Protocol):
    """What a monitor needs of a manager."""

    network_id: str

    def detect_lost_workers(self, poll_scheduler: bool | None = None) -> list[str]: ...

    def replace_workers(self, worker_ids: Sequence[str]) -> list[str]: ...


class Replacer:
    """Replaces lost workers within a restart budget (the monitor's, a sweep's, the Hydra launcher's).

    ``replace`` starts one worker per lost id, the way it was started (`Rush.replace_workers`);
    ``start`` (optional) starts ``n`` fresh workers, for those gone without an id to replace or
    whose id ``replace`` did not restart. The budget counts the workers started. ``exhausted``
    names the budget in the words of the interface the user set it through; when given, a
    replacement cut short by the budget is said through ``say``.

    Example:
        >>> r = Replacer(rush.replace_workers, budget=2, exhausted="restart budget exhausted")
        >>> r.replace(["w1", "w2", "w3"])   # logs "restart budget exhausted: 1 lost worker(s) not replaced"
        ['w4', 'w5']
        >>> r.budget
        0
    """

    def __init__(self, replace: Callable[[Sequence[str]], list[str]], budget: int,
                 start: Callable[[int], list[str]] | None = None, exhausted: str | None = None,
                 say: Callable[[str], Any] = log.warning):
        self._replace = replace
        self._start = start
        self.budget = budget
        self.exhausted = exhausted
        self.say = say
        self.replaced: list[str] = []  # every worker this replacer started

    def grant(self, wanted: int) -> int:
        """How many of ``wanted`` replacements the budget allows now (nothing is taken yet)."""
        return max(0, min(wanted, self.budget))

    def replace(self, lost: Sequence[str], gone: int | None = None) -> list[str]:
        """Replace ``gone`` workers (default: one per lost id) while the budget lasts: the lost ids
        first (through ``replace``), the rest fresh (through ``start``). Returns the new ids."""
        lost = list(lost)
        wanted = len(lost) if gone is None else gone
        n = self.grant(wanted)
        if n < wanted and self.exhausted:
            self.say(f"{self.exhausted}: {wanted - n} lost worker(s) not replaced")
        if not n:
            return []
        new = self._replace(lost[:n]) if lost[:n] else []
        if self._start is not None and n > len(new):
            new += self._start(n - len(new))
        self.budget -= len(new)
        self.replaced += new
        return new


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
        self.replacer = Replacer(manager.replace_workers, restart_budget, exhausted="restart budget exhausted")
        self.adapter = adapter
        self.lost: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rushhpc-monitor-{manager.network_id}", daemon=True)

    @property
    def restart_budget(self) -> int:
        """Replacements left."""
        return self.replacer.budget

    @property
    def replacements(self) -> list[str]:
        """The workers the monitor started in place of lost ones."""
        return self.replacer.replaced

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval + defaults.MONITOR_STOP_WAIT)

    def step(self) -> list[str]:
        """One round: detect, and replace what was lost while the budget lasts."""
        lost = self.manager.detect_lost_workers()
        self.lost += lost
        if lost and self.keep_workers:
            self.replacer.replace(lost)
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

"""Adaptive workers: keep between ``minimum`` and ``maximum`` workers, following the queue.

`decide_scale` is a pure function (what the network looks like now -> how many workers to
submit and which idle ones to release); `Adapter` observes the network, applies the
decision through the manager, and remembers only what cannot be read from Redis (when each
worker became idle, failures in a row). The monitor thread runs it every round.

Rules:
- wanted = queued tasks + busy workers, clamped to [minimum, maximum];
- workers coming (launched, not registered yet: pending, held, starting jobs) count as
  present, so a slow scheduler never causes over-submission; at most ``backlog`` may be
  coming at once; new workers go in one launch (one array on SLURM/PBS);
- a worker idle (no running task) for ``idle_timeout`` seconds while nothing is queued is
  asked to terminate (never killed: no task is lost), down to ``minimum``;
- after ``max_failures`` failed submissions, or workers that ended without registering,
  in a row, adapting pauses itself with the reason (`status`), instead of looping.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

from rushhpc import defaults
from rushhpc.core.states import TaskState, WorkerState
from rushhpc.errors import RushConfigError, RushError
from rushhpc.network.view import Network

log = logging.getLogger("rushhpc.manager.adapt")


@dataclasses.dataclass(frozen=True)
class AdaptPolicy:
    """Bounds and timings of adaptive workers.

    Example:
        >>> AdaptPolicy(minimum=0, maximum=8, idle_timeout=60, backlog=4)
    """

    minimum: int = 0
    maximum: int = defaults.ADAPT_MAXIMUM
    idle_timeout: float = defaults.ADAPT_IDLE_TIMEOUT
    backlog: int | None = None  # most workers coming at once (None: maximum)
    max_failures: int = defaults.ADAPT_MAX_FAILURES

    def __post_init__(self) -> None:
        for name in ("minimum", "maximum", "max_failures"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise RushConfigError(f"adapt: {name} must be an integer >= 0, got {v!r}")
        if self.maximum < max(1, self.minimum):
            raise RushConfigError(f"adapt: maximum ({self.maximum}) must be >= 1 and >= minimum ({self.minimum})")
        if self.idle_timeout <= 0:
            raise RushConfigError(f"adapt: idle_timeout must be > 0 seconds, got {self.idle_timeout}")
        if self.backlog is not None and (not isinstance(self.backlog, int) or self.backlog < 1):
            raise RushConfigError(f"adapt: backlog must be a positive integer, got {self.backlog!r}")


@dataclasses.dataclass
class Observation:
    """What the adapter sees in one round."""

    queued: int
    running: list[str]  # registered, running workers
    busy: set[str]  # running workers with a running task
    coming: int  # launched by the adapter, not registered, not ended
    idle_since: dict[str, float]  # running worker -> since when it has had no task
    now: float


@dataclasses.dataclass
class ScaleDecision:
    submit: int = 0
    release: list[str] = dataclasses.field(default_factory=list)
    reason: str = ""


def decide_scale(policy: AdaptPolicy, obs: Observation) -> ScaleDecision:
    """How many workers to submit and which to release. Pure: no I/O.

    Example:
        >>> decide_scale(AdaptPolicy(0, 4), Observation(10, [], set(), 0, {}, 0.0)).submit
        4
    """
    present = len(obs.running) + obs.coming
    wanted = max(policy.minimum, min(policy.maximum, obs.queued + len(obs.busy)))
    backlog = policy.backlog if policy.backlog is not None else policy.maximum
    if wanted > present:
        n = min(wanted - present, max(0, backlog - obs.coming), policy.maximum - present)
        if n > 0:
            return ScaleDecision(submit=n, reason=f"{obs.queued} queued, {len(obs.busy)} busy, {present} present")
        return ScaleDecision(reason=f"backlog full ({obs.coming} coming)")
    if obs.queued == 0 and obs.coming == 0:
        idle = sorted((w for w in obs.running if w not in obs.busy and w in obs.idle_since
                       and obs.now - obs.idle_since[w] >= policy.idle_timeout), key=lambda w: obs.idle_since[w])
        spare = len(obs.running) - policy.minimum
        release = idle[: max(0, spare)]
        if release:
            return ScaleDecision(release=release, reason=f"idle for {policy.idle_timeout:g} s")
    return ScaleDecision()


class Adapter:
    """Applies `decide_scale` to one network each round; pauses after repeated failures.

    Example:
        >>> rush.adapt(queue_loop, minimum=0, maximum=16, idle_timeout=120, fun=objective)
        >>> rush.adapter.status()
        {'state': 'active', 'reason': '', 'launched': 16, ...}
    """

    def __init__(self, network: Network, policy: AdaptPolicy, launch: Callable[[int], list[str]],
                 release: Callable[[Sequence[str], str], None], ended: Callable[[], dict[str, int]] = dict):
        self.network = network
        self._ended = ended  # worker id -> exit code of processes the launchers saw end (local)
        self.policy = policy
        self._launch = launch
        self._release = release
        self.launched: list[str] = []
        self.released: list[str] = []
        self.idle_since: dict[str, float] = {}
        self.failures = 0
        self.paused = ""
        self.last = ScaleDecision()
        self._settled: set[str] = set()

    def observe(self) -> Observation:
        net, k = self.network, self.network.keys
        with net.connector.pipeline(transaction=False) as pipe:
            pipe.smembers(k.workers_in(WorkerState.RUNNING))
            pipe.smembers(k.workers)
            pipe.smembers(k.workers_in(WorkerState.LOST))
            pipe.smembers(k.workers_in(WorkerState.KILLED))
            running, registered, lost, killed = pipe.execute()
        running = sorted(running)
        with net.connector.pipeline(transaction=False) as pipe:
            for wid in running:
                pipe.scard(k.worker_tasks(wid))
            sizes = pipe.execute()
        queued = net.counts_by_state()[TaskState.QUEUED]
        now = time.monotonic()
        busy = {w for w, n in zip(running, sizes) if n}
        for w in running:
            if w in busy:
                self.idle_since.pop(w, None)
            else:
                self.idle_since.setdefault(w, now)
        for w in list(self.idle_since):
            if w not in running:
                del self.idle_since[w]
        # a launched worker stopped before it registered is in `workers` too: tell them apart
        unsettled = [w for w in self.launched if w not in self._settled and w in (lost | killed)]
        registered = set(registered) - set(net.never_started(unsettled))
        gone = lost | killed | set(self._ended())
        ended_unregistered = [w for w in self.launched if w not in registered and w in gone]
        coming = sum(1 for w in self.launched if w not in registered and w not in gone)
        self._count_starts(registered, ended_unregistered)
        return Observation(queued, running, busy, coming, dict(self.idle_since), now)

    def _count_starts(self, registered: set[str], failed: list[str]) -> None:
        for w in self.launched:
            if w in self._settled:
                continue
            if w in registered:
                self._settled.add(w)
                self.failures = 0
            elif w in failed:
                self._settled.add(w)
                self.failures += 1
                self._check_failures(f"worker {w} ended without registering")

    def _check_failures(self, what: str) -> None:
        if self.failures >= self.policy.max_failures and not self.paused:
            self.paused = (f"paused after {self.failures} failures in a row (last: {what}); fix the cause, then "
                           "call adapt() again")
            log.warning("adapt of %s %s", self.network.network_id, self.paused)
            self._store()

    def step(self) -> ScaleDecision:
        """One round: observe, decide, act (unless paused)."""
        obs = self.observe()
        if self.paused:
            return ScaleDecision(reason=self.paused)
        d = decide_scale(self.policy, obs)
        if d.submit:
            try:
                ids = self._launch(d.submit)
            except (RushError, OSError) as e:
                self.failures += 1
                log.warning("adapt of %s: submission of %d worker(s) failed: %s", self.network.network_id, d.submit, e)
                self._check_failures(f"submission failed: {e}")
            else:
                self.launched += ids
                log.info("adapt of %s: started %d worker(s) (%s)", self.network.network_id, len(ids), d.reason)
        if d.release:
            self._release(d.release, f"released by adapt: {d.reason}")
            self.released += d.release
            for w in d.release:
                self.idle_since.pop(w, None)
            log.info("adapt of %s: released %s (%s)", self.network.network_id, ", ".join(d.release), d.reason)
        if d.submit or d.release:
            self.last = d
            self._store()
        return d

    def status(self) -> dict[str, Any]:
        """State (active or paused), reason, counts and the last decision."""
        return {"state": "paused" if self.paused else "active", "reason": self.paused,
                "minimum": self.policy.minimum, "maximum": self.policy.maximum, "launched": len(self.launched),
                "released": len(self.released), "failures_in_a_row": self.failures,
                "last_decision": {"submit": self.last.submit, "release": self.last.release, "reason": self.last.reason}}

    def _store(self) -> None:
        import orjson

        self.network.connector.set(self.network.keys.adapt, orjson.dumps(self.status()).decode())

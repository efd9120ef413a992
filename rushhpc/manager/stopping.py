"""How a manager stops workers (`stop_workers`) and finds the lost ones (`detect_lost_workers`).

A kill marks the workers killed (their running tasks fail), pushes a kill request for each
heartbeat and kills the processes or jobs through their launchers; a terminate asks them to
end after their task. Detection marks lost the workers whose process ended or heartbeat
expired, and asks the scheduler about batch jobs through the `Reconciler`.
`rushhpc.manager.rush.Rush` holds a `Stopper` and forwards its two public methods.
"""

from __future__ import annotations

import logging
import signal
from typing import Callable, Sequence

from rushhpc.core.records import LaunchRecord
from rushhpc.core.states import LostReason, WorkerState
from rushhpc.errors import RushConfigError, RushError, RushNetworkLostError
from rushhpc.manager.reconcile import Reconciler
from rushhpc.manager.starting import Launchers
from rushhpc.network.view import Network

log = logging.getLogger("rushhpc")


class Stopper:
    """Stops the workers of one network and detects the lost ones.

    ``reset_here`` says whether this manager's own reset deleted the network (then nothing
    runs in it, and detection finds nothing).

    Example:
        >>> Stopper(network, launchers, reconciler, lambda: False).stop_workers(type="terminate")
    """

    def __init__(self, network: Network, launchers: Launchers, reconciler: Reconciler, reset_here: Callable[[], bool]):
        self.network = network
        self.launchers = launchers
        self.reconciler = reconciler
        self.reset_here = reset_here

    def stop_workers(self, type: str = "kill", worker_ids: Sequence[str] | str | None = None) -> list[str]:
        """Stop running workers. ``"terminate"``: each finishes its task, then ends.
        ``"kill"``: marked killed (their running tasks fail with "worker was killed"),
        then killed through their process handle, heartbeat or scheduler. Returns the ids
        acted on. Works on workers another manager started (the records are in Redis).

        Example:
            >>> rush.stop_workers(type="terminate")
            >>> rush.stop_workers(worker_ids=["w-3f9a1c0d2b7e"])
        """
        if type not in ("kill", "terminate"):
            raise RushError(f"type must be 'kill' or 'terminate', got {type!r}")
        if isinstance(worker_ids, str):
            worker_ids = [worker_ids]
        if worker_ids is not None:
            self.check_known(list(worker_ids))
        running = set(self.network.running_worker_ids)
        pending = set(self.network.worker_ids_in(WorkerState.PENDING))
        targets = list(worker_ids) if worker_ids is not None else sorted(running | pending)
        if type == "terminate":
            acted = [w for w in targets if w in running]
            self.network.request_terminate(acted)
            return acted
        msg = "worker was killed"
        changed = self.network.mark_workers(WorkerState.KILLED, [(w, LostReason.KILLED, msg) for w in targets
                                                                        if w in running], retry=False)
        changed += self.network.mark_workers(WorkerState.KILLED, [(w, LostReason.KILLED, msg) for w in targets
                                                                         if w in pending],
                                             retry=False, source=WorkerState.PENDING)
        self.network.send_kill(targets)
        by_launcher: dict[str, list[LaunchRecord]] = {}
        for rec in self.network.records(targets).values():
            by_launcher.setdefault(rec.launcher, []).append(rec)
        for name, recs in by_launcher.items():
            self.launchers.get(name).kill(recs)
        return changed

    def check_known(self, worker_ids: list[str]) -> None:
        """Refuse worker ids this network never had (registered, pending or launched), naming its workers."""
        k = self.network.keys
        with self.network.connector.pipeline(transaction=False) as pipe:
            for wid in worker_ids:
                pipe.sismember(k.workers, wid)
                pipe.hexists(k.launches, wid)
            seen = pipe.execute()
        unknown = [w for i, w in enumerate(worker_ids) if not (seen[2 * i] or seen[2 * i + 1])]
        if not unknown:
            return
        known = sorted(set(self.network.connector.smembers(k.workers)) | set(self.network.connector.hkeys(k.launches)))
        listed = (f"its workers: {', '.join(known[:10])}" + (f" and {len(known) - 10} more" if len(known) > 10 else "")
                  if known else "it has no worker")
        raise RushConfigError(
            f"no worker {', '.join(unknown[:10])} in network {self.network.network_id} ({listed}); rush.worker_info "
            f"(or `rushhpc workers {self.network.network_id}`) lists them"
        )

    def detect_lost_workers(self, poll_scheduler: bool | None = None) -> list[str]:
        """Find workers that are gone and mark them lost: a heartbeat expired, a local
        process ended, or (batch workers) the scheduler's view says so (see
        `rushhpc.manager.reconcile`). Their pending tasks go back to the queue; their running
        tasks are requeued while retries are left (``max_retries``), else failed.
        Returns the ids found lost by this call.

        The scheduler is asked at most once per call, for all jobs, and only when its
        poll interval has passed or a batch worker's heartbeat expired
        (``poll_scheduler=True`` forces, ``False`` skips).

        Example:
            >>> lost = rush.detect_lost_workers()
        """
        with self.launchers.lock:  # one detection at a time (the monitor thread and the caller)
            lost: list[str] = []
            dead = self.launchers.ended()
            if dead:
                with self.network.connector.pipeline(transaction=False) as pipe:
                    pipe.smembers(self.network.keys.workers_in(WorkerState.RUNNING))
                    pipe.smembers(self.network.keys.workers)
                    running, registered = pipe.execute()
                items = []
                for wid, code in dead.items():
                    if wid in running:
                        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
                        tail = self.launchers.stderr_tail(wid, 5)
                        log.warning("worker %s process ended (%s) while running; stderr tail:\n%s", wid, how, tail)
                        items.append((wid, LostReason.PROCESS_DIED, f"worker {wid} was lost (process ended: {how})"))
                lost += self.network.mark_workers(WorkerState.LOST, items, retry=True)
                # settled: not looked at again (unregistered ones stay for wait_for_workers' error)
                settled = [w for w in dead if w in registered]
                for launcher in self.launchers.all():
                    launcher.forget(settled)
            out, expired_managed, n_active, ending, exists = self.network.protocol.detect_lost()
            if not exists:
                if self.reset_here():
                    return lost  # this manager deleted it: nothing is running in it
                raise self.network_lost()
            for wid, failed, requeued in out:
                log.warning("worker %s lost (heartbeat expired): %s task(s) failed, %s requeued", wid, failed, requeued)
                lost.append(wid)
            if poll_scheduler is not False and n_active:
                # urgent: a batch worker went silent, or ended by itself (a SIGTERM from scancel, a
                # time limit) and its job's final state and reason are to be read within a poll
                lost += self.reconciler.run(force=bool(poll_scheduler), urgent=bool(expired_managed or ending))
            return lost

    def kill_starting(self) -> set[str]:
        """Kill the workers still starting (launched, never registered: a reset deletes their network)
        through their launchers; returns the ids of every launched worker.

        Example:
            >>> stopper.kill_starting()
            {'w-1a2b', 'w-3c4d'}
        """
        records = self.network.records()
        launched = set(records)
        ids = sorted(launched)
        starting = [w for w, state in zip(ids, self.network.worker_field(ids, "state")) if state is None]
        by_launcher: dict[str, list[LaunchRecord]] = {}
        for wid in starting:
            by_launcher.setdefault(records[wid].launcher, []).append(records[wid])
        for name, recs in by_launcher.items():
            try:
                self.launchers.get(name).kill(recs)
            except (RushError, OSError) as e:  # e.g. no plan for that launcher here: they find their network gone
                log.warning("reset: could not kill %d starting %s worker(s): %s", len(recs), name, e)
        return launched

    def network_lost(self) -> RushNetworkLostError:
        """The error for a network gone from Redis (deleted by this manager's reset, or lost)."""
        if self.reset_here():
            return RushNetworkLostError(
                f"network {self.network.network_id!r} was deleted by this manager's reset(): the tasks pushed before it "
                "are gone. Push tasks or start workers again to use the network (that creates it again)."
            )
        return RushNetworkLostError(
            f"network {self.network.network_id!r} is gone from Redis at {self.network.config.address}: Redis restarted without "
            "persistence or lost its data (configure appendonly yes), or the network was reset by another "
            "manager. Results fetched before are in your tables; the rest is lost."
        )

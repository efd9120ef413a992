"""The body of ``python -m rushhpc worker``: `run_worker` runs one launched worker to its end.

It reads where Redis is and the signed start blob (`rushhpc.worker.payload`), registers a
`WorkerSession`, hands the loop its `RushWorker` facade, and records how the worker ended:
terminated (the loop returned), failed (it raised), or lost (SIGTERM from a scheduler or a
kill, decided later by the scheduler's view). Launchers run it by this command line; a
launcher that runs Python functions in its jobs (submitit) runs `run_worker` itself.
"""

from __future__ import annotations

import signal
import sys
import traceback

import redis

from rushhpc import defaults
from rushhpc.core.liveness import heartbeat_settings
from rushhpc.core.spec import WorkerSpec
from rushhpc.core.states import LostReason, Release
from rushhpc.errors import RushConfigError
from rushhpc.launchers.registry import job_environment
from rushhpc.network.logs import install as install_log_handlers
from rushhpc.store.connection import env_config, read_credentials
from rushhpc.worker.api import worker_over
from rushhpc.worker.payload import read_start
from rushhpc.worker.session import WorkerSession, WorkerStopped

# exit codes of a worker process besides 0 and its SystemExit's: the loop raised; its network is gone
EXIT_FAILED = 1
EXIT_NETWORK_GONE = 3


def _on_sigterm(signum, frame):  # noqa: ANN001
    # Once only: a batch worker gets SIGTERM twice (from slurmstepd or PBS, and forwarded by its batch
    # shell), and a second SystemExit raised while the first is handled cut its lost/sigterm verdict
    # short, leaving it `running` until its heartbeat key expired (issue 20, defect 9).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _exited(session: WorkerSession, spec: WorkerSpec, e: SystemExit) -> int:
    """Record a loop that raised SystemExit: lost when it came from SIGTERM, else failed."""
    code = e.code if isinstance(e.code, int) else EXIT_FAILED
    if code == 128 + signal.SIGTERM:
        # cancelled, preempted, or a time limit without time to finish: the scheduler's
        # view (reconciliation) later replaces "sigterm" with the precise reason. A batch
        # worker's tasks go back uncounted until that verdict says whether they count.
        release = Release.HOLD if spec.managed and job_environment() is not None else Release.RETRY
        session.end_lost(LostReason.SIGTERM.value, f"worker {session.worker_id} received SIGTERM", release)
    else:
        session.end_failed(f"SystemExit({e.code})")
    return code


def run_worker(spec: WorkerSpec) -> int:
    """Run one worker to its end; returns the process exit code.

    Example (what ``python -m rushhpc worker`` does):
        >>> sys.exit(run_worker(WorkerSpec("sweep-1", start_id, credentials="~/.rushhpc/runs/sweep-1/credentials.json")))
    """
    cfg = read_credentials(spec.credentials) if spec.credentials else env_config()
    if cfg is None:
        raise RushConfigError(
            "the worker does not know where Redis is: pass --credentials FILE or set RUSHHPC_REDIS_URL"
        )
    # a worker process always has a heartbeat (defaults when none was given)
    period, expire = heartbeat_settings(spec.heartbeat_period, spec.heartbeat_expire)
    start = read_start(cfg, spec)  # before registering: a bad start leaves no failed worker behind
    session = WorkerSession(
        spec.network_id, config=cfg, worker_id=spec.worker_id, heartbeat_period=period,
        heartbeat_expire=expire, launcher=spec.launcher, watch_pid=spec.watch_pid,
        walltime=spec.walltime, walltime_margin=spec.walltime_margin, deferred_replies=True,
        managed=spec.managed, create_network=False,  # launched: a reset network stays gone
    )
    wid = session.worker_id
    # SLURM's pre-timeout signal (USR2): finish the current task, then end as terminated.
    signal.signal(signal.SIGUSR2, lambda *_: session.stop_taking_tasks())
    # SIGTERM (scancel, qdel, kill): end now as lost; running tasks are retried or fail.
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    try:
        thresholds = start["options"].get("log_thresholds")
        install_log_handlers(cfg.client(), session.net.keys.log, wid,
                             defaults.LOG_THRESHOLDS if thresholds is None else thresholds)
        start["worker_loop"](worker_over(session), **start["args"])
    except SystemExit as e:
        code = _exited(session, spec, e)
    except WorkerStopped as e:
        print(f"rushhpc worker {wid}: {e}", file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the worker records every failure, Ctrl-C included
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        session.end_failed(tb)
        code = EXIT_FAILED
    else:
        session.end_terminated()
        try:
            if not session.registered():
                # its record vanished: the network was reset, or Redis restarted without persistence
                print(f"rushhpc worker {wid}: network {spec.network_id!r} is gone from Redis "
                      "(reset, or a Redis restart without persistence); exiting", file=sys.stderr)
                code = EXIT_NETWORK_GONE
        except redis.RedisError:
            code = EXIT_NETWORK_GONE
    finally:
        try:
            session.close()  # stops the heartbeat, reads the last deferred reply
        except redis.RedisError as e:
            print(f"rushhpc worker {wid}: closing the connection: {e}", file=sys.stderr)
    return code

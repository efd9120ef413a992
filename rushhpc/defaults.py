"""The one table of defaults. Every tunable number rushhpc uses without being told lives here.

Modules import these names instead of writing the number again, so changing a default is
one edit and `docs/` can point at one place.
"""

from __future__ import annotations

# Heartbeats: generous on purpose. An HPC node stalls for seconds (GC, swapping, a slow
# parallel file system) and a false "lost" costs a finished evaluation.
HEARTBEAT_PERIOD = 10.0  # seconds between beats
HEARTBEAT_EXPIRE = 60.0  # seconds of silence before a worker is lost (at least 3 x period)
HEARTBEAT_REGISTER_WAIT = 120.0  # seconds a heartbeat process waits for its worker to register
HEARTBEAT_MAX_REDIRECTS = 5  # MOVED/ASK replies a heartbeat follows for one command before it counts as an error
HEARTBEAT_GROUP_GRACE = 5.0  # seconds a dead worker's processes get from its heartbeat between SIGTERM and SIGKILL

START_WORKER_TIMEOUT = 60.0  # wait_for_workers
MAX_OBJECT_SIZE = 512 * 1024**2  # a worker configuration larger than this goes to large_objects_path
LOG_THRESHOLDS = {"rushhpc": "INFO"}  # logger -> level forwarded from workers to the network's log
MAX_LOG_ENTRIES = 10_000  # the log stream is capped (approximately) at this length

# Redis client connections one worker holds (its own, its heartbeat process's, its log
# handler's): what a launch checks against the server's maxclients.
CONNECTIONS_PER_WORKER = 3

# queue_loop: tasks claimed per pop. 1 = one at a time; more saves Redis a round trip per
# task for short tasks, but a worker then holds tasks others could run (uneven tails).
QUEUE_PREFETCH = 1

TERMINATE_CHECK_INTERVAL = 0.02  # seconds between a worker's reads of its terminate flag
DURATION_WINDOW = 25  # finished tasks a batch worker takes its typical task duration from (walltime)

# Batch schedulers
STARTUP_GRACE = 300.0  # seconds a running job may take to register its worker
POLL_INTERVAL = 30.0  # seconds between scheduler queries (the floor of the adaptive interval)
MAX_POLL_INTERVAL = 180.0  # the adaptive interval backs off up to this while nothing changes
VANISH_GRACE = 60.0  # a job absent from every answer for this long (and two polls) has vanished
MISSES_FOR_VANISHED = 2
SUBMIT_TIMEOUT = 120.0  # seconds a scheduler command may take
MAX_ARRAY_SIZE = 1000  # when the scheduler does not say

MONITOR_INTERVAL = 5.0
RESTART_BUDGET = 10

# Task transfer
FETCH_CHUNK = 20_000  # task keys per fetch script call: bounds how long Redis is busy
PUSH_CHUNK = 5_000

CONNECT_TIMEOUT = 5.0  # seconds to reach Redis

# Sweeps
# Design points the sweep queues ahead of its workers (at least the first, else the second per worker): a
# worker that finishes takes its next point at once instead of waiting for the manager's next cycle (5-10 ms),
# which at 2 per worker starved workers of short evaluations (bench/command_eval.py).
SWEEP_LOOKAHEAD_MIN = 8
SWEEP_LOOKAHEAD_PER_WORKER = 4
# A sweep file's defaults (rushhpc/sweeps/config/schema.py fills them in; docs/sweeps.md lists them). A sweep's
# workers.start_timeout is START_WORKER_TIMEOUT, the Python API's: one number (it was 120 s in sweeps only).
SWEEP_METRIC = "y"
SWEEP_DIRECTION = "minimize"
SWEEP_STRATEGY = "random"
SWEEP_WORKERS = 1  # workers.n
SWEEP_LAUNCHER = "local"
SWEEP_REDIS = "embedded"
SWEEP_RETRIES = 0  # an evaluation that raised is not run again
SWEEP_STOP_GRACE = 60.0  # seconds running evaluations get to finish when the sweep stops
SWEEP_ADAPT_MIN = 0  # workers.adapt.min
SWEEP_ADAPT_IDLE_TIMEOUT = 60.0  # seconds, workers.adapt.idle_timeout
SWEEP_PROGRESS = "auto"
SWEEP_PROGRESS_INTERVAL = 10.0  # seconds between two plain progress lines
SWEEP_OUTPUT_DIR = "runs"  # output: runs/<the sweep file's name>
SWEEP_NAME_CHARS = 60  # a sweep's name (and its networks' prefix) is cut to this
SWEEP_GRID_RESOLUTION = 5  # values per float parameter of a grid
SWEEP_MAX_GRID_POINTS = 1_000_000  # a larger grid is refused before anything starts
SWEEP_TPE_STARTUP_TRIALS = 10  # random proposals before TPE models
SWEEP_ASHA_ETA = 3  # asha: each rung keeps the top 1/eta of its results for the next
SWEEP_ASHA_TPE_MIN_RESULTS = 10  # asha sampler tpe: a rung models new configurations from this many results (or params+1)
SWEEP_ASHA_TPE_RANDOM = 1 / 3  # asha sampler tpe: the share of new configurations drawn at random anyway (BOHB's)
SWEEP_CHECKPOINT_INTERVAL = 30.0  # seconds between two writes of results.csv and state.json while running
SWEEP_HEALTH_INTERVAL = 2.0  # seconds between two looks at the workers' states (replacements)
SWEEP_DETECT_INTERVAL = 1.0  # seconds between two lost-worker detections

# Launchers and reconciliation (rushhpc/launchers/, rushhpc/manager/reconcile.py)
SCHEDULER_QUERY_TIMEOUT = 60.0  # seconds a status or kill command may take (squeue, sacct, scontrol, scancel, qstat, qdel)
SCHEDULER_LIMITS_TIMEOUT = 30.0  # seconds a question about the site may take (scontrol show config/node, sacctmgr)
# A batch worker stops taking tasks this long before its walltime, so that it ends on its own terms: 10 % of
# the walltime, at least 5 s and at most 300 s; the signal margin of a job without a walltime is 60 s.
WALLTIME_MARGIN_FRACTION = 0.1
WALLTIME_MARGIN_MIN = 5
WALLTIME_MARGIN_MAX = 300
WALLTIME_MARGIN_UNLIMITED = 60
SRUN_KILL_WAIT = 5.0  # seconds an srun task has to end after its kill request before it is SIGKILLed
SSH_CONNECT_TIMEOUT = 10.0  # ssh's ConnectTimeout
SSH_LAUNCH_TIMEOUT = 60.0  # seconds one ssh that starts workers may take
SSH_PARALLEL = 4  # ssh connections at once per host
SSH_KILL_WAIT = 3.0  # seconds the remote workers have to end on their kill request before SIGKILL
SSH_COMMAND_TIMEOUT = 30.0  # seconds a short ssh command may take (a stderr tail; beyond kill_wait for a kill)
NVIDIA_SMI_TIMEOUT = 20.0  # seconds: a wedged GPU driver must not hang a start
POLL_BACKOFF = 1.5  # the reconciler's poll interval grows by this factor while nothing changes
URGENT_POLL_GAP = 1.0  # seconds: an urgent poll (a worker seems lost) waits at least this since the last

# Supervision, adaptive workers, the manager's display, plots, the Hydra launcher (rushhpc/manager/supervise.py,
# adapt.py, display.py, rushhpc/ui/plot.py, hydra_plugins/rushhpc_launcher/)
MONITOR_STOP_WAIT = 30.0  # seconds beyond one round that stop_monitor waits for the monitor's thread to end
ADAPT_MAXIMUM = 1  # an AdaptPolicy's maximum workers when none is given
ADAPT_IDLE_TIMEOUT = 60.0  # seconds a worker has no task, with nothing queued, before adapt releases it
ADAPT_MAX_FAILURES = 3  # failed submissions or starts in a row before adapting pauses itself
SUMMARY_BEST_MAX_TASKS = 200_000  # above this many finished tasks repr(rush) does not look for a sweep's best
PLOT_MIN_BAR = 0.004  # the narrowest bar of rushhpc plot's worker timeline, as a share of the run: about 3 pixels
HYDRA_CHECK_INTERVAL = 1.0  # seconds between lost-worker detections (and job_timeout checks) while a batch runs
HYDRA_MAX_POLL = 0.2  # seconds: the longest sleep between two reads of a Hydra batch's task states
HYDRA_STOP_GRACE = 10.0  # seconds idle workers get to end by themselves at a multirun's end before they are killed

# The worker (rushhpc/worker/): its one Redis connection retries with exponential backoff through a Redis
# restart (about 16 s in all with these), then the call fails and the worker ends
WORKER_RETRIES = 8  # retries of one command
WORKER_RETRY_BASE = 0.05  # seconds before the first retry (doubling)
WORKER_RETRY_CAP = 5.0  # seconds at most between two retries
HEARTBEAT_STOP_WAIT = 5.0  # seconds a closing worker waits for its heartbeat process after SIGTERM, then SIGKILL
FAILURE_MESSAGE_CHARS = 4000  # the end of a failed worker's traceback kept as its reason
COMMAND_GRACE = 10.0  # seconds a program (command_loop, a sweep's command objective) has between SIGTERM and SIGKILL

# The manager and the network view (rushhpc/manager/rush.py, starting.py, waiting.py, stopping.py; rushhpc/network/)
WAIT_WORKERS_POLL = 0.05  # seconds between two looks of wait_for_workers at the registered workers
WAIT_TASKS_POLL_MIN = 0.005  # seconds: wait_for_tasks first reads the task states this soon, doubling ...
WAIT_TASKS_POLL_MAX = 0.1  # ... up to this
WAIT_DETECT_INTERVAL = 1.0  # seconds between two lost-worker detections while a wait runs (and no monitor does)
FETCH_NEW_POLL = 0.01  # seconds between two reads of fetch_new_tasks(timeout=...) while nothing is new
FETCH_FIRST_CHUNK = 1_000  # finished tasks the first call of a fetch reads (covers most incremental fetches)
FETCH_PIPELINE_CHUNK = 5_000  # the rest, in chunks read one request ahead (at most FETCH_CHUNK)
KILL_REQUEST_TTL = 3600  # seconds a kill request waits on a worker's kill list for its heartbeat to read it
SCAN_BATCH = 1_000  # keys per SCAN step, and per UNLINK, when networks are listed or one is deleted

# Redis servers: `rushhpc redis start|stop` (rushhpc/server/service.py, tls.py, ports.py, binary.py) and the
# embedded one (rushhpc/server/embedded.py)
REDIS_START_TIMEOUT = 15.0  # seconds `rushhpc redis start` waits for redis-server to answer PING (--timeout)
REDIS_STOP_TIMEOUT = 30.0  # seconds `rushhpc redis stop` waits after SIGTERM (it writes its AOF) (--timeout)
REDIS_KILL_WAIT = 5.0  # seconds to wait for a redis-server to end after SIGTERM (one that never answered) or SIGKILL
REDIS_PORT_ATTEMPTS = 5  # ports tried when the free one is taken between the check and redis-server's bind
REDIS_FREE_PORT_TRIES = 50  # ports the system offers on loopback before one every bind address takes too
REDIS_BINARY_PROBE_TIMEOUT = 20.0  # seconds for `redis-server --version` and the TLS probe (a cold shared FS)
REDIS_TLS_CA_DAYS = 3650  # a generated CA's validity (kept across restarts: clients keep trusting it)
REDIS_TLS_CERT_DAYS = 825  # a generated server or client certificate's validity (Apple's TLS maximum)
REDIS_TLS_RENEW_DAYS = 30  # a generated certificate valid for fewer days than this is made again at start
EMBEDDED_REDIS_START_TIMEOUT = 10.0  # seconds the embedded redis-server has to answer PING, per port tried
REDIS_START_PING_TIMEOUT = 0.5  # seconds one PING of a starting redis-server may take (asked again until the start timeout)
REDIS_PING_TIMEOUT = 2.0  # seconds the PING of `rushhpc redis status` (or of a server started on another node) may take
REDIS_START_POLL = 0.02  # seconds between two looks at a starting redis-server (its pid file, its first PING)
REDIS_WAIT_POLL = 0.05  # seconds between two looks at a redis-server that did not answer yet or was asked to end

# Redis clients and connection checks (rushhpc/store/: connection.py, diagnostics.py, wire.py, protocol.py)
CLIENT_HEALTH_CHECK_INTERVAL = 30  # seconds a pooled connection may sit idle before redis-py PINGs it on its next use
CLIENT_RETRIES = 12  # retries of one manager command through a Redis restart or a dropped connection (about 20 s) ...
CLIENT_RETRY_BASE = 0.05  # ... the first after this many seconds, doubling ...
CLIENT_RETRY_CAP = 2.0  # ... up to this many seconds between two
PROBE_TIMEOUT = 5.0  # seconds a connection check (one PING, no retry: RedisConfig.probe_client) may take
PORT_PROBE_TIMEOUT = 2.0  # seconds a raw TCP look at a port may take (is anything listening, does it speak RESP)
CLUSTER_MAX_REDIRECTS = 100  # MOVED followed, or ASK/TRYAGAIN waited out, for one command of a worker
CLUSTER_MIGRATION_WAIT = 0.05  # seconds between a worker's tries while a slot is being migrated (about 5 s in all)
CLUSTER_RELOCATE_TIMEOUT = 30.0  # seconds a worker waits for a replica to take over a dead primary's slot
WORKER_INFO_CHUNK = 500  # workers per pipelined round trip when the workers' hashes are read (worker_info)


def heartbeat_expire(period: float | None = None) -> float:
    """A worker's heartbeat expiry when none is set: `HEARTBEAT_EXPIRE`, and at least 3 beats of ``period``.

    Example:
        >>> heartbeat_expire(), heartbeat_expire(30)
        (60.0, 90.0)
    """
    return max(HEARTBEAT_EXPIRE, 3 * (HEARTBEAT_PERIOD if period is None else float(period)))

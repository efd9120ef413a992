"""The structured config of ``hydra/launcher=rushhpc``, registered in Hydra's ConfigStore.

Every field can be set on the command line (``hydra.launcher.n_workers=8``) or in a
``hydra/launcher`` config of the application. See docs/hydra.md.
"""

# No "from __future__ import annotations" here: Hydra's plugin scan runs this module before it is in
# sys.modules, and dataclasses then cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Dict

from hydra.core.config_store import ConfigStore


@dataclass
class RushhpcLauncherConf:
    _target_: str = "hydra_plugins.rushhpc_launcher.rushhpc_launcher.RushhpcLauncher"

    # How many workers, started once on the first launch of the multirun and reused by every batch.
    # null: as many as the first batch has jobs (local workers: at most the number of CPUs).
    n_workers: int | None = None
    # A rushhpc launcher: local, slurm, pbs, submitit, ssh, or one registered by a third party.
    worker_type: str = "local"
    # Options of that launcher (rushhpc's launcher_options), e.g. {partition: compute, time: "02:00:00"}.
    launcher_options: Dict[str, Any] = field(default_factory=dict)

    # Where Redis is. null: rush_plan / RUSHHPC_CONFIG / RUSHHPC_REDIS_URL, else a private embedded
    # Redis on 127.0.0.1 (good for local workers and one node); "embedded": that one in any case.
    # Never put a password in the URL: Hydra
    # writes this config into every job's .hydra/hydra.yaml. Use password_file (a 0600 file).
    redis_url: str | None = None
    password_file: str | None = None
    # The rushhpc network id; null: hydra-<job name>-<random>.
    network: str | None = None

    # Worker heartbeats (null: rushhpc's defaults, 10 s and 60 s).
    heartbeat_period: float | None = None
    heartbeat_expire: float | None = None
    # Seconds local workers may take to register (null: rushhpc's default, 60 s).
    start_worker_timeout: float | None = None

    # How often a job whose worker was lost (heartbeat expired, node died, job cancelled) is run again.
    max_retries: int = 0
    # Start a new worker for each lost one, at most restart_budget in the whole multirun.
    replace_lost_workers: bool = True
    restart_budget: int = 10  # rushhpc.defaults.RESTART_BUDGET, written out: Hydra's plugin scan imports no rushhpc
    # Seconds a job may run; a job over it fails with that reason, its worker is killed and replaced.
    job_timeout: float | None = None
    # Keep the network (tasks, worker table, log) in Redis after the multirun, for `rushhpc tasks` etc.
    keep_network: bool = False


ConfigStore.instance().store(
    group="hydra/launcher",
    name="rushhpc",
    node=RushhpcLauncherConf,
    provider="rushhpc",
)

"""A small Hydra application for the launcher tests.

    python app.py -m lr=1e-4,1e-3 hydra/launcher=rushhpc hydra.launcher.n_workers=2

Each job writes result.json into its output directory and returns it: score, pid and ppid of the
worker process, Hydra's job num and id, the SLURM job id if any. ``fail=true`` raises, ``crash=true``
SIGKILLs the worker, ``+crash_marker=PATH`` does so only when PATH does not exist yet (and creates it).
"""

import json
import os
import signal
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from scoring import score


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    if cfg.sleep:
        time.sleep(cfg.sleep)
    marker = cfg.get("crash_marker")  # crash the first time only
    if cfg.crash or (marker and not Path(marker).exists()):
        if marker:
            Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.fail:
        raise ValueError(f"bad lr {cfg.lr}")
    job = HydraConfig.get().job
    out = {"score": score(cfg.lr, cfg.batch_size), "pid": os.getpid(), "ppid": os.getppid(), "job_num": job.num,
           "job_id": str(job.id), "slurm_job": os.environ.get("SLURM_JOB_ID")}
    (Path(HydraConfig.get().runtime.output_dir) / "result.json").write_text(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

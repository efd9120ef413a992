"""Drive RushhpcLauncher directly, as Hydra's multirun does, and print every JobReturn as JSON.

    python launch.py '{"overrides": ["hydra/launcher=rushhpc", ...], "batches": [[["lr=0.1"], ["fail=true"]]]}'

Hydra's sweeper raises on the first failed job; calling the launcher the way the sweeper does
shows what it returns for each job, failed ones included, and lets one launcher run several
batches (its workers are started once).
"""

import json
import sys
import time
from pathlib import Path

from hydra._internal.callbacks import Callbacks
from hydra._internal.hydra import Hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, RunMode

HERE = Path(__file__).resolve().parent


def describe(ret) -> dict:
    d = {"status": ret.status.name, "overrides": list(ret.overrides or []), "working_dir": ret.working_dir,
         "task_name": ret.task_name}
    if ret.hydra_cfg is not None:
        d["job_num"] = ret.hydra_cfg.hydra.job.num
        d["job_id"] = str(ret.hydra_cfg.hydra.job.id)
    if ret.status == JobStatus.COMPLETED:
        d["value"] = dict(ret.return_value)
    else:
        exc = ret._return_value
        d["error_type"] = type(exc).__name__
        d["error"] = str(exc)
        d["cause"] = str(exc.__cause__) if exc.__cause__ is not None else None
    return d


def main() -> None:
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, str(HERE))
    import app

    hydra_ = Hydra.create_main_hydra_file_or_module(calling_file=str(HERE / "app.py"), calling_module=None,
                                                    config_path="conf", job_name="app")
    cfg = hydra_.compose_config("config", spec["overrides"], run_mode=RunMode.MULTIRUN, with_log_configuration=True)
    HydraConfig.instance().set_config(cfg)
    context = HydraContext(config_loader=hydra_.config_loader, callbacks=Callbacks(cfg))
    launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=app.main.__wrapped__,
                                                       config=cfg)
    out, idx = [], 0
    for batch in spec["batches"]:
        t0 = time.monotonic()
        rets = launcher.launch(batch, initial_job_idx=idx)
        idx += len(batch)
        out.append({"seconds": time.monotonic() - t0, "returns": [describe(r) for r in rets]})
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

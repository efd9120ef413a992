"""`RushhpcLauncher`: the Hydra launcher that runs each job of a multirun as a rushhpc task.

Workers are started once, on the first `launch` of a multirun, and serve every batch; each
job is pushed as a task and the batch's `JobReturn` objects come back in job order as the
workers report them. The work is in the private `_core` module, imported on first launch,
so that Hydra's plugin scan stays fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from ._core import Session

log = logging.getLogger(__name__)


class RushhpcLauncher(Launcher):
    """Runs Hydra jobs on rushhpc workers (local processes, SLURM or PBS jobs, ...).

    Its parameters are the fields of `hydra_plugins.rushhpc_launcher.config.RushhpcLauncherConf`.

    Example:
        $ python app.py -m lr=1e-4,1e-3 hydra/launcher=rushhpc hydra.launcher.worker_type=slurm \\
              hydra.launcher.n_workers=4
    """

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in params.items()
        }
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.session: "Session" | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        return _core.launch(self, job_overrides, initial_job_idx)

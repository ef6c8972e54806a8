"""``hydra/sweeper=tune``: Hydra's Sweeper interface over a current Optuna (ask/tell), for ``make tune``.

Hydra finds sweepers in the ``hydra_plugins`` package; the work is ``grft_app.tune.driver``. Jobs go
through whatever launcher the multirun names (basic, local, slurm), so trials run in parallel
where the launcher does (``hydra.sweeper.parallel``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper


class TuneSweeper(Sweeper):
    def __init__(self, params: dict | None = None, **options: Any):
        from grft_app.tune.driver import StudyOptions

        super().__init__()
        self.params = dict(params or {})
        self.options = StudyOptions(**options)
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        from grft_app.tune.driver import run_study

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, Path(str(self.config.hydra.sweep.dir)) / "multirun.yaml")
        return run_study(self.config, self.options, overrides, parser, self._launch)

    def _launch(self, batch: list[list[str]]):
        self.validate_batch_is_legal(batch)
        returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        self.job_idx += len(batch)
        return returns

"""Train one task: `python run.py dataset=cub selection=row k=2` (Hydra; `--help` lists groups).

With no arguments it runs the embedded offline default (digits transfer, GRFT vs linear vs full).
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from grft.lit.settings import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from grft.lit.app import main as run_app

    run_app(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()

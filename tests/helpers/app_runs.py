"""The app's real config, composed as run.py composes it and shrunk by debug=smoke; one task run in-process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from grft_app.paths import CONF_DIR as CONF
from grft_app.record import RunRecord
from grft_app.run.app import run_dir_of
from grft_app.run.runner import run_task
from grft_app.run.settings import register_resolvers

register_resolvers()


def make_cfg(runs: Path, *overrides: str):
    """``conf/config.yaml`` with ``debug=smoke`` and no baselines; runs go under ``runs``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["debug=smoke", f"paths.runs={runs}", "baselines=null", *overrides])


def run(runs: Path, *overrides: str, callbacks=None) -> tuple[RunRecord, Path]:
    """Train and test one run; its record and its directory."""
    cfg = make_cfg(runs, *overrides)
    run_dir = run_dir_of(cfg)
    return run_task(cfg, run_dir, extra_callbacks=callbacks), run_dir

"""`debug=smoke` works with every experiment config: each composes and passes the pre-flight checks
in smoke size, and the tasks whose settings once broke a smoke run (probe subsets, mixup, EMA) train."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from grft_app.data.catalog import TASKS
from grft_app.paths import ROOT
from grft_app.run.app import run_dir_of
from grft_app.run.preflight import preflight
from grft_app.run.runner import run_task
from grft_app.run.settings import ConfigError, register_resolvers
from helpers.miniature import write_fgvc

EXPERIMENTS = sorted(
    str(p.relative_to(ROOT / "conf" / "experiment").with_suffix(""))
    for p in (ROOT / "conf" / "experiment").rglob("*.yaml")
)
# The file names each family's loader opens first (written empty: the pre-flight checks presence only).
SPLIT_FILES = {
    "vtab": ("train800.txt", "val200.txt", "train800val200.txt", "test.txt"),
    "fgvc": ("train.json", "val.json", "test.json"),
    "glue": ("train.tsv", "dev.tsv"),
}
register_resolvers()


def smoke_cfg(tmp_path: Path, experiment: str, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"experiment={experiment}",
                "debug=smoke",
                f"paths.runs={tmp_path / 'runs'}",
                f"data_dir={tmp_path / 'data'}",
                *overrides,
            ],
        )


def test_all_27_paper_tasks_have_an_experiment():
    assert len(EXPERIMENTS) == 27 and {e.split("/")[1] for e in EXPERIMENTS} == set(TASKS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_the_preflight_in_smoke_size(tmp_path, experiment):
    cfg = smoke_cfg(tmp_path, experiment)
    assert cfg.model.tiny and cfg.epochs == 1 and cfg.trainer.accelerator == "cpu" and cfg.num_workers == 0
    task = TASKS[str(cfg.dataset.name)]
    with pytest.raises(FileNotFoundError, match=task.prep_command(str(tmp_path / "data")).split(" --data-dir")[0]):
        preflight(cfg)  # no data yet: stops before any model, naming the fetch command
    folder = task.folder_in(tmp_path / "data")
    folder.mkdir(parents=True)
    for name in SPLIT_FILES[task.family]:
        (folder / name).touch()
    preflight(cfg)  # settings, probe size against subsets, mixup's even batch


def test_preflight_names_the_key_when_the_probe_is_too_small_for_the_subsets(tmp_path):
    cfg = smoke_cfg(tmp_path, "fgvc/stanford_cars", "probe.max_batches=3")
    with pytest.raises(ConfigError, match=r"subsets=7 .* probe.max_batches=3; raise probe.max_batches to at least 7"):
        preflight(cfg)


def test_preflight_rejects_an_odd_batch_under_mixup(tmp_path):
    with pytest.raises(ConfigError, match="batch_size must be even, got 5"):
        preflight(smoke_cfg(tmp_path, "fgvc/cub", "batch_size=5"))


@pytest.mark.trains
@pytest.mark.parametrize(
    "experiment,folder,classes", [("fgvc/cub", "CUB_200_2011", 200), ("fgvc/stanford_cars", "stanfordcars", 196)]
)
def test_smoke_run_of_the_experiments_with_probe_subsets(tmp_path, experiment, folder, classes):
    cfg = smoke_cfg(tmp_path, experiment)
    write_fgvc(tmp_path / "data", folder, str(cfg.dataset.image_root), list(range(1, classes + 1)), per_split=(1, 1, 1))
    record = run_task(cfg, run_dir_of(cfg))
    assert record.done and record.subsets == int(cfg.subsets) > 1

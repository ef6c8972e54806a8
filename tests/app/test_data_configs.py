"""Every paper task has a dataset config with its class count and folder (checked against the
benchmarks' published definitions, written out here), and each composes with the real config."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from grft_app.data.catalog import TASKS
from grft_app.paths import ROOT
from grft_app.run.settings import register_resolvers

register_resolvers()

# name: (family, folder, classes) from VTAB's task definitions, VPT's FGVC folders and GLUE.
PAPER_TASKS = {
    "cifar100": ("vtab", "cifar", 100),
    "caltech101": ("vtab", "caltech101", 102),
    "dtd": ("vtab", "dtd", 47),
    "flowers102": ("vtab", "oxford_flowers102", 102),
    "pets": ("vtab", "oxford_iiit_pet", 37),
    "svhn": ("vtab", "svhn", 10),
    "sun397": ("vtab", "sun397", 397),
    "patch_camelyon": ("vtab", "patch_camelyon", 2),
    "eurosat": ("vtab", "eurosat", 10),
    "resisc45": ("vtab", "resisc45", 45),
    "diabetic_retinopathy": ("vtab", "diabetic_retinopathy", 5),
    "clevr_count": ("vtab", "clevr_count", 8),
    "clevr_dist": ("vtab", "clevr_dist", 6),
    "dmlab": ("vtab", "dmlab", 6),
    "kitti": ("vtab", "kitti", 4),
    "dsprites_loc": ("vtab", "dsprites_loc", 16),
    "dsprites_ori": ("vtab", "dsprites_ori", 16),
    "smallnorb_azi": ("vtab", "smallnorb_azi", 18),
    "smallnorb_ele": ("vtab", "smallnorb_ele", 9),
    "cub": ("fgvc", "CUB_200_2011", 200),
    "nabirds": ("fgvc", "nabirds", 555),
    "oxford_flowers": ("fgvc", "oxfordflower", 102),
    "stanford_dogs": ("fgvc", "stanforddogs", 120),
    "stanford_cars": ("fgvc", "stanfordcars", 196),
    "cola": ("glue", "CoLA", 2),
    "mrpc": ("glue", "MRPC", 2),
    "rte": ("glue", "RTE", 2),
}


def composed(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"dataset={name}"])


def test_the_paper_has_27_tasks_and_each_has_a_config():
    assert len(PAPER_TASKS) == 27
    configs = {p.stem for p in (ROOT / "conf" / "dataset").glob("*.yaml")}
    assert set(PAPER_TASKS) <= configs
    assert set(TASKS) == set(PAPER_TASKS)


@pytest.mark.parametrize("name", sorted(PAPER_TASKS))
def test_dataset_config_has_class_count_and_folder(name):
    cfg = composed(name)
    family, folder, classes = PAPER_TASKS[name]
    assert (cfg.dataset.name, cfg.dataset.family, cfg.dataset.folder, cfg.dataset.num_classes) == (
        name,
        family,
        folder,
        classes,
    )
    catalog = TASKS[name]
    assert (catalog.family, catalog.folder, catalog.num_classes) == (family, folder, classes)
    if family == "glue":
        assert cfg.model.family == "llama"  # a text task brings a text model
        assert list(cfg.dataset.metrics) == {"cola": ["acc", "mcc"], "mrpc": ["acc", "f1"], "rte": ["acc"]}[name]
    else:
        assert cfg.model.family == "vit"
    if family == "vtab":
        assert cfg.dataset.split == "train800val200" and dict(cfg.dataset.transform) == {
            "train": "resize",
            "eval": "resize",
            "probe": "contrast",
        }
    if family == "fgvc":
        assert cfg.dataset.split == "trainval"
        assert (cfg.dataset.transform.train, cfg.dataset.transform.eval, cfg.dataset.transform.crop_pct) == (
            "crop_flip",
            "resize_crop",
            0.9,
        )


def test_vtab_1k_sizes_are_800_plus_200():
    for task in TASKS.values():
        if task.family == "vtab":
            assert (task.sizes["train800"], task.sizes["val200"], task.sizes["train800val200"]) == (800, 200, 1000)

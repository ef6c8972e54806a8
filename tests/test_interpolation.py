"""Which interpolation each random crop uses: under ``protocol=reference`` the FGVC training crops
and probe views pick bilinear or bicubic per crop, as the reference's loaders (timm's
``interpolation="random"``); VTAB, evaluation and ``protocol=simple`` keep the model's bicubic."""

from __future__ import annotations

import random

import pytest
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from grft_app.data import build_datasets
from grft_app.data.splits import InputSpec
from helpers.app_runs import make_cfg
from helpers.miniature import write_fgvc, write_vtab

SMALL = InputSpec(img_size=16)


@pytest.fixture
def crops(monkeypatch) -> list[InterpolationMode]:
    """Every ``resized_crop`` call's interpolation (torchvision's and timm's random crops both call it)."""
    seen: list[InterpolationMode] = []
    original = TF.resized_crop

    def spy(img, top, left, height, width, size, interpolation=InterpolationMode.BILINEAR, **kwargs):
        seen.append(InterpolationMode(interpolation))
        return original(img, top, left, height, width, size, interpolation, **kwargs)

    monkeypatch.setattr(TF, "resized_crop", spy)
    return seen


def splits_of(tmp_path, task: str, protocol: str):
    data = tmp_path / "data"
    if task == "cub":
        write_fgvc(data, "CUB_200_2011", "images", [1, 2, 3, 4, 5], per_split=(3, 1, 1))
    else:
        write_vtab(data, "svhn", 5, train_per_class=3)
    overrides = (f"dataset={task}", f"protocol={protocol}", f"data_dir={data}", "dataset.num_classes=5")
    cfg = make_cfg(tmp_path / "runs", *overrides)
    return build_datasets(cfg.dataset, cfg.data_dir, SMALL)


def walk(dataset) -> None:
    random.seed(0)
    for i in range(len(dataset)):
        dataset[i]


BOTH = {InterpolationMode.BILINEAR, InterpolationMode.BICUBIC}


def test_reference_fgvc_training_crops_and_probe_views_mix_bilinear_and_bicubic(tmp_path, crops):
    splits = splits_of(tmp_path, "cub", "reference")
    walk(splits.train)
    assert len(crops) == len(splits.train) and set(crops) == BOTH
    crops.clear()
    walk(splits.probe)
    assert len(crops) == 2 * len(splits.probe) and set(crops) == BOTH  # two views, each its own draw
    crops.clear()
    walk(splits.test)  # evaluation: resize + centre crop, no random crop
    assert crops == []


@pytest.mark.parametrize("task,protocol", [("cub", "simple"), ("svhn", "reference")])
def test_vtab_and_the_simple_protocol_keep_the_models_bicubic(tmp_path, crops, task, protocol):
    splits = splits_of(tmp_path, task, protocol)
    walk(splits.train)
    walk(splits.probe)
    assert crops and set(crops) == {InterpolationMode.BICUBIC}


def test_an_unknown_crop_interpolation_is_an_error_naming_the_key(tmp_path):
    data = tmp_path / "data"
    write_fgvc(data, "CUB_200_2011", "images", [1, 2], per_split=(2, 1, 1))
    bad = "dataset.transform.augment_interpolation=nearest-ish"
    cfg = make_cfg(tmp_path / "runs", "dataset=cub", f"data_dir={data}", "dataset.num_classes=2", bad)
    with pytest.raises(ValueError, match="augment_interpolation='nearest-ish'"):
        build_datasets(cfg.dataset, cfg.data_dir, SMALL)

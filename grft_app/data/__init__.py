"""Datasets in the on-disk layouts the PEFT community uses, built per task from its Hydra config.

``build_datasets(dataset_cfg, data_dir, inputs)`` dispatches on ``dataset_cfg["family"]`` to the
family's module (``grft_app.data.<family>.build``), which returns ``DataSplits``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from .splits import DataSplits, InputSpec

FAMILIES = {
    "digits": "grft_app.data.digits",
    "vtab": "grft_app.data.vtab",
    "fgvc": "grft_app.data.fgvc",
    "glue": "grft_app.data.glue",
}


def build_datasets(dataset_cfg: Mapping, data_dir: str | Path, inputs: InputSpec) -> DataSplits:
    family = dataset_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(f"dataset family {family!r} is unknown; known: {', '.join(sorted(FAMILIES))}")
    module = importlib.import_module(FAMILIES[family])
    return module.build(dataset_cfg, Path(data_dir), inputs)


def check_data_present(dataset_cfg: Mapping, data_dir: str | Path) -> None:
    """Fail fast (before a model is loaded) if the task's folder or split files are absent.

    A family whose data ships with the code (digits) has nothing to check.
    """
    family = dataset_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(f"dataset family {family!r} is unknown; known: {', '.join(sorted(FAMILIES))}")
    check = getattr(importlib.import_module(FAMILIES[family]), "check_present", None)
    if check is not None:
        check(dataset_cfg, Path(data_dir))


def _family(dataset_cfg: Mapping):
    family = dataset_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(f"dataset family {family!r} is unknown; known: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[family])


def input_kind(dataset_cfg: Mapping) -> str:
    """``image`` or ``text``: what the family's inputs are (each family module's ``KIND``)."""
    return _family(dataset_cfg).KIND


def class_names(dataset_cfg: Mapping, num_classes: int) -> list[str]:
    """The name of each class index, as the family knows it (the class index itself where it knows none)."""
    names = getattr(_family(dataset_cfg), "class_names", lambda cfg: None)(dataset_cfg)
    if names is None:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"dataset {dataset_cfg.get('name')}: {len(names)} class names for {num_classes} classes")
    return list(names)


def eval_transform(dataset_cfg: Mapping, inputs: InputSpec):
    """PIL image -> model input as the family evaluates (``predict`` feeds new images through it)."""
    transform = getattr(_family(dataset_cfg), "eval_transform", None)
    if transform is None:
        family = dataset_cfg.get("family")
        raise ValueError(f"dataset family {family!r} has no image transform (it is not an image task)")
    return transform(dataset_cfg, inputs)


def eval_crop(dataset_cfg: Mapping) -> dict:
    """The family's evaluation transform in timm's data-config terms (``crop_pct``, ``crop_mode``); ``{}``
    where the family has none (text) or timm has no words for it."""
    crop = getattr(_family(dataset_cfg), "eval_crop", None)
    return crop(dataset_cfg) if crop is not None else {}


__all__ = [
    "DataSplits",
    "InputSpec",
    "build_datasets",
    "check_data_present",
    "class_names",
    "eval_crop",
    "input_kind",
    "eval_transform",
    "FAMILIES",
]

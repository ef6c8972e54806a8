"""Datasets in the on-disk layouts the PEFT community uses, and your own, built per task from its Hydra config.

``build_datasets(dataset_cfg, data_dir, inputs)`` dispatches on ``dataset_cfg["family"]`` to the
family's module (``FAMILIES``), which returns ``DataSplits``. Each family module says what it holds
(``INPUT_KIND``: images or text), and may check its files before any model loads
(``check_present``), name its classes from its files (``class_names``: your own data, whose class
count is read, not configured), and give the run key its data's identity (``fingerprint``). For
using a trained run (``grft_app.predict``, ``grft_app.export``), an image family gives its evaluation
transform for new images (``eval_transform``) and that transform in timm's terms (``eval_crop``), and a
paper task may name its classes from its config (``label_names``).
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
    "images": "grft_app.data.image_folder",
    "text": "grft_app.data.text_files",
}


def family_module(dataset_cfg: Mapping):
    family = dataset_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(f"dataset family {family!r} is unknown; known: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[family])


def build_datasets(dataset_cfg: Mapping, data_dir: str | Path, inputs: InputSpec) -> DataSplits:
    return family_module(dataset_cfg).build(dataset_cfg, Path(data_dir), inputs)


def check_data_present(dataset_cfg: Mapping, data_dir: str | Path) -> None:
    """Fail fast (before a model is loaded) if the task's folder or split files are absent or unusable.

    A family whose data ships with the code (digits) has nothing to check.
    """
    check = getattr(family_module(dataset_cfg), "check_present", None)
    if check is not None:
        check(dataset_cfg, Path(data_dir))


def class_count(dataset_cfg: Mapping, data_dir: str | Path) -> int:
    """The task's number of classes: read from the files for your own data, from the config otherwise."""
    names = getattr(family_module(dataset_cfg), "class_names", None)
    if names is not None:
        return len(names(dataset_cfg, Path(data_dir)))
    return int(dataset_cfg["num_classes"])


def input_kind(dataset_cfg: Mapping) -> str:
    """``image`` or ``text``: what the task's items are."""
    return family_module(dataset_cfg).INPUT_KIND


def label_names(dataset_cfg: Mapping, num_classes: int) -> list[str]:
    """The name of each class index as the config knows it (a paper task's ``label_names``, digits' digits),
    the class index itself where it knows none. Your own data's names come from its files, kept in the record."""
    names = getattr(family_module(dataset_cfg), "label_names", lambda cfg: None)(dataset_cfg)
    if names is None:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"dataset {dataset_cfg.get('name')}: {len(names)} class names for {num_classes} classes")
    return list(names)


def eval_transform(dataset_cfg: Mapping, inputs: InputSpec):
    """PIL image -> model input as the family evaluates (``predict`` feeds new images through it)."""
    transform = getattr(family_module(dataset_cfg), "eval_transform", None)
    if transform is None:
        family = dataset_cfg.get("family")
        raise ValueError(f"dataset family {family!r} has no image transform (it is not an image task)")
    return transform(dataset_cfg, inputs)


def eval_crop(dataset_cfg: Mapping, inputs: InputSpec) -> dict:
    """The family's evaluation transform in timm's data-config terms (``crop_pct``, ``crop_mode``); ``{}``
    where the family has none (text) or timm has no words for it."""
    crop = getattr(family_module(dataset_cfg), "eval_crop", None)
    return crop(dataset_cfg, inputs) if crop is not None else {}


__all__ = [
    "DataSplits",
    "InputSpec",
    "build_datasets",
    "check_data_present",
    "class_count",
    "eval_crop",
    "eval_transform",
    "input_kind",
    "label_names",
    "FAMILIES",
]

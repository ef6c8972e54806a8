"""FGVC in VPT's layout: ``data_dir/fgvc/<folder>/{train,val,test}.json``.

Each json maps ``relative image path -> class id``; paths start at the task's image root
(``images/`` for CUB and NABirds, ``Images/`` for Stanford Dogs, the folder itself for Oxford
Flowers and Stanford Cars). Class ids (e.g. NABirds' sparse ids) become ``0..N-1`` in sorted
order over all three files, so every split agrees on the mapping.

``split`` picks the protocol: ``trainval`` (reference: train on train + val, test on test) or
``train`` (train on train, validate on val, report test).
Reference transforms: RandomResizedCrop + flip for training; resize to ``img_size / crop_pct``
(248 for 224) and center crop for evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from . import images
from .catalog import FAMILY_ROOTS, FGVC_IMAGE_ROOTS, missing
from .images import ImageItems, check_files_exist, image_splits, require_images
from .splits import DataSplits, InputSpec

INPUT_KIND = "image"

SPLIT_FILES = ("train", "val", "test")
PROTOCOLS = ("trainval", "train")
DEFAULT_TRANSFORM = {"train": "crop_flip", "eval": "resize_crop", "probe": "contrast", "crop_pct": 0.9}


def read_split(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid json ({err}); re-run the data_prep command of this task") from err
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} must be a non-empty json object {{relative_image_path: class_id}}")
    return data


def class_index(splits: Mapping[str, Mapping[str, object]]) -> dict[object, int]:
    """Contiguous ids ``0..N-1`` for the sorted class ids of every split together."""
    ids = {cls for split in splits.values() for cls in split.values()}
    try:
        ordered = sorted(ids)
    except TypeError as err:  # ints mixed with strings
        raise ValueError(
            f"class ids must all be numbers or all be strings; found {sorted(map(repr, ids))[:5]}"
        ) from err
    return {cls: i for i, cls in enumerate(ordered)}


def task_folder(cfg: Mapping, data_dir: Path) -> Path:
    return Path(data_dir) / FAMILY_ROOTS["fgvc"] / str(cfg["folder"])


def check_present(cfg: Mapping, data_dir: Path) -> Path:
    """The task folder and its split files exist (cheap: run before any model is loaded)."""
    name = str(cfg["name"])
    protocol = str(cfg.get("split", "trainval"))
    if protocol not in PROTOCOLS:
        raise ValueError(f"dataset.split={protocol!r} is unknown for FGVC; known: {', '.join(PROTOCOLS)}")
    folder = task_folder(cfg, data_dir)
    if not folder.is_dir():
        raise missing(name, "fgvc", data_dir, folder, "the folder does not exist")
    absent = [f"{s}.json" for s in SPLIT_FILES if not (folder / f"{s}.json").is_file()]
    if absent:
        raise missing(name, "fgvc", data_dir, folder, f"{', '.join(absent)} missing")
    return folder


def build(cfg: Mapping, data_dir: Path, inputs: InputSpec) -> DataSplits:
    require_images(cfg, inputs)
    name = str(cfg["name"])
    protocol = str(cfg.get("split", "trainval"))
    folder = check_present(cfg, data_dir)
    raw = {s: read_split(folder / f"{s}.json") for s in SPLIT_FILES}
    index = class_index(raw)
    num_classes = int(cfg["num_classes"])
    if len(index) != num_classes:
        raise ValueError(
            f"{folder}: the json splits hold {len(index)} classes but dataset.num_classes={num_classes}; "
            "the folder is incomplete or belongs to another task"
        )
    image_root = folder / str(cfg.get("image_root", FGVC_IMAGE_ROOTS.get(name, "")))

    def items(*splits: str) -> ImageItems:
        dataset = ImageItems(image_root, [(path, index[cls]) for s in splits for path, cls in raw[s].items()])
        check_files_exist(dataset, name, "fgvc", data_dir, folder, "+".join(splits))
        return dataset

    if protocol == "trainval":
        train, val = items("train", "val"), None
    else:
        train, val = items("train"), items("val")
    return image_splits(cfg, inputs, train, items("test"), val, DEFAULT_TRANSFORM)


def eval_transform(cfg: Mapping, inputs: InputSpec):
    """PIL image -> model input, as this family evaluates."""
    return images.task_transform("eval", cfg, inputs, DEFAULT_TRANSFORM)


def eval_crop(cfg: Mapping, inputs: InputSpec) -> dict:
    """The evaluation transform in timm's data-config terms."""
    return images.eval_crop(cfg, inputs, DEFAULT_TRANSFORM)

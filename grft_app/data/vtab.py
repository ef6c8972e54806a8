"""VTAB-1k in the community's layout: ``data_dir/vtab-1k/<folder>/<split>.txt``.

Each list file has one ``relative/path label`` line per image, paths relative to the task folder.
``split`` picks the protocol:
- ``train800val200`` (the paper's): train on all 1000 images, test on ``test.txt``;
- ``train800``: a validation run, train on ``train800.txt``, validate on ``val200.txt``, and
  still report ``test.txt``.
Reference transform: direct resize to the model's size (bicubic), no augmentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from . import images
from .catalog import FAMILY_ROOTS, missing
from .images import ImageItems, check_files_exist, check_labels, image_splits, require_images
from .splits import DataSplits, InputSpec

INPUT_KIND = "image"

SPLITS = {"train800val200": ("train800val200", None), "train800": ("train800", "val200")}
DEFAULT_TRANSFORM = {"train": "resize", "eval": "resize", "probe": "contrast"}


def read_list(path: Path) -> list[tuple[str, int]]:
    """``[(relative path, label)]`` from a VTAB list file; a malformed line is an error naming it."""
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        # Paths may hold spaces: the label is the last field.
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected 'relative/path label', got {line!r}")
        items.append((parts[0], int(parts[1])))
    return items


def task_folder(cfg: Mapping, data_dir: Path) -> Path:
    return Path(data_dir) / FAMILY_ROOTS["vtab"] / str(cfg["folder"])


def load_split(cfg: Mapping, data_dir: Path, stem: str) -> ImageItems:
    folder = task_folder(cfg, data_dir)
    name = str(cfg["name"])
    if not folder.is_dir():
        raise missing(name, "vtab", data_dir, folder, "the folder does not exist")
    path = folder / f"{stem}.txt"
    if not path.is_file():
        raise missing(name, "vtab", data_dir, folder, f"{path.name} is missing")
    items = read_list(path)
    if not items:
        raise missing(name, "vtab", data_dir, folder, f"{path.name} lists no images")
    dataset = ImageItems(folder, items)
    check_labels(dataset.labels, int(cfg["num_classes"]), str(path))
    check_files_exist(dataset, name, "vtab", data_dir, folder, stem)
    return dataset


def check_present(cfg: Mapping, data_dir: Path) -> Path:
    """The task folder and its list files exist (cheap: run before any model is loaded)."""
    split = str(cfg.get("split", "train800val200"))
    if split not in SPLITS:
        raise ValueError(f"dataset.split={split!r} is unknown for VTAB-1k; known: {', '.join(SPLITS)}")
    folder, name = task_folder(cfg, data_dir), str(cfg["name"])
    if not folder.is_dir():
        raise missing(name, "vtab", data_dir, folder, "the folder does not exist")
    absent = [f"{stem}.txt" for stem in (*SPLITS[split], "test") if stem and not (folder / f"{stem}.txt").is_file()]
    if absent:
        raise missing(
            name, "vtab", data_dir, folder, f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} missing"
        )
    return folder


def build(cfg: Mapping, data_dir: Path, inputs: InputSpec) -> DataSplits:
    require_images(cfg, inputs)
    check_present(cfg, data_dir)
    train_stem, val_stem = SPLITS[str(cfg.get("split", "train800val200"))]
    train = load_split(cfg, data_dir, train_stem)
    val = load_split(cfg, data_dir, val_stem) if val_stem else None
    test = load_split(cfg, data_dir, "test")
    return image_splits(cfg, inputs, train, test, val, DEFAULT_TRANSFORM)


def eval_transform(cfg: Mapping, inputs: InputSpec):
    """PIL image -> model input, as this family evaluates."""
    return images.task_transform("eval", cfg, inputs, DEFAULT_TRANSFORM)


def eval_crop(cfg: Mapping, inputs: InputSpec) -> dict:
    """The evaluation transform in timm's data-config terms."""
    return images.eval_crop(cfg, inputs, DEFAULT_TRANSFORM)

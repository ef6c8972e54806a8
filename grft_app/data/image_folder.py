"""Your own images (``dataset=images dataset.root=DIR``) in the ImageFolder layout of torchvision and timm.

``DIR/train/<class>/*`` and ``DIR/test/<class>/*``, optionally ``DIR/val/<class>/*``: the class names
are the train subfolders, sorted (torchvision's ``find_classes``); the files are those torchvision's
``make_dataset`` lists (image extensions, any depth below the class folder, sorted). Without
``test/``, ``dataset.test_fraction`` holds out a seeded, stratified share of ``train/``; without
``val/``, ``dataset.val_fraction`` does the same for a validation split (the test share first). The
run writes which file went where to ``data_split.json``.

Checked before any model loads (``check_present``), each one line naming the folder or file and the
fix: a missing root or ``train/``, fewer than two classes, an empty class folder, a test or val class
that ``train/`` lacks, a ``dataset.num_classes`` that disagrees, an image that does not decode.
Images load as RGB whatever their mode (greyscale, palette, RGBA, CMYK); the transforms are those
of the paper's tasks (``grft_app.data.images``), sized and normalised as the model was pre-trained.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import images
from .images import ImageItems, image_splits, require_images, task_transform
from .own import OwnDataError, content_digest, held_out
from .splits import DataSplits, InputSpec

INPUT_KIND = "image"
SPLIT_FOLDERS = ("train", "val", "test")
# FGVC's choices (natural images): random crop + flip to train, resize + centre crop to evaluate.
DEFAULT_TRANSFORM = {"train": "crop_flip", "eval": "resize_crop", "probe": "contrast"}
log = logging.getLogger("grft")
_VERIFIED: set[tuple] = set()


@dataclass
class Listing:
    """The folder as read: class names and, per split, ``(path relative to root, class id)`` items."""

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]  # train, test and (if any) val, after the held-out shares
    held: dict[str, str]  # split -> "folder" or the key that held it out of train/


def root_of(cfg: Mapping) -> Path:
    if not cfg.get("root"):
        raise OwnDataError(
            "dataset=images needs dataset.root=DIR, a folder holding train/<class>/ and test/<class>/ image folders"
        )
    return Path(str(cfg["root"])).expanduser()


def extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def class_folders(folder: Path) -> list[str]:
    """Class folders of one split, sorted (torchvision's ``find_classes``; hidden folders skipped)."""
    from torchvision.datasets.folder import find_classes

    try:
        names, _ = find_classes(folder)
    except FileNotFoundError:
        names = []
    return [n for n in names if not n.startswith(".")]


def files_of(folder: Path, classes: list[str], index: dict[str, int]) -> list[tuple[str, int]]:
    """``(absolute path, class id)`` of every image under ``folder/<class>/`` (torchvision's walk)."""
    from torchvision.datasets.folder import make_dataset

    return make_dataset(folder, {c: index[c] for c in classes}, extensions=extensions(), allow_empty=True)


def read_split(root: Path, split: str, index: dict[str, int] | None) -> tuple[list[str], list[tuple[str, int]]]:
    """One split folder's class names and items; ``index`` maps class names to ids (None: train defines it)."""
    folder = root / split
    classes = class_folders(folder)
    if index is None:
        if len(classes) < 2:
            raise OwnDataError(
                f"{folder} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
                "a classifier needs at least two: put each class's images in its own folder train/<class>/"
            )
        index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise OwnDataError(
            f"{folder / unknown[0]}: class {unknown[0]!r} has no folder in {root / 'train'}, so the model never "
            f"learns it; add {root / 'train' / unknown[0]}/ with training images, or remove it from {split}/"
        )
    items = files_of(folder, classes, index)
    found = {label for _, label in items}
    empty = [c for c in classes if index[c] not in found]
    if empty:
        raise OwnDataError(
            f"{folder / empty[0]} holds no images ({' '.join(extensions())}); add images or remove the folder"
        )
    ignored = sum(len(files) for _, _, files in os.walk(folder)) - len(items)
    if ignored:
        log.warning("%s: %d file(s) that are not images (by extension) are not used", folder, ignored)
    return classes, [(os.path.relpath(path, root), label) for path, label in items]


def verify_image(path: Path) -> None:
    """Decode the whole image (JPEGs at reduced scale: every byte is still read), as training will."""
    from PIL import Image

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise OwnDataError(
            f"cannot read image {path} ({err.__class__.__name__}: {err}); replace or remove the file"
        ) from None
    _VERIFIED.add(key)


def listing(cfg: Mapping) -> Listing:
    """The folder's classes and splits, checked (every image decoded once per process)."""
    root = root_of(cfg)
    if not root.is_dir():
        raise OwnDataError(f"dataset.root={root} is not a folder; give the folder that holds train/ and test/")
    if not (root / "train").is_dir():
        raise OwnDataError(
            f"{root} has no train/ folder; put the training images in {root / 'train'}/<class>/ (one folder per class)"
        )
    classes, train = read_split(root, "train", None)
    index = {c: i for i, c in enumerate(classes)}
    splits, held = {"train": train}, {}
    for split in ("test", "val"):
        if (root / split).is_dir():
            splits[split] = read_split(root, split, index)[1]
            held[split] = "folder"
    seed = int(cfg.get("split_seed", 0))
    for split in ("test", "val"):
        key = f"dataset.{split}_fraction"
        fraction = cfg.get(f"{split}_fraction")
        if fraction is not None and split in held:
            raise OwnDataError(
                f"{root / split} exists and {key}={fraction} is set; "
                f"drop {key} (or the folder) to say which split to use"
            )
        if fraction is None:
            continue
        kept, out = held_out([label for _, label in splits["train"]], fraction, seed, key)
        splits[split] = [splits["train"][i] for i in out]
        splits["train"] = [splits["train"][i] for i in kept]
        held[split] = key
    if "test" not in splits:
        raise OwnDataError(
            f"{root} has no test/ folder; add {root / 'test'}/<class>/ images, or set dataset.test_fraction=0.2 "
            "to hold out a seeded share of each class of train/"
        )
    given = cfg.get("num_classes")
    if given is not None and int(given) != len(classes):
        raise OwnDataError(
            f"dataset.num_classes={given} but {root / 'train'} has {len(classes)} class folders "
            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); drop dataset.num_classes "
            "(it is read from the folders)"
        )
    return Listing(root, classes, splits, held)


def check_present(cfg: Mapping, data_dir: Path) -> Listing:
    """Everything a run needs from the folder, before any model loads; each image decoded once."""
    found = listing(cfg)
    for items in found.splits.values():
        for relative, _ in items:
            verify_image(found.root / relative)
    return found


def class_names(cfg: Mapping, data_dir: Path) -> list[str]:
    return listing(cfg).classes


def fingerprint(cfg: Mapping, data_dir: Path) -> dict:
    """The data's identity for the run key: the root and a hash of every file's relative path and bytes.

    Every file under train/, val/ and test/ counts (not only images: a file added, removed or
    changed anywhere there is another run). Never raises: a problem is reported by ``check_present``.
    """
    try:
        root = root_of(cfg).resolve()
    except OwnDataError:
        return {"folder": None, "files": "missing"}
    files = []
    for split in SPLIT_FOLDERS:
        for dirpath, dirnames, filenames in os.walk(root / split):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                files.append((str(path.relative_to(root)), path))
    if not files:
        return {"folder": str(root), "files": "missing"}
    try:
        return {"folder": str(root), "files": content_digest(files)}
    except OSError:
        return {"folder": str(root), "files": "unreadable"}


def eval_transform(cfg: Mapping, inputs: InputSpec):
    """PIL image -> the tensor the run evaluated (and predicts) with."""
    return task_transform("eval", cfg, inputs, DEFAULT_TRANSFORM)


def build(cfg: Mapping, data_dir: Path, inputs: InputSpec) -> DataSplits:
    require_images(cfg, inputs)
    found = listing(cfg)
    raw = {split: ImageItems(found.root, items) for split, items in found.splits.items()}
    splits = image_splits(
        {**dict(cfg), "num_classes": len(found.classes)},
        inputs,
        raw["train"],
        raw["test"],
        raw.get("val"),
        DEFAULT_TRANSFORM,
    )
    splits.class_names = tuple(found.classes)
    splits.split_listing = {
        "root": str(found.root),
        "classes": found.classes,
        "held_out_by": found.held,
        **{split: [path for path, _ in items] for split, items in found.splits.items()},
    }
    return splits


def eval_crop(cfg: Mapping, inputs: InputSpec) -> dict:
    """The evaluation transform in timm's data-config terms."""
    return images.eval_crop(cfg, inputs, DEFAULT_TRANSFORM)

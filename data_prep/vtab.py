"""VTAB-1k: download with TensorFlow Datasets, write ``data_dir/vtab-1k/<folder>/``, verify.

The layout (what ``grft_app.data.vtab`` reads): ``images/{train,val,test}/NNNNNN.png`` and the list
files ``train800.txt``, ``val200.txt``, ``train800val200.txt`` (the two together) and ``test.txt``,
one ``relative/path label`` per line.

The splits follow VTAB's task definitions: ``train800`` is the first 800 examples of the task's
training split, ``val200`` the first 200 of its validation split, ``test`` its whole test split.
Where TFDS has no validation (or test) split, VTAB carves them out of the training split by
fraction; ``SPECS`` records each task's rule, the TFDS dataset, and how the label is derived
(e.g. CLEVR count = objects - 3, dSprites location = x position in 16 bins).

    python -m data_prep.vtab --data-dir data --tasks dtd,svhn      # download + convert + check
    python -m data_prep.vtab --data-dir data --check               # verify all 19 folders
Resisc45, Diabetic Retinopathy (and SUN397 on some TFDS versions) need a manual download into
``--manual-dir`` first; TFDS's error message names the files.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grft_app.data.catalog import Task
from grft_app.data.vtab import read_list

from . import common

LIST_FILES = ("train800", "val200", "train800val200", "test")


# --- writing the layout -------------------------------------------------------------------------
def as_image(image):
    """A PIL image from a PIL image or an ``[H, W]`` / ``[H, W, C]`` uint8 array (C = 1 is tiled to grey)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 arrays, got {array.dtype}")
    return Image.fromarray(array)


def write_split(folder: Path, split: str, items: Iterable, image_format: str) -> list[str]:
    """Save each ``(image, label)`` as ``images/<split>/NNNNNN.<format>``; returns the list lines."""
    out = folder / "images" / split
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (image, label) in enumerate(items):
        relative = f"images/{split}/{i:06d}.{image_format}"
        as_image(image).save(folder / relative)
        lines.append(f"{relative} {int(label)}")
    return lines


def write_task(
    folder: Path, train800: Iterable, val200: Iterable, test: Iterable, image_format: str = "png"
) -> dict[str, int]:
    """Write one task folder from ``(image, label)`` iterables; returns the number of lines per list file.

    The list files are written last, so an interrupted conversion leaves a folder the loader and
    the checker both call incomplete.
    """
    folder = Path(folder)
    train = write_split(folder, "train", train800, image_format)
    val = write_split(folder, "val", val200, image_format)
    tests = write_split(folder, "test", test, image_format)
    lists = {"train800": train, "val200": val, "train800val200": train + val, "test": tests}
    for stem, lines in lists.items():
        (folder / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
    return {stem: len(lines) for stem, lines in lists.items()}


# --- checking the layout ------------------------------------------------------------------------


def check_task(task: Task, data_dir: Path, sizes: dict | None = None, verify_images: bool = True) -> common.Report:
    """Every list file present with its expected count, train800val200 = train800 + val200, labels in
    range, every listed image present and decodable."""
    report = common.start_report(task, data_dir)
    if not report.ok:
        return report
    folder = report.folder
    sizes = sizes or task.sizes
    lists = common.read_splits(
        report,
        {stem: f"{stem}.txt" for stem in LIST_FILES},
        read_list,
        sizes,
        "{file} lists {got} images, expected {want}",
    )
    for stem, items in lists.items():
        bad = sorted({label for _, label in items if not 0 <= label < task.num_classes})
        if bad:
            report.add(f"{stem}.txt: labels {bad[:5]} outside 0..{task.num_classes - 1}")
    if {"train800", "val200", "train800val200"} <= lists.keys():
        if sorted(lists["train800"] + lists["val200"]) != sorted(lists["train800val200"]):
            report.add("train800val200.txt is not train800.txt + val200.txt")
    listed = {path for items in lists.values() for path, _ in items}
    common.check_images((folder / p for p in sorted(listed)), report, verify_images)
    return report


# --- TFDS sources (VTAB's task definitions) -----------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where one split comes from: a TFDS split, optionally a fraction range of it."""

    split: str
    start: float = 0.0  # fraction of the split where this part starts
    stop: float = 1.0

    def tfds_split(self, num_examples: int, take: int | None = None) -> str:
        begin = int(self.start * num_examples)
        end = int(self.stop * num_examples)
        if take is not None:
            end = min(end, begin + take)
        return f"{self.split}[{begin}:{end}]"


def plain_label(example: dict) -> int:
    return int(example["label"])


def clevr_count(example: dict) -> int:
    """Number of objects (3..10) as classes 0..7."""
    return len(example["objects"]["size"]) - 3


CLEVR_DISTANCE_THRESHOLDS = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


def clevr_distance(example: dict) -> int:
    """Depth of the closest object, binned by VTAB's thresholds into 6 classes."""
    depth = np.min(np.asarray(example["objects"]["pixel_coords"])[:, 2])
    return int(np.max(np.nonzero(CLEVR_DISTANCE_THRESHOLDS < depth)[0]))


KITTI_DISTANCE_THRESHOLDS = np.array([-100.0, 8.0, 20.0, 999.0])
KITTI_VEHICLE_TYPES = 3  # TFDS kitti object types 0, 1, 2: Car, Van, Truck
KITTI_NO_VEHICLE = 1000.0  # a frame without vehicles counts as "far"


def kitti_distance(example: dict) -> int:
    """Depth (z) of the closest car, van or truck, in 4 classes."""
    objects = example["objects"]
    depths = np.asarray(objects["location"]).reshape(-1, 3)[:, 2]
    vehicles = depths[np.asarray(objects["type"]) < KITTI_VEHICLE_TYPES]
    depth = vehicles.min(initial=KITTI_NO_VEHICLE)
    return int(np.max(np.nonzero(KITTI_DISTANCE_THRESHOLDS < depth)[0]))


def binned(key: str, original: int, classes: int) -> Callable[[dict], int]:
    """A TFDS integer label with ``original`` values squeezed into ``classes`` equal bins."""

    def label(example: dict) -> int:
        return int(math.floor(int(example[key]) * classes / original))

    label.__name__ = f"{key}_in_{classes}_bins"
    return label


def label_of(key: str) -> Callable[[dict], int]:
    def label(example: dict) -> int:
        return int(example[key])

    label.__name__ = key
    return label


def rgb_image(example: dict):
    return example["image"]


def grey_to_rgb(scale: int = 1):
    """Single-channel images tiled to RGB; dSprites stores 0/1 pixels, so it is scaled by 255."""

    def image(example: dict):
        array = np.asarray(example["image"]).astype(np.uint8) * scale
        if array.ndim == 3:
            array = array[..., 0]
        return np.repeat(array[..., None], 3, axis=-1)

    return image


@dataclass(frozen=True)
class Spec:
    tfds_name: str
    train: Source
    val: Source
    test: Source
    label: Callable[[dict], int] = plain_label
    image: Callable[[dict], object] = rgb_image


def _train_fraction(train: float, name: str, test_split: str = "test", **kw) -> Spec:
    """Train/val carved from the TFDS train split at ``train``; test from ``test_split``."""
    return Spec(name, Source("train", 0.0, train), Source("train", train, 1.0), Source(test_split), **kw)


def _three_splits(name: str, **kw) -> Spec:
    return Spec(name, Source("train"), Source("validation"), Source("test"), **kw)


SPECS: dict[str, Spec] = {
    "cifar100": _train_fraction(0.9, "cifar100"),
    "caltech101": _train_fraction(0.9, "caltech101"),
    "dtd": _three_splits("dtd"),
    "flowers102": _three_splits("oxford_flowers102"),
    "pets": _train_fraction(0.8, "oxford_iiit_pet"),
    "svhn": _train_fraction(0.9, "svhn_cropped"),
    "sun397": _three_splits("sun397/tfds"),
    "patch_camelyon": _three_splits("patch_camelyon"),
    "eurosat": Spec("eurosat/rgb", Source("train", 0.0, 0.6), Source("train", 0.6, 0.8), Source("train", 0.8, 1.0)),
    "resisc45": Spec("resisc45", Source("train", 0.0, 0.6), Source("train", 0.6, 0.8), Source("train", 0.8, 1.0)),
    "diabetic_retinopathy": _three_splits("diabetic_retinopathy_detection/btgraham-300"),
    "clevr_count": _train_fraction(0.9, "clevr", test_split="validation", label=clevr_count),
    "clevr_dist": _train_fraction(0.9, "clevr", test_split="validation", label=clevr_distance),
    "dmlab": _three_splits("dmlab"),
    "kitti": _three_splits("kitti", label=kitti_distance),
    "dsprites_loc": Spec(
        "dsprites",
        Source("train", 0.0, 0.8),
        Source("train", 0.8, 0.9),
        Source("train", 0.9, 1.0),
        label=binned("label_x_position", 32, 16),
        image=grey_to_rgb(255),
    ),
    "dsprites_ori": Spec(
        "dsprites",
        Source("train", 0.0, 0.8),
        Source("train", 0.8, 0.9),
        Source("train", 0.9, 1.0),
        label=binned("label_orientation", 40, 16),
        image=grey_to_rgb(255),
    ),
    "smallnorb_azi": Spec(
        "smallnorb",
        Source("train"),
        Source("test", 0.0, 0.5),
        Source("test", 0.5, 1.0),
        label=label_of("label_azimuth"),
        image=grey_to_rgb(),
    ),
    "smallnorb_ele": Spec(
        "smallnorb",
        Source("train"),
        Source("test", 0.0, 0.5),
        Source("test", 0.5, 1.0),
        label=label_of("label_elevation"),
        image=grey_to_rgb(),
    ),
}


def tfds_items(spec: Spec, source: Source, take: int | None, tfds_dir: Path | None, manual_dir: Path | None):
    """``(image, label)`` of one VTAB split, streamed from TFDS (downloads and prepares on first use)."""
    tfds = common.require("tensorflow_datasets", "prep-vtab", "downloading VTAB")
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder = tfds.builder(spec.tfds_name, data_dir=str(tfds_dir) if tfds_dir else None)
    builder.download_and_prepare(download_config=config)
    count = builder.info.splits[source.split].num_examples
    dataset = builder.as_dataset(split=source.tfds_split(count, take), shuffle_files=False)
    for example in tfds.as_numpy(dataset):
        yield spec.image(example), spec.label(example)


def prepare(task: Task, data_dir: Path, tfds_dir: Path | None, manual_dir: Path | None, image_format: str) -> None:
    folder = task.folder_in(data_dir)
    if all((folder / f"{stem}.txt").is_file() for stem in LIST_FILES):
        print(f"{task.name}: {folder} already has its list files; checking it (delete them to convert again)")
        return
    spec = SPECS[task.name]
    print(f"{task.name}: converting TFDS {spec.tfds_name} into {folder}")
    counts = write_task(
        folder,
        tfds_items(spec, spec.train, 800, tfds_dir, manual_dir),
        tfds_items(spec, spec.val, 200, tfds_dir, manual_dir),
        tfds_items(spec, spec.test, None, tfds_dir, manual_dir),
        image_format,
    )
    print(f"{task.name}: wrote {counts}")


def main(argv: list[str] | None = None) -> int:
    p = common.parser("vtab", "VTAB-1k: download with TFDS, convert to vtab-1k/<folder>/, verify.")
    p.add_argument(
        "--tfds-dir", type=Path, default=None, help="TFDS cache (default: TFDS's own, ~/tensorflow_datasets)"
    )
    p.add_argument(
        "--manual-dir", type=Path, default=None, help="where manually downloaded archives are (resisc45, retinopathy)"
    )
    p.add_argument("--image-format", default="png", choices=("png", "jpg"), help="png keeps the decoded pixels exactly")
    args = p.parse_args(argv)
    tasks = common.select_tasks("vtab", args.tasks)
    verify = not args.no_verify_images
    prep = (
        None if args.check else (lambda t: prepare(t, args.data_dir, args.tfds_dir, args.manual_dir, args.image_format))
    )
    return common.run(tasks, prep, lambda t: check_task(t, args.data_dir, verify_images=verify))


if __name__ == "__main__":
    sys.exit(main())

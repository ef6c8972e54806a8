"""FGVC: fetch the official archives, write VPT's json splits into ``data_dir/fgvc/<folder>/``, verify.

Each official archive unpacks into the folder ``grft_app.data.fgvc`` reads (CUB_200_2011/images/...,
oxfordflower/jpg/..., stanforddogs/Images/..., stanfordcars/cars_train/..., nabirds/images/...);
the conversion only writes ``train.json``, ``val.json`` and ``test.json`` (``{image path: class
id}``, paths relative to the task's image root) from the official annotation files:

- CUB-200-2011 and NABirds: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``;
- Oxford Flowers: ``imagelabels.mat`` and ``setid.mat`` (its official train / val / test);
- Stanford Dogs: ``train_list.mat`` and ``test_list.mat``;
- Stanford Cars: ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat``.

Where the official release has no validation split, ``val`` is a seeded random tenth (rounded up)
of the official training set, the size of VPT's; train + val is always the whole official training
set, so the reference protocol (train on train + val) does not depend on that draw.

    python -m data_prep.fgvc --data-dir data --tasks cub,oxford_flowers,stanford_dogs
    python -m data_prep.fgvc --data-dir data --check
NABirds and Stanford Cars have no open download: unpack them by hand (the message says where).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

from grft_app.data.catalog import FAMILY_ROOTS, FGVC_IMAGE_ROOTS, Task
from grft_app.data.fgvc import SPLIT_FILES, class_index

from . import common

Split = dict[str, int]

DOWNLOADS = {
    "cub": [
        ("https://data.caltech.edu/records/65de6-vzc80/files/CUB_200_2011.tgz?download=1", "CUB_200_2011.tgz", "..")
    ],
    "oxford_flowers": [
        ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz", "102flowers.tgz", "."),
        ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat", "imagelabels.mat", None),
        ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/setid.mat", "setid.mat", None),
    ],
    "stanford_dogs": [
        ("http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar", "images.tar", "."),
        ("http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar", "lists.tar", "."),
    ],
}
MANUAL = {
    "nabirds": "download nabirds.tar.gz from the Cornell Lab's NABirds page (accept its terms of use) and unpack it "
    "so that {folder} holds images/, images.txt, image_class_labels.txt and train_test_split.txt",
    "stanford_cars": "the official Stanford Cars site is offline; get a copy of the original release (cars_train/, "
    "cars_test/, devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat) and unpack it "
    "into {folder}",
}


# --- official annotations -> splits -------------------------------------------------------------
def _table(path: Path) -> dict[str, str]:
    """``id -> value`` from a two-column, space-separated annotation file."""
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'id value', got {line!r}")
            out[parts[0]] = parts[1].strip()
    return out


def read_cub_style(folder: Path) -> tuple[Split, Split]:
    """Official train / test of CUB-200-2011 or NABirds (paths relative to ``images/``)."""
    paths = _table(folder / "images.txt")
    labels = _table(folder / "image_class_labels.txt")
    is_train = _table(folder / "train_test_split.txt")
    train, test = {}, {}
    for image_id, path in paths.items():
        (train if is_train[image_id] == "1" else test)[path] = int(labels[image_id])
    return train, test


def _loadmat(path: Path) -> dict:
    io = common.require("scipy.io", "prep-fgvc", f"reading {path.name}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return io.loadmat(str(path), squeeze_me=True)


def _flat(value) -> list:
    """A squeezed .mat field as a flat list (a one-element field comes back as a scalar)."""
    import numpy as np

    return list(np.atleast_1d(value).reshape(-1))


def read_flowers(folder: Path) -> tuple[Split, Split, Split]:
    """Official train / val / test of Oxford Flowers 102 (paths relative to the folder: ``jpg/...``)."""
    labels = _flat(_loadmat(folder / "imagelabels.mat")["labels"])
    ids = _loadmat(folder / "setid.mat")

    def split(key: str) -> Split:
        return {f"jpg/image_{int(i):05d}.jpg": int(labels[int(i) - 1]) for i in _flat(ids[key])}

    return split("trnid"), split("valid"), split("tstid")


def read_dogs(folder: Path) -> tuple[Split, Split]:
    """Official train / test of Stanford Dogs (paths relative to ``Images/``)."""

    def split(name: str) -> Split:
        mat = _loadmat(folder / name)
        return {str(f): int(c) for f, c in zip(_flat(mat["file_list"]), _flat(mat["labels"]), strict=True)}

    return split("train_list.mat"), split("test_list.mat")


def read_cars(folder: Path) -> tuple[Split, Split]:
    """Official train / test of Stanford Cars (paths relative to the folder: ``cars_train/...``)."""
    test_annos = next(
        (
            p
            for p in (folder / "cars_test_annos_withlabels.mat", folder / "devkit" / "cars_test_annos_withlabels.mat")
            if p.is_file()
        ),
        folder / "cars_test_annos_withlabels.mat",
    )

    def split(path: Path, images: str) -> Split:
        annotations = _flat(_loadmat(path)["annotations"])
        return {f"{images}/{a['fname']}": int(a["class"]) for a in annotations}

    return split(folder / "devkit" / "cars_train_annos.mat", "cars_train"), split(test_annos, "cars_test")


def hold_out(train: Split, fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """Move a seeded random ``ceil(fraction * n)`` of ``train`` into a validation split."""
    keys = sorted(train)
    chosen = set(random.Random(seed).sample(keys, math.ceil(fraction * len(keys))))
    return ({k: train[k] for k in keys if k not in chosen}, {k: train[k] for k in keys if k in chosen})


def official_splits(task: Task, folder: Path) -> tuple[Split, Split, Split]:
    """train / val / test of one task from its official annotation files."""
    if task.name == "oxford_flowers":
        return read_flowers(folder)
    if task.name in ("cub", "nabirds"):
        train, test = read_cub_style(folder)
    elif task.name == "stanford_dogs":
        train, test = read_dogs(folder)
    elif task.name == "stanford_cars":
        train, test = read_cars(folder)
    else:
        raise ValueError(f"no converter for FGVC task {task.name}")
    return (*hold_out(train), test)


def write_splits(folder: Path, train: Split, val: Split, test: Split) -> dict[str, int]:
    for name, split in zip(SPLIT_FILES, (train, val, test), strict=True):
        (folder / f"{name}.json").write_text(json.dumps(split, indent=0))
    return {name: len(split) for name, split in zip(SPLIT_FILES, (train, val, test), strict=True)}


# --- checking the layout ------------------------------------------------------------------------


def read_split(path: Path) -> Split:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name} is not valid json ({err})") from err


def check_task(task: Task, data_dir: Path, sizes: dict | None = None, verify_images: bool = True) -> common.Report:
    """Three json splits with the expected counts, disjoint, ``num_classes`` classes together,
    every listed image present and decodable."""
    report = common.start_report(task, data_dir)
    if not report.ok:
        return report
    folder = report.folder
    sizes = sizes or task.sizes
    splits = common.read_splits(
        report,
        {name: f"{name}.json" for name in SPLIT_FILES},
        read_split,
        sizes,
        "{file} lists {got} images, expected {want}",
    )
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = splits[a].keys() & splits[b].keys()
            if shared:
                report.add(f"{len(shared)} image(s) are in both {a}.json and {b}.json (e.g. {sorted(shared)[0]})")
    if splits:
        try:
            classes = len(class_index(splits))
        except ValueError as err:
            report.add(str(err))
        else:
            if classes != task.num_classes:
                report.add(f"the splits hold {classes} classes, expected {task.num_classes}")
    image_root = folder / FGVC_IMAGE_ROOTS[task.name]
    listed = sorted({p for split in splits.values() for p in split})
    common.check_images((image_root / p for p in listed), report, verify_images)
    return report


# --- download + convert -------------------------------------------------------------------------
def fetch(task: Task, data_dir: Path) -> None:
    folder = task.folder_in(data_dir)
    if task.name in MANUAL:
        if not folder.is_dir():
            raise SystemExit(f"{task.name}: {MANUAL[task.name].format(folder=folder)}; then run this command again")
        return
    downloads = Path(data_dir) / FAMILY_ROOTS["fgvc"] / "_downloads"
    for url, filename, unpack_into in DOWNLOADS[task.name]:
        if unpack_into is None:  # an annotation file that lives in the task folder as it is
            common.download(url, folder / filename)
        else:
            common.extract(common.download(url, downloads / filename), (folder / unpack_into).resolve())


def prepare(task: Task, data_dir: Path) -> None:
    folder = task.folder_in(data_dir)
    if all((folder / f"{s}.json").is_file() for s in SPLIT_FILES):
        print(f"{task.name}: {folder} already has its json splits; checking it (delete them to convert again)")
        return
    fetch(task, data_dir)
    try:
        counts = write_splits(folder, *official_splits(task, folder))
    except (FileNotFoundError, KeyError) as err:
        raise SystemExit(
            f"{task.name}: {folder} lacks an official annotation file or entry ({err}); "
            "unpack the complete official release there"
        ) from None
    print(f"{task.name}: wrote {counts}")


def main(argv: list[str] | None = None) -> int:
    p = common.parser("fgvc", "FGVC: fetch the official archives, write VPT's json splits, verify.")
    args = p.parse_args(argv)
    tasks = common.select_tasks("fgvc", args.tasks)
    verify = not args.no_verify_images
    prep = None if args.check else (lambda t: prepare(t, args.data_dir))
    return common.run(tasks, prep, lambda t: check_task(t, args.data_dir, verify_images=verify))


if __name__ == "__main__":
    sys.exit(main())

"""Miniature "own data" as users bring it: an ImageFolder tree and text tables in each format the
``images`` and ``text`` families read, written here with the standard library, PIL and pyarrow
(not with the readers under test)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

CLASSES = ("cat", "dog", "emu")
# Every image mode a user's folder may hold; each becomes RGB.
MODES = ("RGB", "L", "RGBA", "P", "CMYK")


def class_colour(label: int, index: int) -> tuple[int, int, int]:
    return (60 + 80 * label, 40 + 9 * index, 200 - 50 * label)


def save_in_mode(path: Path, colour: tuple[int, int, int], mode: str, size=(20, 14)) -> Path:
    """A uniform image of ``colour`` saved in ``mode`` (JPEG for RGB, L and CMYK; PNG otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode == "RGBA":
        image = image.convert("RGBA")
    elif mode == "P":
        image = image.convert("P")
        image.info["transparency"] = 255  # a palette with a transparent entry
    elif mode != "RGB":
        image = image.convert(mode)
    path = path.with_suffix(".jpg" if mode in ("RGB", "L", "CMYK") else ".png")
    image.save(path)
    return path


def write_image_folder(root: Path, per_split: dict[str, int] | None = None, classes=CLASSES) -> dict[str, list[str]]:
    """``root/<split>/<class>/img<i>.<ext>`` in every mode; the files written, relative to ``root``, per split."""
    per_split = per_split or {"train": 4, "test": 2}
    written: dict[str, list[str]] = {}
    index = 0
    for split, count in per_split.items():
        written[split] = []
        for label, name in enumerate(classes):
            for i in range(count):
                path = save_in_mode(
                    root / split / name / f"img{i}", class_colour(label, index), MODES[index % len(MODES)]
                )
                written[split].append(str(path.relative_to(root)))
                index += 1
    return written


# Three labels, four rows each in train: every smoke batch of four repeats a label (the SCL probe needs pairs).
TRAIN_ROWS = [
    ("a warm and funny film", "it made me laugh", "pos"),
    ("dull from start to end", "i slept", "neg"),
    ("it was a film", "it had a plot", "meh"),
    ("a joy to watch", "great cast", "pos"),
    ("the plot is a mess", "poor cast", "neg"),
    ("some parts work", "others do not", "meh"),
    ("the best this year", "see it twice", "pos"),
    ("a waste of time", "skip it", "neg"),
    ("neither good nor bad", "fine", "meh"),
    ("moving and sharp", "loved it", "pos"),
    ("badly acted", "weak script", "neg"),
    ("watchable once", "no more", "meh"),
]
TEST_ROWS = [
    ("great fun", "must see", "pos"),
    ("boring", "too long", "neg"),
    ("it is ok", "average", "meh"),
    ("wonderful", "bravo", "pos"),
]


def write_table(path: Path, rows, columns=("text", "text_pair", "label")) -> Path:
    """``rows`` as a file in the format of ``path``'s extension: csv, tsv, jsonl or parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="," if suffix == ".csv" else "\t")
            writer.writerow(columns)
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, row, strict=True))) + "\n" for row in rows))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [row[i] for row in rows] for i, c in enumerate(columns)}), path)
    else:
        raise ValueError(suffix)
    return path


def write_dataset_dir(path: Path, splits: dict[str, list], class_label: bool = False) -> Path:
    """A Hugging Face ``datasets`` DatasetDict saved with ``save_to_disk`` (labels as a ClassLabel if asked)."""
    import datasets

    names = sorted({row[2] for rows in splits.values() for row in rows}, reverse=True)  # not sorted: kept as given
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "text_pair": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names) if class_label else datasets.Value("string"),
        }
    )
    data = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "text": [r[0] for r in rows],
                    "text_pair": [r[1] for r in rows],
                    "label": [names.index(r[2]) if class_label else r[2] for r in rows],
                },
                features=features,
            )
            for split, rows in splits.items()
        }
    )
    data.save_to_disk(str(path))
    return path

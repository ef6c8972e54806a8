"""Miniature datasets written in the exact on-disk layouts the loaders read (written here by hand,
independently of ``data_prep``), and what a test should expect from them."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def colour(label: int, index: int) -> tuple[int, int, int]:
    """A colour that encodes (label, index), so a test can tell which file a tensor came from."""
    return (label * 7 % 256, index * 11 % 256, 200)


def save_image(path: Path, label: int, index: int, size=(20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour(label, index)).save(path)


def write_vtab(
    data_dir: Path, folder: str, num_classes: int, train_per_class=2, val_per_class=1, test_per_class=1
) -> dict:
    """``data_dir/vtab-1k/<folder>/`` with images in a nested folder and the four list files."""
    root = Path(data_dir) / "vtab-1k" / folder
    lists = {"train800": [], "val200": [], "test": []}
    index = 0
    for label in range(num_classes):
        for split, count in (("train800", train_per_class), ("val200", val_per_class), ("test", test_per_class)):
            for _ in range(count):
                relative = f"imgs/{split}/class {label}/{index:05d}.jpg"  # a space: paths may hold one
                save_image(root / relative, label, index)
                lists[split].append((relative, label))
                index += 1
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for stem, items in lists.items():
        (root / f"{stem}.txt").write_text("".join(f"{p} {label}\n" for p, label in items))
    return {"root": root, **lists}


def write_fgvc(data_dir: Path, folder: str, image_root: str, class_ids: list, per_split=(2, 1, 1)) -> dict:
    """``data_dir/fgvc/<folder>/{train,val,test}.json`` with images under ``image_root``."""
    root = Path(data_dir) / "fgvc" / folder
    splits = {"train": {}, "val": {}, "test": {}}
    index = 0
    for cls in class_ids:
        for split, count in zip(splits, per_split, strict=True):
            for _ in range(count):
                relative = f"{cls:04d}.species/img_{index:05d}.png"
                save_image(root / image_root / relative, int(cls), index, size=(30, 22))
                splits[split][relative] = cls
                index += 1
    for split, mapping in splits.items():
        (root / f"{split}.json").write_text(json.dumps(mapping))
    return {"root": root, **splits}


# Row counts are multiples of the smoke batch size (4): the SCL probe needs a repeated label in every batch.
GLUE_ROWS = {
    "cola": (
        "CoLA",
        None,
        [
            "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.",
            "gj04\t0\t*\tThe more we study verbs, the crazier they get get.",
            'cj99\t1\t\tShe said "hello" to them.',
            "bc01\t0\t*\tHarry coughed himself .",
            "bc01\t1\t\tWe believed John to be a fountain in the park.",
            "ks08\t0\t*\tThey drank the pub.",
            "ks08\t1\t\tThe professor talked us into a stupor.",
            "r-67\t0\t*\tJohn whined Mary.",
        ],
    ),
    "mrpc": (
        "MRPC",
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        [
            '1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as only "the witness" , Amrozi accused his brother .',  # noqa: E501 - one TSV row, kept whole like the file it stands for
            "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .",
            "1\t1330381\t1330521\tThey had published an advertisement .\tOn June 10 , they published an advertisement .",  # noqa: E501 - one TSV row, kept whole like the file it stands for
            "0\t3344667\t3344648\tTab Tab is a shop .\tThe shop sells tabs .",
        ],
    ),
    "rte": (
        "RTE",
        "index\tsentence1\tsentence2\tlabel",
        [
            "0\tDana Reeve died of lung cancer.\tChristopher Reeve had an accident.\tnot_entailment",
            "1\tYet, we now are discovering that antibiotics are losing their effectiveness.\tBacteria is winning.\tentailment",  # noqa: E501 - one TSV row, kept whole like the file it stands for
            "2\tCairo is now home to some 15 million people.\t15 million people live in Cairo.\tentailment",
            "3\tThe cat sat.\tThe dog ran.\tnot_entailment",
        ],
    ),
}


def glue_expected(task: str) -> tuple[list, list]:
    """(texts or (text, pair) tuples, labels) of the rows above, read by hand."""
    _, header, rows = GLUE_ROWS[task]
    texts, labels = [], []
    for row in rows:
        f = row.split("\t")
        if task == "cola":
            text, label = f[3], int(f[1])
        elif task == "mrpc":
            text, label = (f[3], f[4]), int(f[0])
        else:
            text, label = (f[1], f[2]), 0 if f[3] == "entailment" else 1
        texts.append(text)
        labels.append(label)
    return texts, labels


def write_glue(data_dir: Path, task: str, dev_rows: int = 2) -> Path:
    """``data_dir/glue/<TASK>/train.tsv`` (all rows) and ``dev.tsv`` (the first ``dev_rows``)."""
    folder, header, rows = GLUE_ROWS[task]
    root = Path(data_dir) / "glue" / folder
    root.mkdir(parents=True, exist_ok=True)
    head = [header] if header else []
    (root / "train.tsv").write_text("\n".join(head + rows) + "\n", encoding="utf-8")
    (root / "dev.tsv").write_text("\n".join(head + rows[:dev_rows]) + "\n", encoding="utf-8")
    return root

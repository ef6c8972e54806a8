"""GLUE tasks in the original TSV layout: ``data_dir/glue/<TASK>/{train,dev}.tsv``.

- CoLA: no header; columns source, label, original label mark, sentence.
- MRPC: header ``Quality  #1 ID  #2 ID  #1 String  #2 String``; a sentence pair.
- RTE: header ``index  sentence1  sentence2  label``; labels entailment (0) / not_entailment (1).

GLUE's test labels are hidden, so ``dev.tsv`` is the split the paper reports (our ``test``). The
probe sees plain items (text has no augmented views); ``TextCollate`` tokenizes a batch (pairs as
pairs) and pads it into ``{"input_ids", "attention_mask", "labels"}``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .catalog import FAMILY_ROOTS, missing
from .holdout import holdout_of, split_off
from .splits import DataSplits, InputSpec

INPUT_KIND = "text"


@dataclass(frozen=True)
class Layout:
    """How one task's TSV reads: column names, header or not, text and label columns, label names."""

    columns: tuple[str, ...]
    header: bool
    text: str
    label: str
    pair: str | None = None
    label_names: tuple[str, ...] | None = None  # None: labels are the integers 0..n-1


LAYOUTS = {
    "cola": Layout(("source", "label", "original_label", "sentence"), header=False, text="sentence", label="label"),
    "mrpc": Layout(
        ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        header=True,
        text="#1 String",
        pair="#2 String",
        label="Quality",
    ),
    "rte": Layout(
        ("index", "sentence1", "sentence2", "label"),
        header=True,
        text="sentence1",
        pair="sentence2",
        label="label",
        label_names=("entailment", "not_entailment"),
    ),
}
SPLITS = {"train": "train.tsv", "test": "dev.tsv"}


class TextItems(Dataset):
    """``({"text": str, "text_pair": str | None}, label)`` items of one TSV file."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], pairs: Sequence[str] | None = None):
        self.texts, self.labels, self.pairs = list(texts), list(labels), list(pairs) if pairs is not None else None

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int):
        return {"text": self.texts[i], "text_pair": self.pairs[i] if self.pairs is not None else None}, self.labels[i]


class TextCollate:
    """Tokenize and pad a list of items; a class (not a closure) so loader workers can pickle it."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        texts = [item["text"] for item, _ in items]
        pairs = [item["text_pair"] for item, _ in items]
        encoded = self.tokenizer(
            texts,
            pairs if pairs[0] is not None else None,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": torch.tensor([label for _, label in items], dtype=torch.long),
        }


def read_tsv(path: Path, layout: Layout, num_classes: int) -> TextItems:
    """Read one split; a wrong header, a short line or an unknown label is an error naming the file."""
    import pandas as pd

    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            header=0 if layout.header else None,
            names=None if layout.header else list(layout.columns),
            quoting=csv.QUOTE_NONE,
            dtype=str,
            keep_default_na=False,
            on_bad_lines="error",
            encoding="utf-8-sig",  # MRPC files may start with a BOM
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a GLUE TSV file of this task: {err}") from err
    absent = [c for c in layout.columns if c not in frame.columns]
    if absent:
        raise ValueError(
            f"{path}: columns {absent} are missing; expected the original GLUE layout "
            f"{' | '.join(layout.columns)}{' (header line)' if layout.header else ' (no header)'}"
        )
    labels = []
    for row, value in enumerate(frame[layout.label].str.strip(), start=2 if layout.header else 1):
        if layout.label_names is not None:
            if value not in layout.label_names:
                raise ValueError(f"{path}:{row}: label {value!r} is not one of {', '.join(layout.label_names)}")
            labels.append(layout.label_names.index(value))
        else:
            if not value.isdigit() or int(value) >= num_classes:
                raise ValueError(f"{path}:{row}: label {value!r} is not an integer in 0..{num_classes - 1}")
            labels.append(int(value))
    pairs = frame[layout.pair].tolist() if layout.pair else None
    return TextItems(frame[layout.text].tolist(), labels, pairs)


def task_folder(cfg: Mapping, data_dir: Path) -> Path:
    return Path(data_dir) / FAMILY_ROOTS["glue"] / str(cfg["folder"])


def check_present(cfg: Mapping, data_dir: Path) -> Path:
    """The task folder and its TSV files exist (cheap: run before any model is loaded)."""
    name = str(cfg["name"])
    folder = task_folder(cfg, data_dir)
    if not folder.is_dir():
        raise missing(name, "glue", data_dir, folder, "the folder does not exist")
    absent = [f for f in SPLITS.values() if not (folder / f).is_file()]
    if absent:
        raise missing(name, "glue", data_dir, folder, f"{', '.join(absent)} missing")
    return folder


def build(cfg: Mapping, data_dir: Path, inputs: InputSpec) -> DataSplits:
    name = str(cfg["name"])
    if inputs.kind != "text" or inputs.tokenizer is None:
        raise ValueError(
            f"dataset {name} is a text task but the model takes {inputs.kind!r} inputs"
            f"{'' if inputs.kind != 'text' else ' without a tokenizer'}; choose a text model (e.g. model=llama32_1b)"
        )
    layout_name = str(cfg.get("layout", name))
    if layout_name not in LAYOUTS:
        raise ValueError(f"dataset.layout={layout_name!r} is unknown; known: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[layout_name]
    folder = check_present(cfg, data_dir)
    num_classes = int(cfg["num_classes"])
    train = read_tsv(folder / SPLITS["train"], layout, num_classes)
    test = read_tsv(folder / SPLITS["test"], layout, num_classes)
    val, holdout = None, None
    if holdout_of(cfg) is not None:  # GLUE has no validation split of its own: a seeded, stratified part of train
        train, val, holdout = split_off(train, train.labels, *holdout_of(cfg))
    return DataSplits(
        train=train,
        probe=train,
        test=test,
        val=val,
        split_listing=holdout,  # which training rows were held out as validation
        num_classes=num_classes,
        collate_fn=TextCollate(inputs.tokenizer, int(inputs.max_length)),
        metrics=tuple(cfg.get("metrics") or ("acc",)),
        class_names=layout.label_names or tuple(str(i) for i in range(num_classes)),
    )


def label_names(cfg: Mapping) -> list[str] | None:
    """The task's label names where its files use names (RTE); ``None`` where labels are integers."""
    layout = LAYOUTS.get(str(cfg.get("layout", cfg.get("name"))))
    return list(layout.label_names) if layout is not None and layout.label_names else None

"""Your own texts (``dataset=text dataset.train=FILE dataset.test=FILE``): tables read with pandas.

The format follows the extension: ``.csv``, ``.tsv`` (or ``.tab``), ``.jsonl`` (or ``.ndjson``,
JSON Lines), ``.parquet``. A folder written by Hugging Face ``datasets``' ``save_to_disk`` works too:
a ``Dataset`` folder is that split; a ``DatasetDict`` folder gives its ``train`` split for
``dataset.train``, and its ``test`` and ``validation`` splits unless ``dataset.test`` / ``dataset.val``
name other files. Columns: ``text``, an optional second segment ``text_pair`` and ``label``, each
renamed with ``dataset.columns.<name>``. Labels may be strings or numbers: the sorted distinct
training labels become the class ids 0..n-1 and their names are kept (a ``datasets`` ClassLabel
keeps its own names and order). Without a test file, ``dataset.test_fraction`` holds out a seeded,
stratified share of the training rows; ``dataset.val_fraction`` does the same for validation.

Checked before any model loads, each one line naming the file and the fix: a missing file, an
unknown format, a missing column, an empty text or label, fewer than two classes, a test or
validation label the training file never has, a ``dataset.num_classes`` that disagrees.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .glue import TextCollate, TextItems
from .own import OwnDataError, content_digest, held_out, ordered_names
from .splits import DataSplits, InputSpec

INPUT_KIND = "text"
READERS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
DICT_SPLITS = {"train": ("train",), "test": ("test",), "val": ("validation", "val")}
COLUMNS = ("text", "text_pair", "label")
_TABLES: dict[tuple, Texts] = {}


@dataclass
class Table:
    """One split as read: rows of text (and pair), raw label values, and ClassLabel names if any."""

    source: str  # the file (or folder and split) it came from, for messages
    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    label_names: list[str] | None = None


@dataclass
class Texts:
    """All splits, labels as class ids, and the class names."""

    classes: list[str]
    splits: dict[str, TextItems]
    rows: dict[str, list[int]]  # which rows of the training file each split holds, where a fraction was held out
    held: dict[str, str]


def columns_of(cfg: Mapping) -> dict[str, str]:
    given = dict(cfg.get("columns") or {})
    unknown = sorted(set(given) - set(COLUMNS))
    if unknown:
        raise OwnDataError(f"dataset.columns: unknown key(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    return {name: str(given.get(name) or name) for name in COLUMNS}


def path_of(cfg: Mapping, split: str) -> Path | None:
    value = cfg.get(split)
    return None if value in (None, "") else Path(str(value)).expanduser()


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))


def read_frame(path: Path, key: str):
    """The file as a pandas DataFrame of strings (numbers as written), by its extension."""
    import pandas as pd

    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise OwnDataError(
            f"{key}={path}: unknown format {path.suffix or '(no extension)'!r}; use one of "
            f"{', '.join(READERS)}, or a folder written by datasets' save_to_disk"
        )
    try:
        if kind in ("csv", "tsv"):
            return pd.read_csv(
                path, sep="," if kind == "csv" else "\t", dtype=str, keep_default_na=False, encoding="utf-8-sig"
            )
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except ImportError as err:
        raise OwnDataError(f"{path}: reading {kind} needs {err.name}; pip install pyarrow") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OwnDataError(f"cannot read {path} as {kind} ({first}); fix the file or its extension") from None


def load_dataset_dir(path: Path, key: str):
    try:
        import datasets
    except ImportError:
        raise OwnDataError(
            f"{key}={path} is a Hugging Face datasets folder, which needs the datasets package: pip install datasets"
        ) from None
    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise OwnDataError(f"cannot read {path} with datasets.load_from_disk ({err}); save it again") from None


def dataset_split(loaded, path: Path, split: str, key: str):
    """The ``split`` of a DatasetDict (None if it has none), or the Dataset itself."""
    if not hasattr(loaded, "keys"):
        return loaded
    for name in DICT_SPLITS[split]:
        if name in loaded:
            return loaded[name]
    if split == "train":
        raise OwnDataError(
            f"{key}={path} holds the splits {', '.join(loaded)} but no train split; name one train, or give the file"
        )
    return None


def table_of(frame, source: str, columns: dict[str, str], label_names: list[str] | None) -> Table:
    """Columns picked out and checked; every value as text (numbers as written)."""
    need = [columns["text"], columns["label"]]
    pair_given = columns["text_pair"] != "text_pair"  # renamed: the user says it is there
    if pair_given:
        need.append(columns["text_pair"])
    absent = [c for c in need if c not in frame.columns]
    if absent:
        raise OwnDataError(
            f"{source} has no column {absent[0]!r} (columns: {', '.join(map(str, frame.columns))}); "
            f"rename the column, or set dataset.columns.{_role(columns, absent[0])}=<its name>"
        )
    values = {}
    for role in COLUMNS:
        name = columns[role]
        if name not in frame.columns:
            continue
        cells = frame[name].tolist()
        for row, cell in enumerate(cells, start=1):
            if cell is None or (isinstance(cell, float) and cell != cell) or str(cell).strip() == "":
                raise OwnDataError(f"{source}: row {row} has no {name!r}; fill it in or remove the row")
        values[role] = [str(c) for c in cells]
    if not values["text"]:
        raise OwnDataError(f"{source} has no rows; add labelled texts")
    labels = values["label"]
    if label_names is not None:
        labels = [label_names[int(v)] if 0 <= int(v) < len(label_names) else v for v in labels]
    return Table(source, values["text"], values.get("text_pair"), labels, label_names)


def _role(columns: dict[str, str], name: str) -> str:
    return next(role for role, col in columns.items() if col == name)


def read_table(path: Path, split: str, key: str, columns: dict[str, str]) -> Table | None:
    if not path.exists():
        raise OwnDataError(f"{key}={path} does not exist; give the path of a {'/'.join(READERS)} file")
    if path.is_dir():
        if not is_dataset_dir(path):
            raise OwnDataError(
                f"{key}={path} is a folder but not one written by datasets' save_to_disk; give a file "
                f"({', '.join(READERS)}) or such a folder"
            )
        data = dataset_split(load_dataset_dir(path, key), path, split, key)
        if data is None:
            return None
        feature = data.features.get(columns["label"])
        names = list(feature.names) if hasattr(feature, "names") else None
        return table_of(data.to_pandas(), f"{path} ({data.split or split} split)", columns, names)
    return table_of(read_frame(path, key), str(path), columns, None)


def _stats(cfg: Mapping) -> tuple:
    """What the parsed tables depend on: the settings and every input file's size and time."""
    parts = [
        json.dumps(
            {
                k: _plain(cfg.get(k))
                for k in (
                    "train",
                    "test",
                    "val",
                    "columns",
                    "test_fraction",
                    "val_fraction",
                    "split_seed",
                    "num_classes",
                )
            },
            sort_keys=True,
            default=str,
        )
    ]
    for split in ("train", "test", "val"):
        path = path_of(cfg, split)
        for file in _files_under(path) if path is not None else []:
            stat = file.stat()
            parts.append((str(file), stat.st_size, stat.st_mtime_ns))
    return tuple(parts)


def _plain(value):
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, DictConfig) else value


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        found += [Path(dirpath) / name for name in sorted(filenames)]
    return found


def read_texts(cfg: Mapping) -> Texts:
    """Every split read and checked, labels as ids (kept for the process by the files' sizes and times)."""
    key = _stats(cfg)
    if key not in _TABLES:
        _TABLES[key] = _read_texts(cfg)
    return _TABLES[key]


def _read_texts(cfg: Mapping) -> Texts:
    columns = columns_of(cfg)
    train_path = path_of(cfg, "train")
    if train_path is None:
        raise OwnDataError(
            "dataset=text needs dataset.train=FILE (and dataset.test=FILE): a csv, tsv, jsonl or parquet file with "
            "columns text and label"
        )
    tables = {"train": read_table(train_path, "train", "dataset.train", columns)}
    held = {}
    for split in ("test", "val"):
        given = path_of(cfg, split)
        if given is not None:
            tables[split] = read_table(given, split, f"dataset.{split}", columns)
            held[split] = "file"
        elif train_path.is_dir():
            found = read_table(train_path, split, "dataset.train", columns)
            if found is not None:
                tables[split], held[split] = found, "datasets folder"
    train = tables["train"]
    classes = train.label_names or ordered_names(train.labels)
    if len(set(train.labels)) < 2:
        raise OwnDataError(
            f"{train.source} has {len(set(train.labels))} distinct label(s) ({', '.join(sorted(set(train.labels)))}); "
            "a classifier needs at least two"
        )
    index = {name: i for i, name in enumerate(classes)}
    for split, table in tables.items():
        if split != "train" and (table.pairs is None) != (train.pairs is None):
            raise OwnDataError(
                f"{table.source} {'lacks' if table.pairs is None else 'has'} the text_pair column that "
                f"{train.source} {'has' if table.pairs is None else 'lacks'}; give both files the same columns"
            )
        for row, label in enumerate(table.labels, start=1):
            if label.strip() not in index:
                raise OwnDataError(
                    f"{table.source}: row {row} has label {label!r}, which {train.source} never has, so the model "
                    f"cannot learn it; add training rows with that label, or remove it (training labels: "
                    f"{', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
                )
    given = cfg.get("num_classes")
    if given is not None and int(given) != len(classes):
        raise OwnDataError(
            f"dataset.num_classes={given} but {train.source} has {len(classes)} labels; drop dataset.num_classes "
            "(it is read from the labels)"
        )
    items = {
        split: TextItems(t.texts, [index[label.strip()] for label in t.labels], t.pairs) for split, t in tables.items()
    }
    rows = {"train": list(range(len(items["train"])))}
    seed = int(cfg.get("split_seed", 0))
    for split in ("test", "val"):
        key = f"dataset.{split}_fraction"
        fraction = cfg.get(f"{split}_fraction")
        if fraction is None:
            continue
        if split in items:
            raise OwnDataError(
                f"{key}={fraction} is set but the {split} split is given ({held[split]}); drop one of the two"
            )
        kept, out = held_out(items["train"].labels, fraction, seed, key)
        rows[split] = [rows["train"][i] for i in out]
        rows["train"] = [rows["train"][i] for i in kept]
        items[split] = subset(items["train"], out)
        items["train"] = subset(items["train"], kept)
        held[split] = key
    if "test" not in items:
        raise OwnDataError(
            f"no test split for {train.source}: set dataset.test=FILE, or dataset.test_fraction=0.2 to hold out a "
            "seeded share of each label of the training file"
        )
    return Texts(classes, items, rows, held)


def subset(items: TextItems, indices: list[int]) -> TextItems:
    pairs = [items.pairs[i] for i in indices] if items.pairs is not None else None
    return TextItems([items.texts[i] for i in indices], [items.labels[i] for i in indices], pairs)


def check_present(cfg: Mapping, data_dir: Path) -> Texts:
    return read_texts(cfg)


def class_names(cfg: Mapping, data_dir: Path) -> list[str]:
    return read_texts(cfg).classes


def fingerprint(cfg: Mapping, data_dir: Path) -> dict:
    """The data's identity for the run key: each given path and a hash of its files' bytes. Never raises."""
    identity = {}
    for split in ("train", "test", "val"):
        path = path_of(cfg, split)
        if path is None:
            continue
        path = path.resolve()
        files = _files_under(path)
        try:
            digest = content_digest((str(f.relative_to(path)) if path.is_dir() else f.name, f) for f in files)
        except OSError:
            digest = "unreadable"
        identity[split] = {"path": str(path), "files": digest if files else "missing"}
    return identity


def build(cfg: Mapping, data_dir: Path, inputs: InputSpec) -> DataSplits:
    if inputs.kind != "text" or inputs.tokenizer is None:
        raise OwnDataError(
            f"dataset {cfg.get('name')} holds texts but the model takes {inputs.kind!r} inputs; "
            "choose a text model (e.g. model=hf model.name=<a transformers text model>)"
        )
    texts = read_texts(cfg)
    return DataSplits(
        train=texts.splits["train"],
        probe=texts.splits["train"],
        test=texts.splits["test"],
        val=texts.splits.get("val"),
        num_classes=len(texts.classes),
        collate_fn=TextCollate(inputs.tokenizer, int(inputs.max_length)),
        metrics=tuple(cfg.get("metrics") or ("acc",)),
        class_names=tuple(texts.classes),
        split_listing={
            "classes": texts.classes,
            "held_out_by": texts.held,
            # row numbers (from 0) of the training file in each split drawn from it
            "rows_of_training_file": texts.rows,
        },
    )

"""Classify new inputs with a finished run: ``python -m grft_app.predict RUN_DIR INPUT... [--out FILE.csv]``.

The run is rebuilt from its directory alone (``grft_app.trained``). Inputs:

- an image run takes image files, and folders (searched recursively, files in sorted order), each
  image turned RGB and fed through the run's own evaluation transform;
- a text run takes text files (``.txt``: one input per non-empty line) and tables (``.csv``, ``.tsv``,
  ``.jsonl``, ``.parquet``, read with pandas) with a text column (``--text-column``, and
  ``--pair-column`` for a second segment), tokenized by the run's tokenizer.

Every input is checked before the model is built. It prints one line per input (the input, the
predicted class's name and its probability); ``--out`` writes the same as CSV (columns ``input``,
``class``, ``class_index``, ``probability``, and ``text`` for text), only once every input is done.
A bad run directory or input is one line naming it and the fix, exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
TEXT_SUFFIXES = (".txt", *TABLE_SUFFIXES)


class BadInput(ValueError):
    """An input that cannot be read or does not suit the run; the message names it and the fix."""


@dataclass(frozen=True)
class Item:
    """One input: where it came from (a file, or ``file:row``), and its content (image path or text)."""

    source: str
    image: Path | None = None
    text: str | None = None
    pair: str | None = None


# --- inputs ---------------------------------------------------------------------------------------
def image_suffixes() -> set[str]:
    """Every file extension PIL can open here."""
    from PIL import Image

    return {suffix.lower() for suffix in Image.registered_extensions()}


def image_items(inputs: Sequence[str]) -> list[Item]:
    """Image files, and the images of folders (recursively, sorted); each is opened (header only) here."""
    suffixes = image_suffixes()
    items = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise BadInput(f"{path} holds no image file ({', '.join(sorted(suffixes)[:6])}, ...)")
        elif path.is_file():
            if path.suffix.lower() in TEXT_SUFFIXES:
                raise BadInput(f"{path} is text, but this run's model takes images; give image files or folders")
            found = [path]
        else:
            raise BadInput(f"{path} does not exist; give image files or folders of images")
        for image in found:
            check_image(image)
            items.append(Item(str(image), image=image))
    return items


def check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise BadInput(f"cannot read {path} as an image ({type(err).__name__}: {err}); give image files") from None


def text_items(inputs: Sequence[str], text_column: str, pair_column: str | None, run_pair: str | None) -> list[Item]:
    """``run_pair``: the run's own second-segment column, read when a table has it and no ``pair_column`` is given."""
    items = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            raise BadInput(f"{path} is a folder, but this run's model takes text; give text files or tables")
        if not path.is_file():
            raise BadInput(f"{path} does not exist; give text files (.txt: one input per line) or tables")
        suffix = path.suffix.lower()
        if suffix in image_suffixes():
            raise BadInput(f"{path} is an image, but this run's model takes text; give text files or tables")
        if suffix == ".txt":
            items += lines_of(path)
        elif suffix in TABLE_SUFFIXES:
            items += rows_of(path, text_column, pair_column or _present(path, run_pair))
        else:
            raise BadInput(f"{path}: unknown kind of text file {suffix!r}; give {', '.join(TEXT_SUFFIXES)} files")
    return items


def _present(path: Path, column: str | None) -> str | None:
    return column if column is not None and column in read_table(path).columns else None


def lines_of(path: Path) -> list[Item]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise BadInput(f"cannot read {path} as UTF-8 text ({err}); save it as UTF-8") from None
    items = [Item(f"{path}:{n}", text=line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    if not items:
        raise BadInput(f"{path} holds no text (every line is empty)")
    return items


def read_table(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - pandas and its engines raise many types; all mean "unreadable"
        raise BadInput(f"cannot read {path} as a {suffix[1:]} table ({type(err).__name__}: {err})") from None


def rows_of(path: Path, text_column: str, pair_column: str | None) -> list[Item]:
    frame = read_table(path)
    for column, option in ((text_column, "--text-column"), (pair_column, "--pair-column")):
        if column is not None and column not in frame.columns:
            raise BadInput(
                f"{path} has no column {column!r} (its columns: {', '.join(map(str, frame.columns))}); "
                f"name the column to read with {option}"
            )
    if frame.empty:
        raise BadInput(f"{path} has no rows")
    texts = frame[text_column].astype(str).tolist()
    pairs = frame[pair_column].astype(str).tolist() if pair_column else [None] * len(texts)
    # Row numbers as a spreadsheet shows them: the header is row 1 in CSV/TSV.
    first = 2 if path.suffix.lower() in (".csv", ".tsv") else 1
    return [Item(f"{path}:{first + i}", text=t, pair=p) for i, (t, p) in enumerate(zip(texts, pairs, strict=True))]


# --- the model ------------------------------------------------------------------------------------
def batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def image_batch(items: list[Item], transform):
    import torch

    from .data.images import load_rgb

    images = []
    for item in items:
        try:
            images.append(transform(load_rgb(item.image)))
        except ValueError as err:  # a file whose header read but whose pixels do not decode
            raise BadInput(f"cannot read {item.image} as an image ({err}); give image files") from None
    return torch.stack(images)


def text_batch(items: list[Item], collate):
    inputs = collate([({"text": item.text, "text_pair": item.pair}, 0) for item in items])
    inputs.pop("labels")
    return inputs


def batch_maker(run) -> Callable[[list[Item]], object]:
    """Items -> the model's input: images through the run's evaluation transform, texts through its tokenizer."""
    if run.kind == "image":
        from .data import eval_transform

        return functools.partial(image_batch, transform=eval_transform(run.cfg.dataset, run.bundle.inputs))
    from .data.glue import TextCollate

    inputs = run.bundle.inputs
    return functools.partial(text_batch, collate=TextCollate(inputs.tokenizer, int(inputs.max_length)))


def predict(run, items: list[Item], batch_size: int = 32) -> list[dict]:
    """One row per input: ``input``, ``class``, ``class_index``, ``probability`` (and ``text`` for text)."""
    import torch

    from .trained import logits_of

    make = batch_maker(run)
    device = next(run.model.parameters()).device
    rows = []
    with torch.no_grad():
        for chunk in batches(items, batch_size):
            inputs = make(chunk)
            inputs = {k: v.to(device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(device)
            probs = logits_of(run.model, inputs).float().softmax(-1)
            best = probs.max(-1)
            for item, p, i in zip(chunk, best.values.tolist(), best.indices.tolist(), strict=True):
                row = {"input": item.source, "class": run.class_names[i], "class_index": i, "probability": p}
                if item.text is not None:
                    row["text"] = item.text if item.pair is None else f"{item.text} | {item.pair}"
                rows.append(row)
    return rows


# --- the command ----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m grft_app.predict",
        description="Classify images or texts with a finished run (rebuilt from its directory alone).",
    )
    parser.add_argument("run_dir", help="the run's directory (the folder of its record.json)")
    parser.add_argument("inputs", nargs="+", help="image files or folders (image runs); .txt/.csv/... files (text)")
    parser.add_argument("--out", help="also write the predictions to this CSV file")
    parser.add_argument(
        "--text-column", default=None, help="tables: the column with the text (default: the run's, else text)"
    )
    parser.add_argument(
        "--pair-column", default=None, help="tables: a second segment's column (default: the run's, if there)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    return parser.parse_args(argv)


def read_inputs(kind: str, args: argparse.Namespace, dataset_cfg: dict) -> list[Item]:
    if kind == "image":
        return image_items(args.inputs)
    columns = dataset_cfg.get("columns") or {}  # a run on your own texts: its column names
    text_column = args.text_column or columns.get("text") or "text"
    items = text_items(args.inputs, text_column, args.pair_column, columns.get("text_pair"))
    if len({item.pair is None for item in items}) > 1:  # the tokenizer takes a batch of pairs or of single texts
        raise BadInput("some inputs have a second text segment and others not; give every input a pair, or none")
    return items


def write_csv(rows: list[dict], path: Path) -> Path:
    import pandas as pd

    from grft.io import write_atomic

    return write_atomic(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))


def main(argv: Sequence[str] | None = None) -> int:
    from .data import input_kind
    from .trained import finished_record, load_run

    args = parse_args(argv)
    try:
        if args.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1, got {args.batch_size}")
        record = finished_record(args.run_dir)
        dataset_cfg = record.config.get("dataset") or {}
        items = read_inputs(input_kind(dataset_cfg), args, dataset_cfg)  # every input checked before the model is built
        run = load_run(args.run_dir, device=args.device)
        rows = predict(run, items, args.batch_size)
        if args.out:
            write_csv(rows, Path(args.out))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    width = max(len(row["input"]) for row in rows)
    for row in rows:
        print(f"{row['input']:<{width}}  {row['class']}  {row['probability']:.3f}")
    if args.out:
        print(f"wrote {len(rows)} predictions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GLUE (CoLA, MRPC, RTE): download with Hugging Face ``datasets``, write the original TSV layout, verify.

``data_dir/glue/<TASK>/train.tsv`` and ``dev.tsv`` as GLUE distributes them (what
``grft_app.data.glue`` reads). The Hugging Face copy keeps the text and labels but not CoLA's source
codes nor MRPC's sentence ids; those columns are filled with placeholders (``glue`` and running
numbers), which no loader reads. A copy of the original GLUE files can be unpacked there instead.

    python -m data_prep.glue --data-dir data                 # all three, then check
    python -m data_prep.glue --data-dir data --check
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from grft_app.data.catalog import Task
from grft_app.data.glue import LAYOUTS, SPLITS, read_tsv

from . import common

HF_DATASET = "nyu-mll/glue"
HF_SPLITS = {"train": "train", "test": "validation"}  # our test split is GLUE's dev set


def clean(text: str) -> str:
    """One TSV field: tabs and line breaks inside a sentence become spaces."""
    return " ".join(str(text).replace("\t", " ").splitlines()).strip()


def cola_lines(rows: Iterable[Mapping]) -> list[str]:
    # source, label, original acceptability mark ("*" = unacceptable), sentence; no header
    return [f"glue\t{int(r['label'])}\t{'' if int(r['label']) else '*'}\t{clean(r['sentence'])}" for r in rows]


def mrpc_lines(rows: Iterable[Mapping]) -> list[str]:
    lines = ["\t".join(LAYOUTS["mrpc"].columns)]
    for i, r in enumerate(rows):
        lines.append(f"{int(r['label'])}\t{2 * i + 1}\t{2 * i + 2}\t{clean(r['sentence1'])}\t{clean(r['sentence2'])}")
    return lines


def rte_lines(rows: Iterable[Mapping]) -> list[str]:
    names = LAYOUTS["rte"].label_names
    lines = ["\t".join(LAYOUTS["rte"].columns)]
    lines += [
        f"{i}\t{clean(r['sentence1'])}\t{clean(r['sentence2'])}\t{names[int(r['label'])]}" for i, r in enumerate(rows)
    ]
    return lines


WRITERS = {"cola": cola_lines, "mrpc": mrpc_lines, "rte": rte_lines}


def write_task(task: Task, folder: Path, splits: Mapping[str, Iterable[Mapping]]) -> dict[str, int]:
    """Write ``train.tsv`` / ``dev.tsv`` from rows with the Hugging Face GLUE fields; returns row counts."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, filename in SPLITS.items():
        lines = WRITERS[task.name](splits[split])
        (folder / filename).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        counts[filename] = len(lines) - (1 if LAYOUTS[task.name].header else 0)
    return counts


def check_task(task: Task, data_dir: Path, sizes: dict | None = None) -> common.Report:
    """Both TSV files present, readable in the original layout, with the expected number of examples."""
    report = common.start_report(task, data_dir)
    if not report.ok:
        return report
    sizes = sizes or task.sizes
    files = {filename.removesuffix(".tsv"): filename for filename in SPLITS.values()}
    common.read_splits(
        report,
        files,
        lambda path: read_tsv(path, LAYOUTS[task.name], task.num_classes),
        sizes,
        "{file} has {got} examples, expected {want}",
    )
    return report


def prepare(task: Task, data_dir: Path) -> None:
    folder = task.folder_in(data_dir)
    if all((folder / f).is_file() for f in SPLITS.values()):
        print(f"{task.name}: {folder} already has its TSV files; checking it (delete them to convert again)")
        return
    datasets = common.require("datasets", "prep-glue", "downloading GLUE")
    print(f"{task.name}: downloading {HF_DATASET}/{task.name} into {folder}")
    loaded = datasets.load_dataset(HF_DATASET, task.name)
    counts = write_task(task, folder, {ours: loaded[theirs] for ours, theirs in HF_SPLITS.items()})
    print(f"{task.name}: wrote {counts}")


def main(argv: list[str] | None = None) -> int:
    p = common.parser("glue", "GLUE CoLA/MRPC/RTE: download, write the original TSV layout, verify.")
    args = p.parse_args(argv)
    tasks = common.select_tasks("glue", args.tasks)
    prep = None if args.check else (lambda t: prepare(t, args.data_dir))
    return common.run(tasks, prep, lambda t: check_task(t, args.data_dir))


if __name__ == "__main__":
    sys.exit(main())

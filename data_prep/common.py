"""What the three families' prep commands share: the command line, problem reports, downloads."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grft_app.data.catalog import Task, tasks_of


@dataclass
class Report:
    """Problems found in one task folder; empty means the folder is ready to train on."""

    task: str
    folder: Path
    problems: list[str] = field(default_factory=list)

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"ok       {self.task:22s} {self.folder}"
        lines = [f"PROBLEMS {self.task:22s} {self.folder}"]
        lines += [f"    - {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"    ... and {len(self.problems) - 20} more")
        return "\n".join(lines)


def start_report(task, data_dir) -> Report:
    """The report of ``task``'s folder under ``data_dir``; it already says so when the folder is missing."""
    report = Report(task.name, task.folder_in(data_dir))
    if not report.folder.is_dir():
        report.add(f"folder missing; fetch it with `{task.prep_command(str(data_dir))}`")
    return report


def read_splits(report: Report, files: dict, read, sizes: dict, wrong_count: str) -> dict:
    """Read each split file (``key -> file name`` in ``report.folder``) with ``read(path)``.

    A missing file, one ``read`` rejects (``ValueError``) or one with other than ``sizes[key]``
    items goes into the report (``wrong_count`` formats the last, with ``file``, ``got``,
    ``want``); the splits that could be read come back, key -> items.
    """
    splits = {}
    for key, name in files.items():
        path = report.folder / name
        if not path.is_file():
            report.add(f"{name} missing")
            continue
        try:
            splits[key] = read(path)
        except ValueError as err:
            report.add(str(err))
            continue
        if len(splits[key]) != sizes[key]:
            report.add(wrong_count.format(file=name, got=len(splits[key]), want=sizes[key]))
    return splits


def image_problem(path: Path) -> str | None:
    """None if ``path`` decodes as an image, else what is wrong with it."""
    from PIL import Image

    if not path.is_file():
        return f"image missing: {path}"
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # any decoder failure is a problem to report, never a crash of the check
        return f"image unreadable: {path} ({err.__class__.__name__}: {err})"
    return None


def check_images(paths: Iterable[Path], report: Report, verify: bool = True) -> None:
    for path in paths:
        problem = image_problem(path) if verify else (None if path.is_file() else f"image missing: {path}")
        if problem:
            report.add(problem)


def require(module: str, extra: str, why: str):
    """Import an optional package or exit with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"{why} needs the package {module!r}: pip install -e '.[{extra}]'") from None


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` (kept if already there), through a temporary name so a broken download never counts."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    print(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise SystemExit(
            f"could not download {url} ({err}); fetch it by hand and put it at {dest}, then run again"
        ) from None
    tmp.replace(dest)
    return dest


def extract(archive: Path, dest: Path) -> None:
    print(f"extracting {archive} -> {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")


def select_tasks(family: str, names: str | None) -> list[Task]:
    known = {t.name: t for t in tasks_of(family)}
    if not names:
        return list(known.values())
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown {family} task(s) {unknown}; known: {', '.join(known)}")
    return [known[n] for n in chosen]


def parser(family: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m data_prep.{family}", description=description)
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="the run's data_dir (default: data)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all of the family)")
    p.add_argument("--check", action="store_true", help="only verify the folders and report problems")
    p.add_argument(
        "--no-verify-images", action="store_true", help="check that listed images exist, not that they decode"
    )
    return p


def run(tasks: list[Task], prepare: Callable[[Task], None] | None, check: Callable[[Task], Report]) -> int:
    """Prepare (unless ``prepare`` is None) then check each task; exit status 1 if any has problems."""
    reports = []
    for task in tasks:
        if prepare is not None:
            prepare(task)
        report = check(task)
        print(report, flush=True)
        reports.append(report)
    bad = [r.task for r in reports if not r.ok]
    if bad:
        print(f"\n{len(bad)} of {len(reports)} task(s) have problems: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"\nall {len(reports)} task(s) ok")
    return 0

"""What a user sees when a launch fails, and what the failed launch leaves on disk.

Why: a traceback is what a newcomer reads first, and it rarely says what to change. Every error
that escapes a launch is shown as one line first: the problem and the fix for the errors a user
can cause (configuration, data, a busy run directory, memory), and for any other error where it
was raised and where its full traceback is (the run's ``run.log``; ``HYDRA_FULL_ERROR=1`` or
``GRFT_TRACEBACK=1`` prints it too).

A failed launch should leave nothing that looks like a run: a directory with only Hydra's files,
an empty log folder and a lock file confuses the next reader. A directory that holds a record
(finished, or a failed sweep job's) or a checkpoint (resumable) is left alone; otherwise what
this launch created there is removed, and a directory this launch created for nothing goes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..paths import ROOT

# Where our own frames of a traceback live (the library and the app, not the packages they call).
OUR_CODE = tuple(f"{ROOT / tier}{os.sep}" for tier in ("grft", "grft_app"))
HYDRA_FILES = {".hydra", "run.log"}
# What a launch writes into a run directory that is worth nothing without a record or a checkpoint.
HUSKS = (
    ".lock",
    "logs",
    "tensorboard",
    "wandb",
    "memory.csv",
    "selection.safetensors",
    "adapter.safetensors",
    "checkpoints",
    "data_split.json",
)


def wants_traceback() -> bool:
    return any(os.environ.get(name, "").strip() not in ("", "0") for name in ("HYDRA_FULL_ERROR", "GRFT_TRACEBACK"))


def _user_errors() -> tuple[type, ...]:
    """Exceptions whose message already names the problem and the fix (ours, and the library's)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from .lock import RunLocked
    from .settings import ConfigError

    return (ConfigError, FileNotFoundError, ValueError, RunLocked, MisconfigurationException)


def is_user_error(err: BaseException) -> bool:
    import torch

    from grft.io import is_disk_full

    return isinstance(err, (*_user_errors(), torch.OutOfMemoryError, MemoryError)) or is_disk_full(err)


def mount_of(path: Path) -> Path:
    """The mount point (the disk) that holds ``path``."""
    path = Path(path).absolute()
    while not path.exists() or (not os.path.ismount(path) and path.parent != path):
        path = path.parent
    return path


def disk_full_line(err: BaseException) -> str:
    written = getattr(err, "filename", None)
    where = f"{mount_of(Path(written))} while writing {written}" if written else "the disk while writing run files"
    return (
        f"error: no space left on {where}; free space there (or point paths.runs at another disk) and launch "
        "again: the run resumes from its last checkpoint"
    )


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def explain(err: BaseException, traceback_at: Path | None = None) -> str:
    """One line: the problem and what to do about it."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return (
            "error: out of accelerator memory; lower batch_size (and eval_batch_size, probe.batch_size), "
            "or use trainer=gpu (bf16)"
        )
    if isinstance(err, MemoryError):
        return "error: out of memory; lower batch_size (and eval_batch_size, probe.batch_size) or num_workers"
    from grft.io import is_disk_full

    if is_disk_full(err):
        return disk_full_line(err)
    if is_user_error(err):
        return f"error: {first_line(err) or type(err).__name__}"
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if f.filename.startswith(OUR_CODE)]
    where = f" in {_frame(frames[-1])}" if frames else ""
    if ours and ours[-1] is not frames[-1]:
        where += f", called from {_frame(ours[-1])}"
    message = first_line(err)
    full = f"full traceback in {traceback_at}" if traceback_at else "full traceback: run again with HYDRA_FULL_ERROR=1"
    return (
        f"error: {type(err).__name__}{where}{': ' + message if message else ''}. "
        f"No check of ours caught this; {full} (please report it with that traceback)"
    )


def _frame(frame: traceback.FrameSummary) -> str:
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def log_traceback(err: BaseException) -> Path | None:
    """Write the full traceback to the run's log file only (not the console); returns that file."""
    record = logging.LogRecord(
        "grft", logging.ERROR, __file__, 0, "launch failed", None, (type(err), err, err.__traceback__)
    )
    written = None
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            written = Path(handler.baseFilename)
    return written


@dataclass
class Before:
    """A run directory as it was when the launch began: its top-level entries, and whether it was fresh."""

    path: Path
    entries: set[str] | None  # None: it did not exist

    @property
    def fresh(self) -> bool:
        """Nothing but what Hydra wrote for this launch (an empty log) was there."""
        if self.entries is None:
            return True
        log_file = self.path / "run.log"
        return self.entries <= HYDRA_FILES and (not log_file.is_file() or log_file.stat().st_size == 0)


def snapshot(paths: Iterable[Path]) -> list[Before]:
    return [Before(Path(p), {e.name for e in Path(p).iterdir()} if Path(p).is_dir() else None) for p in paths]


def holds_results(run_dir: Path) -> bool:
    """A record (finished or failed) or a checkpoint to resume from: never tidied away."""
    return (run_dir / "record.json").is_file() or any((run_dir / "checkpoints").glob("*.ckpt"))


def _held_by_another(run_dir: Path) -> bool:
    lock = run_dir / ".lock"
    if not lock.is_file():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def tidy(before: Before, keep_report: bool, runs_root: Path | None = None) -> None:
    """Remove what a failed launch created in ``before.path`` (see the module docstring).

    ``keep_report``: keep Hydra's config and ``run.log`` (they hold the traceback of an unexpected
    error); otherwise a directory this launch created is removed whole.
    """
    run_dir = before.path
    if not run_dir.is_dir() or holds_results(run_dir) or _held_by_another(run_dir):
        return
    created = {e.name for e in run_dir.iterdir()} - (before.entries or set())
    if before.fresh and not keep_report:
        shutil.rmtree(run_dir, ignore_errors=True)
        _prune_empty_parents(run_dir.parent, runs_root)
        return
    for name in created & set(HUSKS):
        target = run_dir / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def _prune_empty_parents(folder: Path, stop: Path | None) -> None:
    """``<runs>/<dataset>/<method>/`` left empty by the removal go too, up to ``stop``."""
    if stop is None:
        return
    stop = stop.resolve()
    folder = folder.resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent

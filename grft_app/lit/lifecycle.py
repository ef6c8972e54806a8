"""What happens to a run directory across launches: starting over, resuming, time kept, pre-emption.

- ``start_over`` (``force=true``): the old record and launch log go to ``history/``, the
  checkpoints are deleted, so the run trains again from the pre-trained weights.
- ``resume_point``: the newest intact checkpoint (each carries a SHA-256 beside it, checked
  first), or ``None`` with one line saying why the run starts over; a damaged one with no intact
  one to fall back on is named with its fix before Lightning tries it.
- ``LaunchClock``: every launch's training time in ``launches.json``, rewritten at each checkpoint
  (and every ``every_s`` seconds), so a run killed with ``kill -9`` still counts the launches it
  had; the record reports each launch and their sum.
- ``Preempted``: SIGTERM (what SLURM sends before a kill) ends the launch with exit status 143
  after the record says ``preempted``; relaunching resumes from the last end-of-epoch checkpoint.
  ``Interrupted``: Ctrl-C does the same with status ``interrupted`` and exit status 130.
  ``stop_signals`` makes both work from the first moment of a launch (the probe included), not
  only once Lightning's own SIGTERM handler is in place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L

from grft import __version__
from grft.io import write_json_atomic

from ..identity import RESULTS_VERSION
from ..paths import ROOT
from ..record import HISTORY_DIR, RECORD_NAME, CodeFacts

LAUNCHES_NAME = "launches.json"
# Files of one attempt at a run: kept in history/ when force=true starts it again.
ATTEMPT_FILES = (RECORD_NAME, LAUNCHES_NAME, "selection.safetensors", "adapter.safetensors", "memory.csv")
SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended
SIGINT_EXIT = 130  # 128 + SIGINT

log = logging.getLogger("grft")


class Preempted(SystemExit):
    """The launch stopped on SIGTERM; its record says ``preempted`` and a relaunch resumes it."""

    def __init__(self):
        super().__init__(SIGTERM_EXIT)


class Stopped(SystemExit):
    """The launch stopped on Ctrl-C; its record says ``interrupted`` and a relaunch resumes it."""

    def __init__(self):
        super().__init__(SIGINT_EXIT)


class Interrupted(BaseException):
    """Raised by the SIGINT handler of ``stop_signals``.

    Not ``KeyboardInterrupt``: Lightning turns that into ``sys.exit(1)``, which reads as a failure.
    """


class CorruptCheckpoint(ValueError):
    """The last checkpoint cannot be read; the message names it and the fix."""


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def start_over(run_dir: Path) -> list[Path]:
    """Move the last attempt's files to ``history/<time>-<name>`` and delete its checkpoints."""
    run_dir = Path(run_dir)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    kept = []
    for name in ATTEMPT_FILES:
        path = run_dir / name
        if path.is_file():
            target = run_dir / HISTORY_DIR / f"{stamp}-{name}"  # not named record.json: tables never read it
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            kept.append(target)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return kept


def check_checkpoint(path: Path) -> None:
    """The checkpoint's SHA-256 against the one saved beside it; a file without one (written before
    checkpoints had it) is opened lazily (memory-mapped, so cheap) to find a truncated or damaged file."""
    from .checkpoints import checksum_problem

    problem = checksum_problem(Path(path))
    if problem is None:
        return
    real = Path(path).resolve()
    named = f"{path} (-> {real.name})" if real != Path(path) else str(path)
    raise CorruptCheckpoint(
        f"checkpoint {named} {problem}; launch again with force=true to train this run from the "
        f"pre-trained weights, or delete {Path(path).parent}"
    )


def _epoch_of(path: Path) -> int:
    found = re.search(r"epoch(\d+)", path.name)
    return int(found.group(1)) if found else -1


def resume_point(run_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt`` if intact, else the newest intact ``epoch*.ckpt``.

    A kill while Lightning replaces a checkpoint (new file saved, old one removed, link not yet
    moved) leaves ``last.ckpt`` pointing at a deleted file; the new file is then the one to resume
    from. ``None`` (with one line saying why) when nothing can be resumed; ``CorruptCheckpoint``
    when checkpoints exist but none is intact (a damaged file is not silently trained over).
    """
    from .checkpoints import remove_stale_temporaries

    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    remove_stale_temporaries(folder)
    last = folder / "last.ckpt"
    files = sorted({p.resolve() for p in folder.glob("*.ckpt") if p.is_file()}, key=_epoch_of, reverse=True)
    # last.ckpt first where it points at the newest file (a moved runs folder can leave it behind).
    newest = _epoch_of(files[0]) if files else None
    points_at_newest = last.is_file() and _epoch_of(last.resolve()) == newest
    candidates = ([last] if points_at_newest else []) + [folder / p.name for p in files]
    damaged = None
    for path in candidates:
        try:
            check_checkpoint(path)
        except CorruptCheckpoint as err:
            damaged = damaged or err
            continue
        if path != last and not (last.is_file() and last.resolve() == path.resolve()):
            if last.is_symlink() and not last.exists():
                why = f"points at the missing {os.readlink(last)}"
            elif damaged is not None:
                why = f"is damaged ({damaged})"
            elif last.is_file():
                why = f"points at the older {last.resolve().name}"
            else:
                why = "is missing"
            log.warning("%s %s; resuming from %s, the newest intact checkpoint", last, why, path.name)
        return path
    if damaged is not None:
        raise damaged
    if last.is_symlink():  # dangling, and nothing else to resume from
        log.warning(
            "starting over: %s points at the missing %s and no other checkpoint is left; training from the "
            "pre-trained weights (the probe runs again)",
            last,
            os.readlink(last),
        )
        last.unlink()
    return None


def code_facts() -> CodeFacts:
    """The results version (in the run key), the package version and the checkout's commit (provenance)."""
    commit, dirty = None, None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return CodeFacts(version=__version__, commit=commit, uncommitted_changes=dirty, results_version=RESULTS_VERSION)


LAUNCH_KEYS = {"started_at", "resumed", "train_s", "steps", "outcome"}


def read_launches(run_dir: Path) -> list[dict]:
    """``launches.json``'s entries; a damaged file (not a list of launches) is set aside with one line.

    It is a timing log: losing it loses the earlier launches' times, never the run itself.
    """
    path = Path(run_dir) / LAUNCHES_NAME
    if not path.is_file():
        return []
    try:
        launches = json.loads(path.read_text())
        well_formed = isinstance(launches, list) and all(
            isinstance(launch, dict) and LAUNCH_KEYS <= set(launch) for launch in launches
        )
    except (json.JSONDecodeError, UnicodeDecodeError):
        well_formed = False
    if not well_formed:
        kept = Path(run_dir) / HISTORY_DIR / f"{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}-{LAUNCHES_NAME}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, kept)
        log.warning(
            "%s is not a list of launches; moved to %s, so this run's train_s counts only the launches from now "
            "on (nothing to do; delete that copy when you no longer need it)",
            path,
            kept,
        )
        return []
    for launch in launches:
        if launch.get("outcome") == "running":  # it never reached its end: killed (kill -9, OOM, power)
            launch["outcome"] = "killed"
    return launches


class LaunchClock(L.Callback):
    """This launch's training time next to the earlier launches', saved as it goes (rank 0 writes)."""

    def __init__(self, run_dir: Path, every_s: float = 30.0):
        self.path = Path(run_dir) / LAUNCHES_NAME
        self.every_s = every_s
        self.launches = read_launches(run_dir)
        self.current: dict | None = None
        self._start = self._saved = 0.0
        self._write = True

    def start(self, resumed: bool) -> None:
        self._start = self._saved = time.perf_counter()
        self.current = {"started_at": now(), "resumed": resumed, "train_s": 0.0, "steps": 0, "outcome": "running"}
        self.launches.append(self.current)
        self._save()

    def stop(self, outcome: str) -> list[dict]:
        if self.current is not None and self.current["outcome"] == "running":
            self.current["outcome"] = outcome
            self.current["ended_at"] = now()
            try:
                self._tick()
            except OSError as err:  # e.g. the disk is still full: the launch's own error is the one to report
                log.warning("could not write this launch's end (%s) to %s: %s", outcome, self.path, err)
        return self.launches

    @property
    def this_launch_s(self) -> float:
        return float(self.current["train_s"]) if self.current else 0.0

    @property
    def total_s(self) -> float:
        return round(sum(float(launch.get("train_s", 0.0)) for launch in self.launches), 3)

    def _tick(self) -> None:
        if self.current is not None:
            self.current["train_s"] = round(time.perf_counter() - self._start, 3)
        self._save()

    def _save(self) -> None:
        if self._write:
            write_json_atomic(self.path, self.launches)
            self._saved = time.perf_counter()

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._write = trainer.is_global_zero

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.current is not None:
            self.current["steps"] += 1
            if time.perf_counter() - self._saved >= self.every_s:
                self._tick()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._tick()


@contextlib.contextmanager
def stop_signals(trainer: Callable[[], L.Trainer | None]) -> Iterator[None]:
    """SIGTERM and Ctrl-C end the launch in order from its first moment (the probe included).

    Before Lightning installs its own SIGTERM handler (after ``on_fit_start``, i.e. after the probe),
    SIGTERM would kill the process with no record; here it raises ``SIGTERMException``, as Lightning
    does at the end of a training batch. Once Lightning's handler runs (it calls this one after its
    own), Lightning stops the epoch itself. SIGINT raises ``Interrupted`` wherever it arrives.
    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def on_sigterm(signum, frame):
        current = trainer()
        if current is not None and current.received_sigterm:
            return  # Lightning's handler ran first and stops at the end of the batch
        raise SIGTERMException()

    def on_sigint(signum, frame):
        raise Interrupted()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

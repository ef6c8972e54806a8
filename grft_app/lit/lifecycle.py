"""What happens to a run directory across launches: starting over, resuming, time kept, pre-emption.

- ``start_over`` (``force=true``): the old record and launch log go to ``history/``, the
  checkpoints are deleted, so the run trains again from the pre-trained weights.
- ``check_checkpoint``: a damaged last checkpoint is named with its fix before Lightning tries it.
- ``LaunchClock``: every launch's training time in ``launches.json``, rewritten at each checkpoint
  (and every ``every_s`` seconds), so a run killed with ``kill -9`` still counts the launches it
  had; the record reports each launch and their sum.
- ``Preempted``: SIGTERM (what SLURM sends before a kill) ends the launch with exit status 143
  after the record says ``preempted``; relaunching resumes from the last end-of-epoch checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
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


class Preempted(SystemExit):
    """The launch stopped on SIGTERM; its record says ``preempted`` and a relaunch resumes it."""

    def __init__(self):
        super().__init__(SIGTERM_EXIT)


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
    """Open the checkpoint lazily (memory-mapped, so cheap) to find a truncated or damaged file early."""
    import torch

    try:
        torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to read means the same thing here
        real = Path(path).resolve()
        named = f"{path} (-> {real.name})" if real != Path(path) else str(path)
        first = str(err).splitlines()[0] if str(err) else ""
        raise CorruptCheckpoint(
            f"checkpoint {named} cannot be read ({type(err).__name__}: {first}); launch again with "
            f"force=true to train this run from the pre-trained weights, or delete {Path(path).parent}"
        ) from None


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


def read_launches(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / LAUNCHES_NAME
    if not path.is_file():
        return []
    try:
        launches = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []  # a timing log, written atomically; if damaged anyway, its times are lost, not the run
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
            self._tick()
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

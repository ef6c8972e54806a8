"""A runs folder the launch cannot write to: one line before Hydra writes anything.

Why: Hydra creates the run directory and writes its ``.hydra/`` files before the app runs, so a
read-only runs folder (empty, or holding a finished run) surfaced as Hydra's long traceback.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def write_problem(folder: Path) -> str | None:
    """Why nothing can be written into ``folder`` (or, where it does not exist yet, its nearest existing
    parent), by trying: permissions alone miss read-only disks, and say nothing for root."""
    target = Path(folder).absolute()
    while not target.exists() and target.parent != target:
        target = target.parent
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as err:
        return f"{target}: {err.strerror or err}"
    return None


def check_writable(folder: Path) -> None:
    problem = write_problem(folder)
    if problem:
        print(
            f"error: cannot write the run's files under {folder} ({problem}); make it writable, or point "
            "paths.runs (GRFT_RUNS) at a folder you can write",
            file=sys.stderr,
        )
        sys.exit(2)


class WritableRuns(Callback):
    """Checks the run (or sweep) directory before Hydra creates it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(str(config.hydra.sweep.dir)))

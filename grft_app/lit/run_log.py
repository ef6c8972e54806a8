"""Each run's ``run.log`` holds that run's lines only, also when one process runs several.

Why: ``python run.py`` trains the configured run and then its side-by-side baselines in one
process, and Hydra's log file is the first run's. While a run trains, its own file takes the log
lines, and every other run's file is paused; afterwards those files log again as before.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

LOG_NAME = "run.log"
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's file format


def _pause(record: logging.LogRecord) -> bool:
    return False


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    root = logging.getLogger()
    target = (Path(run_dir) / LOG_NAME).resolve()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    others = [h for h in files if Path(h.baseFilename).resolve() != target]
    own = None
    if len(others) == len(files):  # no handler writes this run's file yet
        target.parent.mkdir(parents=True, exist_ok=True)
        own = logging.FileHandler(target, delay=True)
        own.setFormatter(others[0].formatter if others else logging.Formatter(FORMAT))
        root.addHandler(own)
    for handler in others:
        handler.addFilter(_pause)
    try:
        yield
    finally:
        for handler in others:
            handler.removeFilter(_pause)
        if own is not None:
            root.removeHandler(own)
            own.close()

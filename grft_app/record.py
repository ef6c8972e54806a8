"""One self-describing record per run, written atomically; and reading them all back.

A record is ``record.json`` in the run's directory. ``done: true`` marks a finished run; sweeps
skip a run whose record is done, and tables read only done records. A run that did not finish
says why in ``status``: ``failed`` (with its ``error``) or ``preempted`` (stopped by SIGTERM;
launching it again resumes it). A record without ``status`` is read as ``done`` or ``unfinished``
from its ``done`` flag.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from grft.io import write_json_atomic

RECORD_NAME = "record.json"
HISTORY_DIR = "history"   # earlier records of a run that force=true started again; not read by tables
SCHEMA = 1


class CorruptRecord(ValueError):
    """A record file that is not valid JSON; the message names it and the fix."""


def write_record(run_dir: Path, record: dict) -> Path:
    return write_json_atomic(Path(run_dir) / RECORD_NAME, {"schema": SCHEMA, **record})


def load_record_file(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptRecord(
            f"{path} is not a valid run record ({err}); delete it, or launch the run again with force=true "
            "(it trains the run again and keeps the damaged file in history/)"
        ) from None
    if not isinstance(record, dict):
        raise CorruptRecord(f"{path} is not a valid run record (not a JSON object); delete it or re-run with force=true")
    return record


def read_record(run_dir: Path) -> dict | None:
    """The run's record, ``None`` if it has none; ``CorruptRecord`` if the file is damaged."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return None
    return load_record_file(path)


def status_of(record: dict | None) -> str:
    """``done``, ``failed``, ``preempted`` or ``unfinished`` (older records carry only ``done``)."""
    if not record:
        return "missing"
    if record.get("done"):
        return "done"
    return str(record.get("status") or "unfinished")


def is_done(run_dir: Path) -> bool:
    record = read_record(run_dir)
    return bool(record and record.get("done"))


def archive_record(run_dir: Path) -> Optional[Path]:
    """Move the run's record (even a damaged one) to ``history/<time>-record.json``; returns the new path.

    Not named ``record.json``, so ``iter_records`` (and every table) never reads it."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return None
    history = Path(run_dir) / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = history / f"{stamp}-{RECORD_NAME}"
    os.replace(path, target)
    return target


def iter_records(root: Path, done_only: bool = True, on_corrupt: Callable[[CorruptRecord], None] | None = None) -> Iterator[dict]:
    """Every record under ``root`` (recursively), with its ``run_dir`` added.

    A damaged record is passed to ``on_corrupt`` (default: raise), never dropped silently.
    """
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        try:
            record = load_record_file(path)
        except CorruptRecord as err:
            if on_corrupt is None:
                raise
            on_corrupt(err)
            continue
        if done_only and not record.get("done"):
            continue
        record["run_dir"] = str(path.parent)
        yield record


def reported_key(metric: str, statistic: str = "final", model: str = "raw") -> str:
    """The ``metrics`` key of ``metric`` (e.g. ``test_acc``) as a statistic of a model.

    ``reported_key("test_acc", "best", "ema") == "test_ema_acc_best"``; final and raw are the plain key.
    """
    split, _, name = metric.partition("_")
    key = f"{split}_ema_{name}" if model == "ema" else metric
    return f"{key}_best" if statistic == "best" else key


def record_metric_key(record: dict, metric: str) -> str:
    """Where ``record`` keeps the number its protocol reports for ``metric``.

    A record written before records said so (no ``evaluation`` block) holds only the final test of
    the model it evaluated: ``metric`` itself.
    """
    reported = (record.get("evaluation") or {}).get("reported")
    if not reported:
        return metric
    return reported_key(metric, reported["statistic"], reported["model"])


def record_statistic(record: dict) -> str:
    """The reported statistic in words (``final`` for records written before records said so)."""
    reported = (record.get("evaluation") or {}).get("reported")
    return reported["description"] if reported else "final test accuracy (a record without an evaluation block)"

"""One self-describing record per run, written atomically; and reading them all back.

A record is ``record.json`` in the run's directory. ``done: true`` marks a finished run; sweeps
skip a run whose record is done, and tables read only done records.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

RECORD_NAME = "record.json"
SCHEMA = 1


def write_json_atomic(path: Path, payload: dict) -> Path:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_record(run_dir: Path, record: dict) -> Path:
    return write_json_atomic(Path(run_dir) / RECORD_NAME, {"schema": SCHEMA, **record})


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_done(run_dir: Path) -> bool:
    record = read_record(run_dir)
    return bool(record and record.get("done"))


def iter_records(root: Path, done_only: bool = True) -> Iterator[dict]:
    """Every record under ``root`` (recursively), with its ``run_dir`` added."""
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # a record is written atomically; a broken one is not ours to read
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

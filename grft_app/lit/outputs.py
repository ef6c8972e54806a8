"""A finished run's output files (adapters, selection) against the checksums its record keeps.

Why: "already done" is only true while the files the record names are the ones the run wrote. A
missing, truncated or altered adapter would otherwise be reported as a finished run, and found only
when someone loads it. Records written before they kept checksums are checked for presence only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..record import RunRecord
from .checkpoints import file_sha256


class DamagedOutput(ValueError):
    """A finished run's output file is missing or differs from the record's checksum; names it and the fix."""


def output_checksums(run_dir: Path, names: Iterable[str | None]) -> dict[str, str]:
    """SHA-256 of each named file of ``run_dir`` (``None`` entries skipped)."""
    return {name: file_sha256(Path(run_dir) / name) for name in names if name}


def check_outputs(record: RunRecord, run_dir: Path) -> None:
    """Every output the record names is there and, where the record keeps its checksum, unchanged."""
    named = [*(record.adapter_files or {}).values(), record.adapter_file, record.selection_file]
    expected = dict(record.checksums or {})
    for name in dict.fromkeys(n for n in [*named, *expected] if n):
        path = Path(run_dir) / name
        if not path.is_file():
            problem = "is missing"
        elif name in expected and file_sha256(path) != expected[name]:
            problem = "is damaged (truncated or altered: its SHA-256 differs from the one in record.json)"
        else:
            continue
        raise DamagedOutput(
            f"{path} {problem}, so this finished run cannot be reported as done; launch it again with "
            "force=true to train it again and rebuild its files (the old record goes to history/)"
        )

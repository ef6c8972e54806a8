"""Which data a run trains and tests on, cheaply: the task folder and a hash of its split files.

Part of the run key, so pointing the same configuration at another data folder, or changing a
split list in place, makes a new run instead of finding the old one "already done". The split
files (``*.json``, ``*.txt``, ``*.tsv`` at the top of the task folder) are small lists of paths
and labels, hashed in full; the images they point to are not read (too slow for every launch
and every sweep plan), so replacing an image under the same name goes unnoticed.

Your own data (``dataset=images``, ``dataset=text``) is hashed whole instead: its family's
``fingerprint`` hashes every file's relative name and bytes (``grft_app.data.own``), so adding,
removing, renaming or editing any file is another run.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping
from pathlib import Path

from .catalog import FAMILY_ROOTS

SPLIT_SUFFIXES = (".json", ".txt", ".tsv")
_CACHE: dict[tuple, str] = {}


def task_folder(dataset_cfg: Mapping, data_dir: str | Path) -> Path | None:
    """The task's folder under ``data_dir`` (``None`` for data built into the package, e.g. digits)."""
    root = FAMILY_ROOTS.get(str(dataset_cfg.get("family")))
    if root is None or dataset_cfg.get("folder") is None:
        return None
    return Path(data_dir) / root / str(dataset_cfg["folder"])


def split_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SPLIT_SUFFIXES)


def _file_hash(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = hashlib.sha1(path.read_bytes()).hexdigest()
    return _CACHE[key]


def data_identity(dataset_cfg: Mapping, data_dir: str | Path) -> dict:
    """``{"folder": <resolved path>, "splits": <hash of the split files>}``; ``splits: "missing"`` without a folder.

    A family with its own ``fingerprint`` (your own data) gives that instead.
    """
    from . import FAMILIES

    family = FAMILIES.get(str(dataset_cfg.get("family")))
    fingerprint = getattr(importlib.import_module(family), "fingerprint", None) if family else None
    if fingerprint is not None:
        return fingerprint(dataset_cfg, data_dir)
    folder = task_folder(dataset_cfg, data_dir)
    if folder is None:
        return {"folder": None, "splits": "built-in"}
    folder = folder.resolve()
    if not folder.is_dir():
        return {"folder": str(folder), "splits": "missing"}
    digest = hashlib.sha1()
    for path in split_files(folder):
        digest.update(f"{path.name}\0{_file_hash(path)}\0".encode())
    return {"folder": str(folder), "splits": digest.hexdigest()[:12]}

"""Which data a run trains and tests on, cheaply: the task folder and a hash of its split files.

Part of the run key, so pointing the same configuration at another data folder, or changing a
split list in place, makes a new run instead of finding the old one "already done". The split
files (``*.json``, ``*.txt``, ``*.tsv`` at the top of the task folder) are small lists of paths
and labels, hashed in full; the images they point to are not read (too slow for every launch
and every sweep plan), so replacing an image under the same name goes unnoticed.

Each family says it with its ``fingerprint`` (``grft_app.data.family``): the paper's families by
``paper_task_identity`` here, data that ships with the code as ``built-in``. Your own data
(``dataset=images``, ``dataset=text``) is hashed whole instead: its family's ``fingerprint``
hashes every file's relative name and bytes (``grft_app.data.own``), so adding, removing, renaming
or editing any file is another run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from .catalog import FAMILY_ROOTS

SPLIT_SUFFIXES = (".json", ".txt", ".tsv")
_CACHE: dict[tuple, str] = {}


def split_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SPLIT_SUFFIXES)


def _file_hash(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = hashlib.sha1(path.read_bytes()).hexdigest()
    return _CACHE[key]


BUILT_IN = {"folder": None, "splits": "built-in"}


def paper_task_identity(dataset_cfg: Mapping, data_dir: str | Path) -> dict:
    """A paper task's (VTAB-1k, FGVC, GLUE) ``fingerprint``: ``{"folder": <resolved path>, "splits": <hash of
    the split files>}``; ``splits: "missing"`` without the folder."""
    family, folder = str(dataset_cfg.get("family")), dataset_cfg.get("folder")
    if family not in FAMILY_ROOTS or folder is None:
        return dict(BUILT_IN)
    folder = (Path(data_dir) / FAMILY_ROOTS[family] / str(folder)).resolve()
    if not folder.is_dir():
        return {"folder": str(folder), "splits": "missing"}
    digest = hashlib.sha1()
    for path in split_files(folder):
        digest.update(f"{path.name}\0{_file_hash(path)}\0".encode())
    return {"folder": str(folder), "splits": digest.hexdigest()[:12]}


def data_identity(dataset_cfg: Mapping, data_dir: str | Path) -> dict:
    """The family's ``fingerprint`` of the data (``grft_app.data.family``); an unknown family has none
    here (the launch's checks name it, in one line, before anything is written)."""
    from . import family_module

    try:
        family = family_module(dataset_cfg)
    except (ValueError, ImportError, TypeError):
        return dict(BUILT_IN)
    return family.fingerprint(dataset_cfg, data_dir)

"""Checkpoint files that a kill or a full disk cannot leave half-written, each with its SHA-256.

Why: a resumed run trusts its checkpoint, so a truncated or altered one must be found before
Lightning loads it. Lightning's own writer goes through fsspec; this one writes next to the final
place and renames (``grft.io.write_atomic``: a kill or ENOSPC leaves the previous file, and no
partial one under a name a resume would pick up), and writes ``<name>.sha256`` beside the file
*before* the rename, so every checkpoint this code wrote has its checksum. A checkpoint without
one (written by earlier versions) is checked by opening it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from grft.io import write_atomic

SUFFIX = ".sha256"


def sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + SUFFIX)


def write_bytes(tmp: Path, data: bytes) -> None:
    """``data`` into ``tmp``, on disk before it returns (the rename that follows publishes it)."""
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from, in words; ``None`` when it is intact."""
    path = Path(path)
    if not path.is_file():
        return "is missing"
    expected = sidecar(path.resolve())
    if expected.is_file():
        if file_sha256(path) != expected.read_text().strip():
            return (
                f"cannot be read as saved: it does not match the checksum beside it ({expected.name}), "
                "so it is truncated or altered"
            )
        return None
    try:  # an older checkpoint without a checksum: it must at least open
        torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to read means the same thing here
        first = str(err).splitlines()[0] if str(err) else ""
        return f"cannot be read ({type(err).__name__}: {first})"
    return None


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of writes a kill interrupted (``.<name>.<random>``): never resumed from, only space."""
    for tmp in Path(folder).glob(".*.ckpt*"):
        tmp.unlink(missing_ok=True)


class ChecksummedCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint format, written atomically with a SHA-256 beside each file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        path = Path(path)
        digest = hashlib.sha256(data).hexdigest()
        write_atomic(sidecar(path), lambda tmp: write_bytes(tmp, digest.encode()))
        write_atomic(path, lambda tmp: write_bytes(tmp, data))

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        sidecar(Path(path)).unlink(missing_ok=True)

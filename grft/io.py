"""Reading and writing what grft stores: tensors with JSON metadata in one safetensors file, and JSON files.

Adapters, selections and cached weights are safetensors files; what describes them (format, config,
shapes, checksum) is one JSON document under the header key ``"grft"`` (safetensors metadata is a flat
``str -> str`` map, and ours nests). Run records are JSON files.

Every file is written next to its final place and renamed into it, so a reader never sees half a
file and a crash keeps the previous one; and it gets the permissions of any new file the user
creates (``0666`` less the umask): safetensors and ``tempfile.mkstemp`` would leave it private (0600),
and these files are meant to be shared like any other.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

METADATA_KEY = "grft"


class UnreadableFile(ValueError):
    """A file that cannot be read as safetensors (truncated, damaged, or something else)."""


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def as_new_file(path: str | Path) -> Path:
    """Give ``path`` the mode a plain new file would get (``0666`` less the umask); returns it."""
    os.chmod(path, 0o666 & ~umask())
    return Path(path)


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC, as an ``OSError`` or as the message of a library's own error type (safetensors)."""
    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``; returns ``path``.

    On any error the temporary file is removed (so a full disk gets its space back and no partial
    file is left); a full disk is raised as ``OSError(ENOSPC)`` naming ``path``, whatever the writer
    raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        as_new_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err) and not (isinstance(err, OSError) and err.filename == str(path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        raise
    return path


def write_json_atomic(path: str | Path, payload: Mapping) -> Path:
    """``payload`` as indented JSON (keys sorted; non-JSON values as ``str``), flushed to disk before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, write)


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping | None = None) -> Path:
    """Write ``tensors`` (detached, on the CPU) and ``metadata`` (JSON) as one safetensors file; returns ``path``."""
    cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {METADATA_KEY: json.dumps(metadata)} if metadata is not None else None
    return write_atomic(path, lambda tmp: save_file(cpu, str(tmp), metadata=header))


def read_metadata(path: str | Path, expect_format: str | None = None, what: str = "safetensors file") -> dict:
    """The JSON metadata of a safetensors file written by ``save_tensors`` (``{}`` if it has none).

    ``expect_format``: the metadata's ``"format"`` must be this, or the file is refused as not a ``what``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
        meta = json.loads(raw) if raw else {}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types; all mean a damaged file
        raise UnreadableFile(
            f"{path} cannot be read as a safetensors file ({err}); it is truncated or damaged"
        ) from None
    if expect_format is not None and meta.get("format") != expect_format:
        raise ValueError(
            f"{path} is not a {what} written by grft (its format is {meta.get('format')!r}, "
            f"a {what} has {expect_format!r})"
        )
    return meta


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - as in read_metadata
        raise UnreadableFile(
            f"{path} cannot be read as a safetensors file ({err}); it is truncated or damaged"
        ) from None

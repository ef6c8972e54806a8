"""File permissions for what the library writes.

safetensors' ``save_file`` (like ``tempfile.mkstemp``) leaves a new file private (0600); adapters,
selections and records are meant to be shared like any file the user creates, so they get the
permissions the user's umask gives a new file.
"""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def as_new_file(path: str | Path) -> Path:
    """Give ``path`` the mode a plain new file would get (``0666`` less the umask); returns it."""
    os.chmod(path, 0o666 & ~umask())
    return Path(path)

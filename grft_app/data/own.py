"""What your own image folders and text files share: held-out splits, class names, a content hash.

- ``held_out``: a seeded, stratified share of the training items (scikit-learn's
  ``train_test_split``), for a test or validation split the data does not bring;
- ``ordered_names``: class names in a fixed order (numbers by value, anything else as sorted strings);
- ``content_digest``: a hash of the files' relative names and bytes, for the run key: adding,
  removing, renaming or editing a file changes it. Each file's hash is kept for the process's life
  by (path, size, modification time), so a sweep's many launches read each file once.

Every check raises ``OwnDataError``: one line naming the file or key and the fix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

_HASHES: dict[tuple, str] = {}


class OwnDataError(ValueError):
    """Your data cannot make a task as it stands; the message names the file or key and the fix."""


def held_out(labels: Sequence[int], fraction, seed: int, key: str) -> tuple[list[int], list[int]]:
    """Indices ``(kept, held out)`` of ``labels``: ``fraction`` of each class held out, seeded.

    ``key`` is the config key that set ``fraction`` (``dataset.test_fraction``), named in errors.
    """
    from sklearn.model_selection import train_test_split

    try:
        share = float(fraction)
    except (TypeError, ValueError):
        raise OwnDataError(f"{key} must be a number between 0 and 1, got {fraction!r}") from None
    if not 0 < share < 1:
        raise OwnDataError(f"{key} must be between 0 and 1 (exclusive), got {fraction!r}")
    indices = list(range(len(labels)))
    try:
        kept, held = train_test_split(indices, test_size=share, random_state=int(seed), stratify=list(labels))
    except ValueError as err:
        # e.g. a class with one item, or fewer held-out items than classes
        raise OwnDataError(
            f"{key}={fraction} cannot hold out a share of every class of {len(labels)} training items "
            f"({err}); add items to the small classes, or change {key}"
        ) from None
    return sorted(kept), sorted(held)


def ordered_names(values: Iterable) -> list[str]:
    """Distinct label values as names, sorted: by number when every value is a whole number, else as text."""
    names = {str(v).strip() for v in values}
    if all(_is_integer(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit()


def file_hash(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def content_digest(files: Iterable[tuple[str, Path]]) -> str:
    """A short hash of ``(name, file)`` pairs: each name with its file's bytes, in the order given."""
    digest = hashlib.sha1()
    for name, path in files:
        digest.update(f"{name}\0{file_hash(path)}\0".encode())
    return digest.hexdigest()[:12]

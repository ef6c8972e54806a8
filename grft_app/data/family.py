"""The contract every dataset family keeps, written once (``vtab``, ``fgvc``, ``glue``, ``digits``,
``images``, ``text``; a new one is its module plus its YAML: ``builder: grft_app.data.<module>``).

A family is a module. The launch reads these four members of it, in this order: ``check_present``
before any model loads (a missing or unusable file is one line), ``fingerprint`` for the run key
(which data the run trains on), ``build`` for the splits, and ``fetch_hint`` wherever the data is
missing (what to run or set to get it). ``INPUT_KIND`` says what the items are, checked against
the model before either loads.

Optional members, read where they exist: ``class_names(cfg, data_dir)`` (your own data: the classes
are read from the files, not configured), ``label_names(cfg)`` (a paper task's class names),
``eval_transform(cfg, inputs)`` and ``eval_crop(cfg, inputs)`` (an image family's evaluation
transform, for ``predict`` and ``export``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from .splits import DataSplits, InputSpec

REQUIRED = ("INPUT_KIND", "check_present", "fingerprint", "build", "fetch_hint")


@runtime_checkable
class DataFamily(Protocol):
    INPUT_KIND: str  # "image" or "text"

    def check_present(self, cfg: Mapping, data_dir: Path) -> Any:
        """Raise a one-line error (``DataMissingError``, ``ValueError``) if the data is absent or unusable."""

    def fingerprint(self, cfg: Mapping, data_dir: Path) -> dict:
        """The data's identity for the run key: JSON values that change when the data does."""

    def build(self, cfg: Mapping, data_dir: Path, inputs: InputSpec) -> DataSplits:
        """The train / test (and validation) splits, fed as ``inputs`` says."""

    def fetch_hint(self, cfg: Mapping, data_dir: Path) -> str:
        """How to get the data when it is missing (a command, or the settings that point at it)."""


def checked_family(module: ModuleType) -> DataFamily:
    """``module`` if it keeps the contract; otherwise an error naming what it lacks."""
    lacking = [name for name in REQUIRED if not hasattr(module, name)]
    if lacking:
        raise TypeError(f"dataset family module {module.__name__} lacks {', '.join(lacking)} (grft_app.data.family)")
    return module  # type: ignore[return-value]

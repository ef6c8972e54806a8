"""GRFT hyperparameters, validated once so every later step can trust them."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

SELECTIONS = ("row", "column", "sparse")
NORMS = ("l2", "l1", "none")

RegularLayers = int | str


@dataclass(frozen=True)
class GRFTConfig:
    """What to train and how hard to pull it back (Algorithm 1, Eq. 4-8).

    k: rows (``row``), columns (``column``) or entries per row (``sparse``, the GPS rule) kept
        per eligible matrix.
    norm / lam: the penalty ``lam * sum ||p - p_start||`` (squared L2, L1, or none) over the
        regular set: the last ``regular_layers`` blocks (``"all"``: every block, 0: none) plus the
        stem (patch embedding) and the head (Eq. 8).
    subsets: split the probe batches into this many random parts and take the gradient on the
        part with the smallest loss (paper §4.4.6; 1 = use every batch).
    temperature: of the supervised contrastive probe loss (Khosla et al. 2020).
    seed: seeds the random split into subsets.
    target_modules / exclude_modules: narrow the eligible layers, with peft's rules: a string is a
        regex the whole module name must match, a list holds names or name suffixes
        (``["q_proj", "v_proj"]``). ``None``: every eligible layer (the paper's setting). The head
        always trains in full and is never a target.
    """

    k: int = 1
    selection: str = "row"
    norm: str = "l2"
    lam: float = 0.0
    regular_layers: RegularLayers = "all"
    subsets: int = 1
    temperature: float = 0.07
    seed: int = 0
    target_modules: str | tuple[str, ...] | None = None
    exclude_modules: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {self.k!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {self.selection!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {self.norm!r}")
        lam = float(self.lam)
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam (lambda) must be a finite number >= 0, got {self.lam!r}")
        object.__setattr__(self, "lam", lam)
        object.__setattr__(self, "regular_layers", parse_regular_layers(self.regular_layers))
        if isinstance(self.subsets, bool) or not isinstance(self.subsets, int) or self.subsets < 1:
            raise ValueError(f"subsets must be a whole number >= 1, got {self.subsets!r}")
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        for key in ("target_modules", "exclude_modules"):
            object.__setattr__(self, key, parse_module_patterns(key, getattr(self, key)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GRFTConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GRFT config keys {unknown}; allowed: {sorted(known)}")
        return cls(**values)


def parse_regular_layers(value: RegularLayers) -> RegularLayers:
    """Accept an int >= 0 or ``"all"`` (also as the strings Hydra hands over, e.g. ``"2"``)."""
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return "all"
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"regular_layers must be a whole number >= 0 or 'all', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"regular_layers must be a whole number >= 0 or 'all', got {value!r}")
    return value


def parse_module_patterns(key: str, value):
    """A regex string (checked here) or a list of names/suffixes, kept as a tuple; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"{key}={value!r} is not a valid regular expression ({err})") from None
        return value
    names = tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{key} must be a regex string or a non-empty list of module names, got {value!r}")
    return names

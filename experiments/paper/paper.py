"""The paper's own numbers (``experiments/paper/published/*.csv``, transcribed as printed) and checks on them.

Cells stay strings so a rendered table shows exactly what the paper printed ("100.00", "0.8428");
the checks parse them. A printed mean "agrees with its cells" when the gap is within what the
rounding of the printed cells and of the printed mean can explain.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .spec import PAPER_DIR


def load_paper_table(name: str, paper_dir: Path = PAPER_DIR) -> pd.DataFrame:
    """A transcribed table, all cells as printed strings, indexed by its first column."""
    path = Path(paper_dir) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: it holds the paper's numbers for this table (see experiments/paper/published/)"
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame.set_index(frame.columns[0])


def decimals(printed: str) -> int:
    """Digits after the point as printed: ``"91.06"`` -> 2, ``"100"`` -> 0."""
    text = str(printed).strip()
    return len(text.split(".", 1)[1]) if "." in text else 0


def rounding_slack(cells: Sequence[str], printed_mean: str) -> float:
    """Largest gap rounding explains: half a unit of the cells' last digit plus half of the mean's."""
    cell_digits = max(decimals(c) for c in cells)
    return 0.5 * 10**-cell_digits + 0.5 * 10 ** -decimals(printed_mean) + 1e-9


@dataclass(frozen=True)
class MeanCheck:
    row: str
    printed: str
    recomputed: float
    slack: float
    convention: str = "mean of the cells"

    @property
    def gap(self) -> float:
        return float(self.printed) - self.recomputed

    @property
    def agrees(self) -> bool:
        return abs(self.gap) <= self.slack


def check_mean(
    row: str, cells: Sequence[str], printed_mean: str, groups: Sequence[Sequence[int]] | None = None
) -> MeanCheck:
    """Recompute a printed mean from its printed cells (optionally as the mean of group means)."""
    values = [float(c) for c in cells]
    if groups:
        recomputed = statistics.fmean(statistics.fmean(values[i] for i in g) for g in groups)
        convention = "mean of the group means"
    else:
        recomputed = statistics.fmean(values)
        convention = "mean of the cells"
    return MeanCheck(row, printed_mean, recomputed, rounding_slack(cells, printed_mean), convention)


@dataclass(frozen=True)
class Claim:
    source: str
    table: str
    row: str
    column: str
    value: str


def load_claims(paper_dir: Path = PAPER_DIR) -> list[Claim]:
    """Numbers the paper's text states about its tables (``claims.csv``)."""
    path = Path(paper_dir) / "claims.csv"
    if not path.is_file():
        return []
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return [Claim(**row) for row in frame.to_dict("records")]

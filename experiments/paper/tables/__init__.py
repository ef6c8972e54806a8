"""Tables 1-5: the paper's numbers next to ours, from whatever run records exist.

Each method row becomes three lines (paper as printed, ours, ours - paper); columns are the
paper's tasks in its order, then its mean (and params) columns. Our means are recomputed from our
cells; the paper's printed means are checked against its own cells in the notes. A cell without a
finished run shows as a hole, never as an error; one whose run failed (its record says
``failed``) shows as ``failed``, and the notes give the error.

One idea per module: ``cells`` (the long-format cells from the records), ``wide`` (the paper's
layout), ``notes`` (what the notes compute), ``writers`` (markdown, LaTeX, csv); ``render_table``
below is the pipeline through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..compose import Composer
from ..matching import RecordIndex
from ..spec import Spec, Target
from .cells import collect
from .notes import (
    SharedConfigs,
    ours_notes,
    paper_notes,
    recipe_notes,
    shared_config_notes,
    shared_configs,
    statistic_lines,
)
from .wide import mark_not_comparable, wide_table
from .writers import csv_frame, latex, markdown, protocol_link

__all__ = ["TableResult", "render_table", "shared_configs"]


@dataclass
class TableResult:
    """What rendering one table produced: the long-format cells and the computed notes."""

    name: str
    cells: pd.DataFrame
    wide: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def render_table(
    target: Target,
    spec: Spec,
    composer: Composer,
    index: RecordIndex,
    out_dir: Path,
    banner: str | None = None,
    shared: SharedConfigs | None = None,
    tuned: bool = False,
) -> TableResult:
    """Write ``<target>.md``, ``.tex`` and ``.csv`` under ``out_dir`` (created); ``banner`` heads the markdown.

    ``shared``: ``shared_configs(spec, composer)`` when the caller renders several tables (computed here if not given).
    ``tuned``: a "tuned (val)" line under each method (``TUNED_STATISTIC``).
    """
    paper_dir = spec.paper_dir
    cells, unavailable = collect(target, composer, index, paper_dir, tuned)
    not_comparable, recipes = recipe_notes(target, composer)
    wide = mark_not_comparable(target, wide_table(target, spec, cells), not_comparable)
    notes = (
        paper_notes(target, spec, paper_dir)
        + shared_config_notes(target, spec, composer, shared)
        + ours_notes(target, cells, index)
        + recipes
        + unavailable
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{target.name}.{ext}" for ext in ("md", "tex", "csv")]
    statistic = statistic_lines(target, spec, cells)
    paths[0].write_text(markdown(target, wide, notes, statistic, protocol_link(out_dir), banner))
    paths[1].write_text(latex(target, wide))
    csv_frame(target, spec, cells).to_csv(paths[2], index=False)
    return TableResult(target.name, cells, wide, notes, paths)

"""A table's files: markdown (the table, its legend, the statistic and the notes), LaTeX, and the long-format csv."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from grft_app.paths import ROOT

from ..spec import Spec, Target
from .wide import FAILED, HOLE, column_title

LEGEND = (
    f"paper: as printed. ours: mean over seeds of the matching finished runs (± sd and n when there is more than "
    f"one seed); which number of a run it is: 'Statistic' below. diff: ours − paper. {HOLE}: no finished run yet. "
    f"{FAILED}: the run failed (the notes say why). Empty: not implemented here (the paper's number only)."
)
PROTOCOL_DOC = ROOT / "docs" / "PROTOCOL.md"


def protocol_link(out_dir: Path) -> str:
    """docs/PROTOCOL.md relative to the folder a table is written to (a link that works from the file)."""
    return os.path.relpath(PROTOCOL_DOC, Path(out_dir).resolve())


def markdown(
    target: Target,
    wide: pd.DataFrame,
    notes: list[str],
    statistic: list[str] = (),
    doc_link: str = "",
    banner: str | None = None,
) -> str:
    body = wide.to_markdown(index=False, disable_numparse=True)
    lines = [f"# {target.caption}", "", *([banner, ""] if banner else []), body, "", LEGEND, ""]
    if statistic:
        lines += ["## Statistic (which number 'ours' is)", ""] + [f"- {s}" for s in statistic] + [""]
    if doc_link:
        lines += [
            f"Every choice the paper leaves open, what we do and where it comes from: [PROTOCOL.md]({doc_link}).",
            "",
        ]
    lines += ["## Notes", ""]
    lines += [f"- {n}" for n in notes] or ["- none"]
    return "\n".join(lines) + "\n"


def latex(target: Target, wide: pd.DataFrame) -> str:
    styler = wide.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    text = styler.to_latex(
        caption=target.caption.replace("%", r"\%"),
        label=f"tab:{target.name}",
        hrules=True,
        column_format="ll" + "r" * (wide.shape[1] - 2),
        position_float="centering",
    )
    return text.replace(" ± ", r" $\pm$ ").replace(HOLE, "---").replace("−", "-")


def csv_frame(target: Target, spec: Spec, cells: pd.DataFrame) -> pd.DataFrame:
    """The long-format cells as written to ``<target>.csv``: rounded, with each column's title."""
    export = cells.drop(columns=["digits", "statistic_runs"]).round({"ours": 4, "ours_std": 4, "diff": 4, "tuned": 4})
    export.insert(2, "label", [column_title(target, spec, c) for c in export["column"]])
    return export

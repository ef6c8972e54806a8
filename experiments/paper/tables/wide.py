"""The paper's layout of a table: per method a paper / ours / diff line (and a tuned line), tasks then means.

The markdown and LaTeX writers print this frame; the strings a reader sees in it (a hole, a failed
run, a row not comparable) are defined here once.
"""

from __future__ import annotations

import math

import pandas as pd

from ..spec import Spec, Target

HOLE = "—"
FAILED = "failed"
TUNED_LINE = "tuned (val)"
NOT_COMPARABLE = "ours (not comparable)"


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return HOLE
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def wide_table(target: Target, spec: Spec, cells: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one line each for paper / ours / diff per method; tasks, then mean (and params)."""
    columns = list(target.tasks) + [c for c in ("mean", "params") if getattr(target, c)]
    titles = [spec.label(t) for t in target.tasks] + [
        getattr(target, c) for c in ("mean", "params") if getattr(target, c)
    ]
    lines = []
    for row in target.rows:
        mine = cells[cells["row"] == row.label].set_index("column")
        paper_line, ours_line, diff_line = [row.label, "paper"], ["", "ours"], ["", "diff"]
        for column in columns:
            cell = mine.loc[column]
            digits = int(cell["digits"])
            paper_line.append(cell["paper"])
            if cell["status"] == "paper_only":
                ours_line.append("")
                diff_line.append("")
            elif cell["status"] == "failed":
                ours_line.append(FAILED)
                diff_line.append(HOLE)
            else:
                ours_line.append(_ours_text(cell, digits) if cell["n"] else HOLE)
                diff_line.append(_fmt(cell["diff"], digits, signed=True) if cell["n"] else HOLE)
        lines += [paper_line, ours_line, diff_line]
        if "tuned" in cells.columns:
            tuned_line = ["", TUNED_LINE]
            for column in columns:
                cell = mine.loc[column]
                shown = cell["status"] != "paper_only" and int(cell["tuned_n"])
                tuned_line.append(_fmt(float(cell["tuned"]), int(cell["digits"])) if shown else HOLE)
            lines.append(tuned_line)
    return pd.DataFrame(lines, columns=["Method", "", *titles])


def _ours_text(cell: pd.Series, digits: int) -> str:
    text = _fmt(float(cell["ours"]), digits)
    if int(cell["n"]) > 1 and not math.isnan(float(cell["ours_std"])):
        return f"{text} ± {float(cell['ours_std']):.{digits}f} (n={int(cell['n'])})"
    return text


def mark_not_comparable(target: Target, wide: pd.DataFrame, labels: set[str]) -> pd.DataFrame:
    """Relabel the "ours" line of each row in ``labels`` (the wide table holds paper / ours / diff per row)."""
    per_row = len(wide) // len(target.rows)  # paper / ours / diff (/ tuned)
    for i, row in enumerate(target.rows):
        if row.label in labels:
            wide.iloc[per_row * i + 1, 1] = NOT_COMPARABLE
    return wide


def column_title(target: Target, spec: Spec, column: str) -> str:
    return {"mean": target.mean, "params": target.params}.get(column) or spec.label(column)


def table_title(target: Target) -> str:
    return target.caption.split(":", 1)[0]

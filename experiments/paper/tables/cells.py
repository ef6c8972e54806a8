"""A table's cells in long format: one line per (row, column) with the paper's printed value and ours.

Each task cell's configuration is composed from the spec (``Target.cell``), the finished records of
that configuration are found (``RecordIndex``) and aggregated over seeds; the mean and params columns
are recomputed from the row's task cells. A cell's ``status`` says what it holds: ``ok``, ``missing``
(no finished run), ``failed`` (a run failed), ``unavailable`` (its configuration does not compose) or
``paper_only`` (a row not implemented here).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..compose import Composer, ConfigUnavailable
from ..matching import Aggregate, RecordIndex
from ..paper import decimals, load_paper_table
from ..spec import SpecError, Target


def _check_layout(target: Target, paper: pd.DataFrame) -> None:
    rows = [r.label for r in target.rows]
    if list(paper.index) != rows:
        raise SpecError(
            f"{target.name}: rows {rows} in experiments/paper/spec.yaml differ from "
            f"{target.paper}'s {list(paper.index)}"
        )
    extra = [c for c in ("mean", "params") if getattr(target, c)]
    if list(paper.columns) != [*target.tasks, *extra]:
        raise SpecError(
            f"{target.name}: columns {[*target.tasks, *extra]} differ from {target.paper}'s {list(paper.columns)}"
        )


def collect(
    target: Target, composer: Composer, index: RecordIndex, paper_dir: Path, tuned: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Long-format cells (row, column, paper, ours, ...) in the paper's order, and notes about our side.

    ``tuned``: also each cell's "tuned on validation" value (``tuned``, ``tuned_n``): the final runs of
    studies of its task and method (``make tune``)."""
    paper = load_paper_table(target.paper, paper_dir)
    _check_layout(target, paper)
    records = []
    unavailable: dict[str, str] = {}
    failures: list[str] = []
    for row in target.rows:
        aggs: dict[str, Aggregate] = {}
        studies: dict[str, Aggregate] = {}
        for task in target.tasks:
            status, agg, statistic, study = "paper_only", Aggregate(), "", Aggregate()
            if not row.paper_only:
                try:
                    cfg = composer.config(target.cell(row, task).args)
                    agg = index.find(cfg, target.metric, target.scale)
                    status = "ok" if agg.n else "missing"
                    failed = [] if agg.n else index.failures(cfg)
                    if failed:
                        status = "failed"
                        failures.append(
                            f"Ours: {row.label} / {task} failed: {failed[0].error} "
                            f"(record {failed[0].run_dir}; fix it and launch again)"
                        )
                    statistic = statistic_of(cfg)
                    study = index.tuned(cfg, target.metric, target.scale) if tuned else study
                except ConfigUnavailable as err:
                    status = "unavailable"
                    unavailable.setdefault(row.label, str(err))
            aggs[task], studies[task] = agg, study
            printed = paper.loc[row.label, task]
            records.append(
                {
                    **_cell(row.label, task, printed, agg, status, target.digits),
                    "statistic": statistic,
                    "statistic_runs": sorted(set(agg.statistics)),
                    **({"tuned": study.mean, "tuned_n": study.n} if tuned else {}),
                }
            )
        for column, values in (
            ("mean", [a.mean for a in aggs.values()]),
            ("params", [a.params for a in aggs.values()]),
        ):
            if not getattr(target, column):
                continue
            printed = paper.loc[row.label, column]
            complete = all(not math.isnan(v) for v in values)
            value = sum(values) / len(values) if complete else math.nan
            status = "paper_only" if row.paper_only else ("ok" if complete else "missing")
            n = min(a.n for a in aggs.values()) if complete else 0
            cell = _row(row.label, column, printed, value, math.nan, n, status, decimals(printed) if printed else 2)
            statistic = "mean of the row's task cells" if column == "mean" else "trainable share of the runs (%)"
            records.append({**cell, "statistic": "" if row.paper_only else statistic, "statistic_runs": []})
            if tuned:
                mine = [getattr(a, "mean" if column == "mean" else "params") for a in studies.values()]
                done = not row.paper_only and all(not math.isnan(v) for v in mine)
                records[-1].update(
                    {
                        "tuned": sum(mine) / len(mine) if done else math.nan,
                        "tuned_n": min(a.n for a in studies.values()) if done else 0,
                    }
                )
    cells = pd.DataFrame.from_records(records)
    notes = [
        f"Row {label} could not be composed, so it has no runs here: {reason}" for label, reason in unavailable.items()
    ]
    return cells, failures + notes


def statistic_of(cfg) -> str:
    """Which number of a run the cell holds, from the cell's own configuration (its protocol)."""
    from grft_app.run.settings import ConfigError, reported_statistic

    try:
        return reported_statistic(cfg)
    except (ConfigError, KeyError, AttributeError) as err:
        return f"unknown ({err})"


def _cell(row: str, column: str, printed: str, agg: Aggregate, status: str, digits: int) -> dict:
    return _row(row, column, printed, agg.mean, agg.std, agg.n, status, digits)


def _row(row: str, column: str, printed: str, ours: float, std: float, n: int, status: str, digits: int) -> dict:
    paper_value = float(printed) if printed not in ("", None) else math.nan
    return {
        "row": row,
        "column": column,
        "paper": printed,
        "ours": ours,
        "ours_std": std,
        "n": n,
        "diff": ours - paper_value,
        "status": status,
        "digits": digits,
    }

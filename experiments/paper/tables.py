"""Tables 1-5: the paper's numbers next to ours, from whatever run records exist.

Each method row becomes three lines (paper as printed, ours, ours - paper); columns are the
paper's tasks in its order, then its mean (and params) columns. Our means are recomputed from our
cells; the paper's printed means are checked against its own cells in the notes. A cell without a
finished run shows as a hole, never as an error; one whose run failed (its record says
``failed``) shows as ``failed``, and the notes give the error.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from grft_app.paths import ROOT

from .compose import Composer, ConfigUnavailable
from .matching import Aggregate, RecordIndex, identity
from .paper import check_mean, decimals, load_claims, load_paper_table
from .spec import Spec, SpecError, Target

HOLE = "—"
TUNED_LINE = "tuned (val)"
TUNED_STATISTIC = (
    f"{TUNED_LINE}: settings chosen on validation data only by a study (`make tune`: its objective is the "
    "protocol's statistic on the validation split; trials never see the test split), then trained on train + val "
    "and tested once: the final model's test accuracy, mean over seeds. Not the paper's protocol, which reports "
    "settings and epochs chosen with the test split in view (docs/PROTOCOL.md)"
)
FAILED = "failed"
LEGEND = (
    f"paper: as printed. ours: mean over seeds of the matching finished runs (± sd and n when there is more than "
    f"one seed); which number of a run it is: 'Statistic' below. diff: ours − paper. {HOLE}: no finished run yet. "
    f"{FAILED}: the run failed (the notes say why). Empty: not implemented here (the paper's number only)."
)
PROTOCOL_DOC = ROOT / "docs" / "PROTOCOL.md"


@dataclass
class TableResult:
    """What rendering one table produced: the long-format cells and the computed notes."""

    name: str
    cells: pd.DataFrame
    wide: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return HOLE
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


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
                    statistic = _statistic(cfg)
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


def _statistic(cfg) -> str:
    """Which number of a run the cell holds, from the cell's own configuration (its protocol)."""
    from grft_app.lit.settings import ConfigError, reported_statistic

    try:
        return reported_statistic(cfg)
    except (ConfigError, KeyError, AttributeError) as err:
        return f"unknown ({err})"


def statistic_lines(target: Target, spec: Spec, cells: pd.DataFrame) -> list[str]:
    """What 'ours' holds, column by column (one line when every task column holds the same); a row whose
    cells hold another number than most rows' (e.g. SSF's EMA accuracy, as its own code reports) gets a
    line of its own."""
    tasks = cells[cells["column"].isin(target.tasks) & (cells["statistic"] != "")]
    per_row: dict[str, tuple[tuple[str, str], ...]] = {
        row: tuple(zip(group["column"], group["statistic"], strict=True))
        for row, group in tasks.groupby("row", sort=False)
    }
    counts: dict[tuple, int] = {}
    for mapping in per_row.values():
        counts[mapping] = counts.get(mapping, 0) + 1
    usual = max(counts, key=counts.get) if counts else ()

    def columns(mapping: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        by_stat: dict[str, list[str]] = {}
        for column, statistic in mapping:
            titles = by_stat.setdefault(statistic, [])
            if spec.label(column) not in titles:
                titles.append(spec.label(column))
        if len(by_stat) == 1:
            return [("Every task column", next(iter(by_stat)))]
        return [(", ".join(titles), statistic) for statistic, titles in by_stat.items()]

    others = [row for row, mapping in per_row.items() if mapping != usual]
    lines = [
        f"{where}{', except the rows below' if others else ''}: {statistic}." for where, statistic in columns(usual)
    ]
    for row in others:
        lines += [f"{row}, {where.lower()}: {statistic}." for where, statistic in columns(per_row[row])]
    if target.mean:
        lines.append(f"{target.mean}: the mean of the row's task cells (ours recomputed from ours).")
    if target.params:
        lines.append(f"{target.params}: the runs' trainable share (the same at every epoch).")
    if "tuned" in cells.columns:
        lines.append(TUNED_STATISTIC)
    stray = cells[cells["statistic_runs"].map(len) > 0]
    for _, cell in stray.iterrows():
        other = [s for s in cell["statistic_runs"] if s != cell["statistic"]]
        if other:
            lines.append(f"{cell['row']}, {spec.label(cell['column'])}: some runs report {'; '.join(other)}.")
    return lines


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


def paper_notes(target: Target, spec: Spec, paper_dir: Path) -> list[str]:
    """Checks of the paper against itself: printed means vs its cells, text claims vs the table."""
    notes = []
    paper = load_paper_table(target.paper, paper_dir)
    tasks = list(target.tasks)
    groups = spec.benchmarks[target.benchmark].get("groups")
    group_idx = [[tasks.index(t) for t in members] for members in groups.values()] if groups else None
    if target.mean:
        agree = 0
        for label, line in paper.iterrows():
            cells = [line[t] for t in tasks]
            check = check_mean(label, cells, line["mean"])
            if check.agrees:
                agree += 1
                continue
            text = (
                f"Paper, {label}: printed {target.mean} {check.printed}, but the mean of its printed cells is "
                f"{check.recomputed:.{decimals(check.printed) + 1}f} (off by {check.gap:+.2f}; "
                f"rounding explains at most ±{check.slack:.3f})."
            )
            if group_idx:
                grouped = check_mean(label, cells, line["mean"], group_idx)
                text += (
                    f" The mean of the {len(group_idx)} group means ({', '.join(groups)}) is "
                    f"{grouped.recomputed:.{decimals(check.printed) + 1}f}"
                    + (", which agrees." if grouped.agrees else ", which does not agree either.")
                )
            notes.append(text)
        convention = " (the mean over all tasks, not of the group means)." if group_idx else "."
        notes.insert(
            0,
            f"Paper: {agree} of {len(paper)} printed {target.mean} values agree with the mean of their own "
            f"printed cells within rounding{convention}",
        )
    for claim in load_claims(paper_dir):
        if claim.table != target.name or claim.row not in paper.index or claim.column not in paper.columns:
            continue
        printed = paper.loc[claim.row, claim.column]
        if float(claim.value) != float(printed):
            notes.append(
                f"Paper, {claim.source}: says {claim.row} {_column_title(target, spec, claim.column)} "
                f"is {claim.value}; the table prints {printed}."
            )
    if target.params and "GRFT" in paper.index and (Path(paper_dir) / "table8.csv").is_file():
        shares = load_paper_table("table8.csv", paper_dir)
        values = [float(shares.loc[t, "params_pct"]) for t in tasks if t in shares.index]
        if len(values) == len(tasks):
            mean = sum(values) / len(values)
            printed = paper.loc["GRFT", "params"]
            verdict = "agrees" if abs(mean - float(printed)) <= 0.005 + 0.005 + 1e-9 else "does not agree"
            notes.append(
                f"Paper: GRFT's {target.params} {printed} {verdict} with the mean of Table 8's shares for these "
                f"tasks, {mean:.3f}."
            )
    return notes


def _column_title(target: Target, spec: Spec, column: str) -> str:
    return {"mean": target.mean, "params": target.params}.get(column) or spec.label(column)


def ours_notes(target: Target, cells: pd.DataFrame, index: RecordIndex) -> list[str]:
    runnable = cells[(cells["status"] != "paper_only") & cells["column"].isin(target.tasks)]
    have = int((runnable["status"] == "ok").sum())
    notes = [f"Ours: {have} of {len(runnable)} runnable cells have finished runs."]
    if index.corrupt:
        notes += [f"Ours: left out a record that cannot be read: {problem}" for problem in index.corrupt]
    for label, group in runnable[runnable["status"] == "missing"].groupby("row", sort=False):
        if len(group) == len(target.tasks):
            notes.append(f"Ours, {label}: no finished runs yet.")
        else:
            notes.append(f"Ours, {label}: no finished run for {', '.join(group['column'])}.")
    methods = {str(r.overrides.get("method", "grft")) for r in target.rows if not r.paper_only}
    stale = index.unmatched(target.tasks, methods)
    if stale:
        notes.append(
            f"Ours: {len(stale)} finished runs of these tasks and methods match no cell here (other settings, "
            f"or another results version), e.g. {stale[0].run_dir}."
        )
    return notes


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


def table_title(target: Target) -> str:
    return target.caption.split(":", 1)[0]


SharedConfigs = dict[str, list[tuple[str, str, str, str]]]


def shared_configs(spec: Spec, composer: Composer) -> SharedConfigs:
    """Every table cell of the spec that may share its configuration with another table's, grouped by that
    configuration: key -> [(table, row, task, printed)].

    Composing is the slow part of rendering: ``render`` computes this once for all the tables it
    renders and passes it to each ``render_table``.
    """
    # Only cells whose (task, method) occurs in two tables can share a configuration: compose just those.
    tables = [t for t in spec.targets.values() if t.kind == "table"]
    owners: dict[tuple[str, str], set[str]] = {}
    for target in tables:
        for row in target.rows:
            for task in target.tasks:
                owners.setdefault((task, str(row.overrides.get("method", "grft"))), set()).add(target.name)
    keys: dict[str, list[tuple[str, str, str, str]]] = {}
    for target in tables:
        paper = load_paper_table(target.paper, spec.paper_dir)
        for row in target.rows:
            if row.paper_only:
                continue
            for task in target.tasks:
                if len(owners[(task, str(row.overrides.get("method", "grft")))]) < 2:
                    continue
                try:
                    ident = identity(composer.config(target.cell(row, task).args))
                except ConfigUnavailable:
                    continue
                key = json.dumps(ident, sort_keys=True, default=str)
                keys.setdefault(key, []).append((target.name, row.label, task, paper.loc[row.label, task]))
    return keys


def shared_config_notes(
    target: Target, spec: Spec, composer: Composer, shared: SharedConfigs | None = None
) -> list[str]:
    """Cells of other tables that run exactly this cell's configuration, and whether the paper prints the same number.

    E.g. Table 5's L2 row is Table 1's GRFT row (same settings: L2 is the default norm), so both
    printed numbers should come from the same run.
    """
    keys = shared_configs(spec, composer) if shared is None else shared
    pairs: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}
    for cells in keys.values():
        for name, label, task, here in cells:
            if name != target.name:
                continue
            for other, other_label, _, printed in cells:
                if other != target.name:
                    pairs.setdefault((label, other, other_label), []).append((task, here, printed))
    notes = []
    for (label, other, other_label), items in pairs.items():
        differ = [f"{spec.label(t)} {a} vs {b}" for t, a, b in items if float(a) != float(b)]
        title = table_title(spec.targets[other])
        head = f"Paper: {label} runs the same configuration as {title}'s {other_label} on {len(items)} tasks"
        notes.append(
            f"{head}, but the printed numbers differ on {len(differ)}: {'; '.join(differ)}."
            if differ
            else f"{head}; the printed numbers agree."
        )
    return notes


NOT_COMPARABLE = "ours (not comparable)"
PROTOCOL_LINK = "docs/PROTOCOL.md#baselines"


def recipe_notes(target: Target, composer: Composer) -> tuple[set[str], list[str]]:
    """Rows whose recipe (conf/recipe/) says they cannot be compared with the paper's, and why.

    Also the notes of the recipes whose trainable share differs from the paper's, as each states it.
    """
    labels, notes = set(), []
    for row in target.rows:
        if row.paper_only or "recipe" not in row.overrides:
            continue
        try:
            recipe = composer.config(target.cell(row, target.tasks[0]).args).get("recipe") or {}
        except ConfigUnavailable:
            continue
        if recipe.get("comparable") is False:
            labels.add(row.label)
            notes.append(
                f"Ours, {row.label}: not comparable with the paper's row, whose recipe is not published; "
                f"runs with {recipe.get('source')} ({PROTOCOL_LINK})."
            )
        if recipe.get("share_differs"):
            notes.append(
                f"Ours, {row.label}: trainable share differs from the paper's: "
                f"{recipe.get('share_differs')} ({PROTOCOL_LINK})"
            )
    return labels, notes


def mark_not_comparable(target: Target, wide: pd.DataFrame, labels: set[str]) -> pd.DataFrame:
    """Relabel the "ours" line of each row in ``labels`` (the wide table holds paper / ours / diff per row)."""
    per_row = len(wide) // len(target.rows)  # paper / ours / diff (/ tuned)
    for i, row in enumerate(target.rows):
        if row.label in labels:
            wide.iloc[per_row * i + 1, 1] = NOT_COMPARABLE
    return wide


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
    doc_link = os.path.relpath(PROTOCOL_DOC, out_dir.resolve())
    paths[0].write_text(markdown(target, wide, notes, statistic_lines(target, spec, cells), doc_link, banner))
    paths[1].write_text(latex(target, wide))
    export = cells.drop(columns=["digits", "statistic_runs"]).round({"ours": 4, "ours_std": 4, "diff": 4, "tuned": 4})
    export.insert(2, "label", [_column_title(target, spec, c) for c in export["column"]])
    export.to_csv(paths[2], index=False)
    return TableResult(target.name, cells, wide, notes, paths)

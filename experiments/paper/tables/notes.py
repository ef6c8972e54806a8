"""A table's notes, each computed, never typed: what 'ours' holds (the statistic), the paper checked against
itself (printed means, text claims, Table 8's shares), cells two tables share, our runs' coverage, and the
recipes that make a row not comparable with the paper's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..compose import Composer, ConfigUnavailable
from ..matching import RecordIndex, identity
from ..paper import check_mean, decimals, load_claims, load_paper_table
from ..spec import Spec, Target
from .wide import TUNED_LINE, column_title, table_title

TUNED_STATISTIC = (
    f"{TUNED_LINE}: settings chosen on validation data only by a study (`make tune`: its objective is the "
    "protocol's statistic on the validation split; trials never see the test split), then trained on train + val "
    "and tested once: the final model's test accuracy, mean over seeds. Not the paper's protocol, which reports "
    "settings and epochs chosen with the test split in view (docs/PROTOCOL.md)"
)
PROTOCOL_LINK = "docs/PROTOCOL.md#baselines"


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
                f"Paper, {claim.source}: says {claim.row} {column_title(target, spec, claim.column)} "
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

"""Rendering from fixture records: the paper's layout, our values in the right cells, holes as gaps."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from experiments.paper.__main__ import main as cli
from experiments.paper.compose import Composer
from experiments.paper.figures import render_memory, render_sweep
from experiments.paper.matching import RecordIndex
from experiments.paper.spec import load_spec
from experiments.paper.tables import HOLE, NOT_COMPARABLE, render_table
from grft_app.paths import ROOT
from helpers.results_fixtures import search_path, write_fixture_record, write_stubs

SPEC = load_spec()

# The paper's row and column order, typed from its tables.
LAYOUT = {
    "table1": (
        [
            "Full",
            "Linear",
            "Bias",
            "Adapter",
            "LoRA",
            "VPT-Shallow",
            "VPT-Deep",
            "SSF",
            "SPT-Adapter",
            "SPT-LoRA",
            "GPS*",
            "GRFT",
        ],
        ["CUB-2011", "NABirds", "Oxford Flowers", "Stan.Dogs", "Stan.Cars", "Mean Acc.", "Params.(%)"],
    ),
    "table2": (
        [
            "Full",
            "Linear",
            "Bias",
            "Adapter",
            "LoRA",
            "VPT-Shallow",
            "VPT-Deep",
            "SSF",
            "SPT-Adapter",
            "SPT-LoRA",
            "GPS*",
            "GRFT",
        ],
        [
            "CIFAR-100",
            "Caltech101",
            "DTD",
            "Flowers102",
            "Pets",
            "SVHN",
            "Sun397",
            "Patch Camelyon",
            "EuroSAT",
            "Resisc45",
            "Retinopathy",
            "Clevr/count",
            "Clevr/distance",
            "DMLab",
            "KITTI/distance",
            "dSprites/loc",
            "dSprites/ori",
            "SmallNORB/azi",
            "SmallNORB/ele",
            "Mean Acc.",
            "Mean Params. (%)",
        ],
    ),
    "table3": (["Full", "LoRA", "GRFT"], ["CoLA", "MRPC", "RTE", "Mean Acc.", "Params.(%)"]),
    "table4": (
        ["GPS*", "GRFT-Sparse", "GRFT-Row", "GRFT-Column"],
        ["CUB-2011", "NABirds", "Oxford Flowers", "Stan.Dogs", "Stan.Cars", "Mean Acc."],
    ),
    "table5": (
        ["Without Norm", "L1 Norm", "L2 Norm"],
        ["CUB-2011", "NABirds", "Oxford Flowers", "Stan.Dogs", "Stan.Cars", "Mean Acc."],
    ),
}


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return write_stubs(tmp_path_factory.mktemp("stubs"))


@pytest.fixture(scope="module")
def composer(stubs):
    return Composer([search_path(stubs)])


def render(name, composer, tmp_path):
    index = RecordIndex.load(tmp_path / "runs")
    return render_table(SPEC.target(name), SPEC, composer, index, tmp_path / "tables")


def ours(result, row, column):
    cell = result.cells[(result.cells["row"] == row) & (result.cells["column"] == column)].iloc[0]
    return cell


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_tables_have_the_papers_layout_and_holes_without_runs(name, composer, tmp_path):
    result = render(name, composer, tmp_path)
    rows, columns = LAYOUT[name]
    wide = result.wide
    assert [c for c in wide.columns[2:]] == columns
    assert [m for m in wide["Method"] if m] == rows
    assert list(wide.iloc[:3, 1]) in (["paper", "ours", "diff"], ["paper", NOT_COMPARABLE, "diff"])
    md = (tmp_path / "tables" / f"{name}.md").read_text()
    assert "## Notes" in md and HOLE in md
    tex = (tmp_path / "tables" / f"{name}.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex
    csv = pd.read_csv(tmp_path / "tables" / f"{name}.csv")
    assert list(csv.columns) == [
        "row",
        "column",
        "label",
        "paper",
        "ours",
        "ours_std",
        "n",
        "diff",
        "status",
        "statistic",
    ]
    assert csv["ours"].isna().all()


def test_fixture_records_land_in_their_cells(composer, tmp_path):
    t1 = SPEC.target("table1")
    grft_row = next(r for r in t1.rows if r.label == "GRFT")
    gps_row = next(r for r in t1.rows if r.label == "GPS*")
    # GRFT on CUB, two seeds; GPS* on NABirds with its reference k; a GRFT run with another lr (no cell).
    write_fixture_record(composer, tmp_path / "runs", t1.cell(grft_row, "cub").args, 0.90, seed=0, pct=0.47)
    write_fixture_record(composer, tmp_path / "runs", t1.cell(grft_row, "cub").args, 0.92, seed=1, pct=0.47)
    write_fixture_record(composer, tmp_path / "runs", t1.cell(gps_row, "nabirds").args, 0.8675, pct=2.53)
    write_fixture_record(composer, tmp_path / "runs", ["experiment=fgvc/oxford_flowers", "lr=0.123"], 0.5)
    result = render("table1", composer, tmp_path)

    cub = ours(result, "GRFT", "cub")
    assert cub["ours"] == pytest.approx(91.0) and cub["n"] == 2 and cub["ours_std"] == pytest.approx(1.41421356)
    assert cub["diff"] == pytest.approx(91.0 - 90.1)
    assert ours(result, "GPS*", "nabirds")["ours"] == pytest.approx(86.75)
    for row, column in (("GRFT", "oxford_flowers"), ("GRFT", "mean"), ("GPS*", "cub"), ("Full", "cub")):
        assert ours(result, row, column)["status"] == "missing" and math.isnan(ours(result, row, column)["ours"])
    assert ours(result, "SPT-LoRA", "cub")["status"] == "paper_only"

    wide = result.wide
    line = wide.index[wide["Method"] == "GRFT"][0]
    assert wide.loc[line, "CUB-2011"] == "90.1"
    assert wide.loc[line + 1, "CUB-2011"] == "91.0 ± 1.4 (n=2)"
    assert wide.loc[line + 2, "CUB-2011"] == "+0.9"
    assert wide.loc[line + 1, "NABirds"] == HOLE and wide.loc[line + 1, "Mean Acc."] == HOLE
    spt = wide.index[wide["Method"] == "SPT-LoRA"][0]
    assert wide.loc[spt + 1, "CUB-2011"] == ""
    notes = "\n".join(result.notes)
    assert "1 finished runs of these tasks and methods match no cell" in notes
    assert "Full: printed Mean Acc. 89.44, but the mean of its printed cells is 88.540" in notes
    csv = pd.read_csv(tmp_path / "tables" / "table1.csv")
    assert csv[(csv.row == "GRFT") & (csv.column == "cub")]["ours"].item() == pytest.approx(91.0)


def test_our_means_are_recomputed_from_our_cells(composer, tmp_path):
    t5 = SPEC.target("table5")
    values = {"cub": 0.80, "nabirds": 0.70, "oxford_flowers": 0.99, "stanford_dogs": 0.85, "stanford_cars": 0.905}
    none_row = next(r for r in t5.rows if r.label == "Without Norm")
    for task, acc in values.items():
        write_fixture_record(composer, tmp_path / "runs", t5.cell(none_row, task).args, acc)
    result = render("table5", composer, tmp_path)
    expected = 100 * sum(values.values()) / 5
    assert ours(result, "Without Norm", "mean")["ours"] == pytest.approx(expected)
    assert ours(result, "Without Norm", "mean")["diff"] == pytest.approx(expected - 91.10)
    assert math.isnan(ours(result, "L1 Norm", "mean")["ours"])
    # L2 Norm is the configuration of Table 1's GRFT: the paper prints different numbers for it.
    assert any("L2 Norm runs the same configuration as Table 1's GRFT" in n and "differ" in n for n in result.notes)


def test_text_claim_mismatch_is_a_computed_note(composer, tmp_path):
    notes = render("table2", composer, tmp_path).notes
    assert any("GPS* Mean Acc. is 73.89; the table prints 73.61" in n for n in notes)
    assert any(n.startswith("Paper: 12 of 12 printed Mean Acc.") for n in notes)


def test_fig4_plots_points_and_leaves_gaps(composer, tmp_path):
    target = SPEC.target("fig4")
    write_fixture_record(composer, tmp_path / "runs", ["experiment=fgvc/cub", "k=3"], 0.88)
    write_fixture_record(composer, tmp_path / "runs", ["experiment=fgvc/cub", "lambda=1e-06"], 0.87)
    result = render_sweep(target, SPEC, composer, RecordIndex.load(tmp_path / "runs"), tmp_path / "figures")
    png, csv = result.paths
    assert png.stat().st_size > 10_000
    points = pd.read_csv(csv, dtype={"value": str})
    assert len(points) == 5 * (30 + 6 + 8 + 7)
    k3 = points[(points.panel == "a") & (points.task == "cub") & (points.value == "3")]
    assert k3["acc"].item() == pytest.approx(88.0)
    lam = points[(points.panel == "b") & (points.task == "cub") & (points.value == "1e-06")]
    assert lam["acc"].item() == pytest.approx(87.0)
    assert points[(points.panel == "a") & (points.task == "cub") & (points.value == "4")]["acc"].isna().item()
    assert (points["n"] > 0).sum() == 2


def test_fig3_plots_memory_traces_and_names_the_missing_run(composer, tmp_path):
    target = SPEC.target("fig3")
    grft_row = target.rows[0]
    trace = [(0.5, 10, 900.0), (1.0, 20, 910.0)]
    write_fixture_record(composer, tmp_path / "runs", target.cell(grft_row, "cub").args, 0.9, memory=trace)
    result = render_memory(target, SPEC, composer, RecordIndex.load(tmp_path / "runs"), tmp_path / "figures")
    png, csv = result.paths
    assert png.stat().st_size > 10_000
    points = pd.read_csv(csv)
    assert list(points["series"]) == ["GRFT", "GRFT"] and list(points["memory_mb"]) == [900.0, 910.0]
    assert any(n.startswith("GPS: no finished run") for n in result.notes)


def test_cli_renders_every_target_with_no_runs(stubs, tmp_path, capsys):
    code = cli(
        ["render", "paper", search_path(stubs), f"paths.runs={tmp_path / 'none'}", "--out", str(tmp_path / "out")]
    )
    assert code == 0
    made = sorted(p.name for p in (tmp_path / "out").rglob("*.*"))
    for name in ("table1", "table2", "table3", "table4", "table5"):
        assert {f"{name}.md", f"{name}.tex", f"{name}.csv"} <= set(made)
    assert {"fig3_memory.png", "fig3_memory.csv", "fig4_ablation.png", "fig4_ablation.csv"} <= set(made)
    # Rendered with no runs, every committed table and figure's data must be what this code writes (the
    # images are not compared byte for byte: matplotlib's files carry its version; their data is the csv).
    link = re.compile(r"\[PROTOCOL\.md\]\([^)]*\)")  # relative to the folder written to
    for written in sorted((tmp_path / "out").rglob("*")):
        if written.suffix not in (".md", ".tex", ".csv"):
            continue
        committed = ROOT / "results" / written.relative_to(tmp_path / "out")
        assert committed.is_file(), f"{committed} is not committed"
        same = [link.sub("[PROTOCOL.md]", p.read_text()) for p in (committed, written)]
        assert same[0] == same[1], f"{committed} is stale: run `python -m experiments.paper render paper` with no runs"


def test_a_failed_run_shows_as_failed_not_as_a_hole_and_a_damaged_record_is_named(composer, tmp_path):
    import json

    from experiments.paper.tables import FAILED

    t1 = SPEC.target("table1")
    grft_row = next(r for r in t1.rows if r.label == "GRFT")
    folder = write_fixture_record(composer, tmp_path / "runs", t1.cell(grft_row, "nabirds").args, 0.0)
    record = json.loads((folder / "record.json").read_text())
    record.update(done=False, status="failed", error="FileNotFoundError: nabirds: data missing; make data-fgvc")
    record.pop("metrics")
    (folder / "record.json").write_text(json.dumps(record))
    damaged = write_fixture_record(composer, tmp_path / "runs", t1.cell(grft_row, "cub").args, 0.9) / "record.json"
    damaged.write_text(damaged.read_text()[:100])
    result = render("table1", composer, tmp_path)
    assert ours(result, "GRFT", "nabirds")["status"] == "failed"
    assert (
        ours(result, "GRFT", "cub")["status"] == "missing"
        and ours(result, "GRFT", "stanford_dogs")["status"] == "missing"
    )
    wide = result.wide
    line = wide.index[wide["Method"] == "GRFT"][0]
    assert wide.loc[line + 1, "NABirds"] == FAILED and wide.loc[line + 1, "CUB-2011"] == HOLE
    notes = "\n".join(result.notes)
    assert "GRFT / nabirds failed: FileNotFoundError: nabirds: data missing" in notes
    assert f"left out a record that cannot be read: {damaged} is not a valid run record" in notes


def test_rendering_smoke_runs_never_overwrites_the_real_tables(stubs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli(["render", "table3", search_path(stubs), "debug=smoke", f"paths.runs={tmp_path / 'runs'}"])
    assert code == 0
    assert not (tmp_path / "results" / "tables").exists()
    md = (tmp_path / "results" / "smoke" / "tables" / "table3.md").read_text()
    assert "**Smoke runs** (debug=smoke)" in md and "not results" in md


def test_a_cell_holds_the_statistic_its_protocol_reports_and_says_which(composer, tmp_path):
    import json

    t1 = SPEC.target("table1")
    grft_row = next(r for r in t1.rows if r.label == "GRFT")
    folder = write_fixture_record(composer, tmp_path / "runs", t1.cell(grft_row, "cub").args, 0.80)
    record = json.loads((folder / "record.json").read_text())
    # As the runner writes it under protocol=reference: final 0.80, best epoch 0.85 (epoch 57), EMA 0.83.
    record["metrics"].update({"test_acc_best": 0.85, "test_acc_best_epoch": 57, "test_ema_acc": 0.83})
    record["evaluation"] = {
        "protocol": "reference",
        "reported": {
            "statistic": "best",
            "model": "raw",
            "key": "test_acc_best",
            "description": "best epoch's test accuracy (fixture)",
        },
    }
    (folder / "record.json").write_text(json.dumps(record))
    result = render("table1", composer, tmp_path)
    assert ours(result, "GRFT", "cub")["ours"] == pytest.approx(85.0)
    text = (tmp_path / "tables" / "table1.md").read_text()
    assert (
        "Every task column, except the rows below: best epoch's test accuracy of the raw (not EMA) model "
        "(110 epochs, test split evaluated after every epoch; protocol=reference)." in text
    )
    assert "GRFT, CUB-2011: some runs report best epoch's test accuracy (fixture)." in text  # not the config's words
    import re

    (link,) = re.findall(r"\[PROTOCOL\.md\]\(([^)]+)\)", text)  # linked relative to the table's folder
    assert ((tmp_path / "tables") / link).resolve() == ROOT / "docs" / "PROTOCOL.md"
    csv = pd.read_csv(tmp_path / "tables" / "table1.csv")
    assert csv[(csv.row == "GRFT") & (csv.column == "cub")]["statistic"].item().startswith("best epoch's")


def test_a_tuned_line_shows_the_final_runs_of_studies_beside_the_paper_and_ours(composer, tmp_path):
    from experiments.paper.tables import TUNED_LINE
    from grft_app.record import Evaluation, Reported, Tuning, read_record, write_record

    t1 = SPEC.target("table1")
    cell = t1.cell(next(r for r in t1.rows if r.label == "GRFT"), "cub").args
    runs = tmp_path / "runs"
    write_fixture_record(composer, runs, cell, 0.90)
    # a study's final run: its own lr, trained on train + val and tested once
    final = write_fixture_record(composer, runs, [*cell, "lr=0.0042", "protocol.test_every=0"], 0.88)
    record = read_record(final)
    record.evaluation = Evaluation(
        protocol="reference",
        reported=Reported(statistic="final", model="raw", key="test_acc", description="final"),
        selected_on="val",
        tuning=Tuning(study="cub-grft", stage="final", objective="val_acc_best", trial=3, value=0.91),
    )
    write_record(final, record)
    index = RecordIndex.load(runs)
    result = render_table(t1, SPEC, composer, index, tmp_path / "tables", tuned=True)
    cub = ours(result, "GRFT", "cub")
    assert cub["ours"] == pytest.approx(90.0) and cub["n"] == 1  # the tuned run is not one of ours
    assert cub["tuned"] == pytest.approx(88.0) and cub["tuned_n"] == 1
    assert ours(result, "GRFT", "nabirds")["tuned_n"] == 0
    wide = result.wide
    line = wide.index[wide["Method"] == "GRFT"][0]
    assert wide.loc[line + 3, ""] == TUNED_LINE and wide.loc[line + 3, "CUB-2011"] == "88.0"
    assert wide.loc[line + 3, "NABirds"] == HOLE
    text = (tmp_path / "tables" / "table1.md").read_text()
    assert f"{TUNED_LINE}: settings chosen on validation data only" in text
    plain = render_table(t1, SPEC, composer, RecordIndex.load(runs), tmp_path / "plain")
    assert "tuned" not in plain.cells.columns and len(plain.wide) == 3 * len(t1.rows)

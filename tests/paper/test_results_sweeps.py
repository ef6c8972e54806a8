"""The run half: jobs per target, finished runs skipped, shared runs launched once, and a real tiny sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from experiments.paper.__main__ import main as cli
from experiments.paper.compose import Composer
from experiments.paper.spec import SpecError, load_spec
from experiments.paper.sweeps import plan, plan_all
from helpers.results_fixtures import ROOT, search_path, write_fixture_record, write_stubs

SPEC = load_spec()
FGVC = 5


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return write_stubs(tmp_path_factory.mktemp("stubs"))


@pytest.fixture
def composer(stubs, tmp_path):
    return Composer([search_path(stubs), f"paths.runs={tmp_path / 'runs'}"])


def test_cell_counts_follow_the_paper():
    counts = {name: len(t.cells()) for name, t in SPEC.targets.items()}
    assert counts["table1"] == 10 * FGVC and counts["table2"] == 10 * 19 and counts["table3"] == 3 * 3
    assert counts["table4"] == 4 * FGVC and counts["table5"] == 3 * FGVC and counts["fig3"] == 2
    assert counts["fig4"] == FGVC * (30 + 6 + 8 + 7)  # k 1..30, lambda 1e-8..1e-3, blocks 1..8, subsets 1..7


@pytest.mark.composes
def test_default_rows_are_the_papers_own_runs(composer):
    p = plan(SPEC.target("table1"), composer)
    assert {j.cell.row for j in p.jobs} == {"GRFT", "GPS*"} and len(p.jobs) == 2 * FGVC
    assert len(plan(SPEC.target("table1"), composer, rows="all").jobs) == 10 * FGVC
    # GRFT: one multirun over the five tasks; GPS*: its reference settings differ per task.
    assert sum(1 for launch in p.launches if launch[0].startswith("experiment=fgvc/cub,fgvc/nabirds")) == 1
    assert len(p.launches) == 1 + FGVC


@pytest.mark.composes
def test_finished_runs_are_skipped_and_seeds_multiply(composer, tmp_path):
    target = SPEC.target("table5")
    row = target.rows[0]
    write_fixture_record(composer, tmp_path / "runs", target.cell(row, "cub").args, 0.9)
    p = plan(target, composer, seeds=(0, 1))
    assert len(p.jobs) == 2 * 3 * FGVC and len(p.done) == 1 and len(p.pending) == 2 * 3 * FGVC - 1
    assert not any(
        "experiment=fgvc/cub," in " ".join(launch) and "norm=none" in launch and "seed=0" in launch
        for launch in p.launches
        if launch[0].startswith("experiment=fgvc/cub,")
    )


@pytest.mark.composes
def test_runs_shared_between_targets_launch_once(composer):
    table1, table4, table5 = plan_all([SPEC.target(n) for n in ("table1", "table4", "table5")], composer)
    # Table 4 reuses Table 1's GPS* runs and its GRFT runs (the configured selection of each task);
    # Table 5's L2 row is Table 1's GRFT.
    assert len(table1.pending) == 2 * FGVC
    assert len(table4.shared) == 2 * FGVC and len(table4.pending) == 2 * FGVC
    assert len(table5.shared) == FGVC and len(table5.pending) == 2 * FGVC


@pytest.mark.composes
def test_dry_run_lists_job_counts_and_commands(stubs, tmp_path, capsys):
    code = cli(["run", "table3", "fig3", "--dry-run", search_path(stubs), f"paths.runs={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "table3: 9 jobs (9 cells x seeds), 0 done, 9 to launch in 3 multiruns" in out
    assert "fig3: 2 jobs (2 cells x seeds), 0 done, 2 to launch in 2 multiruns" in out
    assert (
        "python run.py -m experiment=glue/cola,glue/mrpc,glue/rte method=lora recipe=lora_glue seed=0 "
        "hydra/launcher=basic"
    ) in out
    assert "total: 11 jobs to launch in 5 multiruns" in out
    # Which number the cells will compare with the paper, from their protocol (docs/PROTOCOL.md).
    assert (
        "compared with the paper: best epoch's test accuracy of the raw model (110 epochs, test split evaluated "
        "after every epoch; protocol=reference) (9 cells" in out
    )
    assert not list(tmp_path.rglob("record.json"))


def test_unknown_target_and_bad_spec_are_clear_errors(tmp_path, capsys):
    assert cli(["run", "table9", "--dry-run"]) == 2
    assert "unknown target 'table9'; known: table1" in capsys.readouterr().err
    bad = tmp_path / "spec.yaml"
    bad.write_text("benchmarks: {b: {tasks: [x]}}\ntargets:\n  t: {kind: chart, benchmark: b}\n")
    with pytest.raises(SpecError, match="kind must be one of table, memory, sweep"):
        load_spec(bad)


@pytest.mark.process
def test_make_targets_exist_and_call_the_results_cli():
    out = subprocess.run(
        [
            "make",
            "-n",
            "table1",
            "fig4-run",
            "table2-render",
            "hparams",
            "paper-dry-run",
            "STAMP=",
            "PYTHON=python",
            "LAUNCHER=submitit_slurm",
            "SEEDS=0,1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "python -m experiments.paper run table1 --launcher submitit_slurm --rows default --seeds 0,1" in out
    assert "python -m experiments.paper render table1" in out and "python -m experiments.paper run fig4 " in out
    assert "python -m experiments.paper render table2" in out and "python -m experiments.paper hparams" in out
    assert "python -m experiments.paper run paper" in out and "--dry-run" in out


def _tiny_project(folder):
    """Two tiny digits experiments, a table over them, and its 'paper' numbers (made up for the test)."""
    conf = folder / "conf"
    (conf / "dataset").mkdir(parents=True)
    (conf / "experiment" / "tiny").mkdir(parents=True)
    (conf / "dataset" / "digits_stub.yaml").write_text(
        textwrap.dedent("""\
        name: digits
        family: digits
        num_classes: 5
        target_classes: [5, 6, 7, 8, 9]
        train_per_class: 40
        split_seed: 0
    """)
    )
    for name, k in (("digits_a", 1), ("digits_b", 2)):
        (conf / "experiment" / "tiny" / f"{name}.yaml").write_text(
            textwrap.dedent(f"""\
            # @package _global_
            defaults:
              - override /dataset: digits_stub
              - override /model: vit_digits
            k: {k}
            lr: 3e-3
            num_workers: 0
        """)
        )
    (folder / "paper").mkdir()
    (folder / "paper" / "tiny.csv").write_text("row,digits_a,digits_b,mean\nGRFT,50.0,60.0,55.00\n")
    (folder / "spec.yaml").write_text(
        textwrap.dedent("""\
        paper_dir: paper
        benchmarks: {tiny: {tasks: [digits_a, digits_b]}}
        targets:
          tiny:
            kind: table
            caption: "Tiny: a real sweep"
            paper: tiny.csv
            benchmark: tiny
            mean: Mean Acc.
            rows:
              - {label: GRFT, launch: true}
    """)
    )
    return folder


@pytest.mark.process
def test_a_real_smoke_sweep_appears_in_the_rendered_table(tmp_path):
    project = _tiny_project(tmp_path / "project")
    runs, out = tmp_path / "runs", tmp_path / "out"
    overrides = ["debug=smoke", f"paths.runs={runs}", search_path(project / "conf")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "experiments.paper", "--spec", str(project / "spec.yaml")]
    launched = subprocess.run(
        [*base, "run", "tiny", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-3000:]
    assert "tiny: 2 jobs (2 cells x seeds), 0 done, 2 to launch in 1 multiruns" in launched.stdout
    records = sorted(runs.rglob("record.json"))
    assert len(records) == 2

    again = subprocess.run(
        [*base, "run", "tiny", "--dry-run", *overrides], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert "2 done, 0 to launch" in again.stdout

    rendered = subprocess.run(
        [*base, "render", "tiny", *overrides, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    table = pd.read_csv(out / "tables" / "tiny.csv").set_index(["row", "column"])
    import json

    by_k = {json.loads(r.read_text())["k"]: json.loads(r.read_text())["metrics"]["test_acc"] for r in records}
    assert table.loc[("GRFT", "digits_a"), "ours"] == pytest.approx(100 * by_k[1], abs=1e-4)
    assert table.loc[("GRFT", "digits_b"), "ours"] == pytest.approx(100 * by_k[2], abs=1e-4)
    assert table.loc[("GRFT", "mean"), "ours"] == pytest.approx(50 * (by_k[1] + by_k[2]), abs=1e-4)
    assert "Ours: 2 of 2 runnable cells have finished runs." in (out / "tables" / "tiny.md").read_text()


def test_cells_that_cannot_compose_are_counted_and_named(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        textwrap.dedent("""\
        benchmarks: {nowhere: {tasks: [absent]}}
        targets:
          sweep:
            kind: sweep
            benchmark: nowhere
            panels:
              - {name: a, key: k, range: [1, 3]}
              - {name: b, key: subsets, range: [1, 3]}
    """)
    )
    p = plan(load_spec(spec_file).target("sweep"), Composer())
    assert len(p.unavailable) == 6 and not p.jobs and not p.launches
    assert all("experiment/nowhere/absent" in reason for _, reason in p.unavailable)

"""End to end on miniature data: one task of each family through the real config, tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from grft_app.paths import ROOT
from grft_app.run.app import run_dir_of
from grft_app.run.runner import run_task
from grft_app.run.settings import register_resolvers
from helpers.miniature import write_fgvc, write_glue, write_vtab

register_resolvers()

MINIATURES = {
    "eurosat": lambda d: write_vtab(d, "eurosat", num_classes=10),
    "oxford_flowers": lambda d: write_fgvc(d, "oxfordflower", "", list(range(1, 103)), per_split=(1, 1, 1)),
    "cola": lambda d: write_glue(d, "cola"),
    "mrpc": lambda d: write_glue(d, "mrpc"),
}
EXTRA_METRICS = {"eurosat": set(), "oxford_flowers": set(), "cola": {"test_mcc"}, "mrpc": {"test_f1"}}


def run(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *overrides,
                "debug=smoke",
                f"paths.runs={tmp_path / 'runs'}",
                f"data_dir={tmp_path / 'data'}",
                "baselines=[]",
            ],
        )
    return run_task(cfg, run_dir_of(cfg))


@pytest.mark.trains
@pytest.mark.parametrize("task", list(MINIATURES))
def test_smoke_run_on_a_miniature_of_each_family(tmp_path, task):
    MINIATURES[task](tmp_path / "data")
    record = run(tmp_path, f"dataset={task}")
    assert record.done and record.task == task
    assert {"test_acc"} | EXTRA_METRICS[task] <= set(record.metrics)
    assert 0.0 <= record.metrics["test_acc"] <= 1.0 and record.params.trainable > 0
    assert record.model == {"cola": "meta-llama/Llama-3.2-1B", "mrpc": "meta-llama/Llama-3.2-1B"}.get(
        task, "vit_base_patch16_224.augreg_in21k"
    )  # the paper's model, in its tiny form under debug=smoke


@pytest.mark.trains
@pytest.mark.parametrize(
    "experiment,task", [("vtab/eurosat", "eurosat"), ("fgvc/oxford_flowers", "oxford_flowers"), ("glue/cola", "cola")]
)
def test_smoke_run_of_the_experiment_config(tmp_path, experiment, task):
    if not (ROOT / "conf" / "experiment" / f"{experiment}.yaml").is_file():
        pytest.skip(f"conf/experiment/{experiment}.yaml is not in this checkout")
    MINIATURES[task](tmp_path / "data")
    record = run(tmp_path, f"experiment={experiment}")
    assert record.done and record.task == task


@pytest.mark.trains
def test_missing_data_stops_the_run_with_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m data_prep.vtab --tasks dtd"):
        run(tmp_path, "dataset=dtd")


@pytest.mark.process
def test_run_py_on_a_glue_miniature(tmp_path):
    write_glue(tmp_path / "data", "rte")
    env = {**os.environ, "GRFT_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "run.py", "dataset=rte", "debug=smoke", "baselines=[]", f"data_dir={tmp_path / 'data'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list((tmp_path / "runs").glob("rte/grft/*/record.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["done"]

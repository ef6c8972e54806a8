"""The Hydra + Lightning application, end to end on the embedded digits task (tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning as L
import pytest

import grft
from grft_app.paths import ROOT
from grft_app.run.app import run_dir_of
from grft_app.run.runner import run_task
from grft_app.run.settings import register_resolvers
from helpers.app_runs import make_cfg, run

register_resolvers()


@pytest.mark.trains
@pytest.mark.parametrize(
    "selection,norm", [("row", "l2"), ("column", "l2"), ("sparse", "l2"), ("row", "l1"), ("row", "none")]
)
def test_smoke_runs_write_a_complete_record(tmp_path, selection, norm):
    record, run_dir = run(tmp_path, f"selection={selection}", f"norm={norm}", "lambda=0.01")
    saved = json.loads((run_dir / "record.json").read_text())
    assert saved["done"] is True and saved == record.to_json()
    assert (saved["method"], saved["selection"], saved["norm"]) == ("grft", selection, norm)
    assert 0.0 <= saved["metrics"]["test_acc"] <= 1.0
    assert saved["timings"]["probe_s"] > 0 and saved["params"]["trainable"] > 0
    selection_file = grft.Selection.load(run_dir / saved["selection_file"])
    assert selection_file.kind == selection and selection_file.k == saved["k"]
    # The probe's facts: k rows of [out, in] hold k * in entries, k columns (or k per row) k * out.
    per_layer = {
        "row": lambda out, inp: saved["k"] * inp,
        "column": lambda out, inp: saved["k"] * out,
        "sparse": lambda out, inp: saved["k"] * out,
    }[selection]
    shapes = [selection_file[name].shape for name in selection_file]
    # debug=smoke probes 8 batches of 4 (probe.max_batches).
    facts = saved["probe_facts"]
    assert {key: facts[key] for key in ("layers", "selected_entries", "batches", "images")} == {
        "layers": len(shapes),
        "selected_entries": sum(per_layer(*s) for s in shapes),
        "batches": 8,
        "images": 32,
    }
    assert facts["passes"] >= 1 and facts["passes_from"] == "probe.memory=train"  # the default budget
    # The adapter on a fresh base model reproduces the run's tuned model.
    assert (run_dir / saved["adapter_file"]).stat().st_size > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_a_baseline_gets_the_method_group_hydra_composes(tmp_path):
    from hydra import initialize_config_dir

    from grft_app.run.app import with_method
    from grft_app.run.settings import ConfigError

    cfg = make_cfg(tmp_path, "method=grft")
    other = with_method(cfg, "lora", {"lr": 0.5})
    expected = make_cfg(tmp_path, "method=lora")
    assert other.method == expected.method and other.method.name == "lora"
    assert other.lr == 0.5 and other.baselines is None and other.dataset == cfg.dataset and cfg.method.name == "grft"
    # Through Hydra's config search path, not a file under conf/: a group only another config dir holds.
    extra = tmp_path / "conf"
    (extra / "method").mkdir(parents=True)
    (extra / "method" / "lora_r2.yaml").write_text("name: lora\nr: 2\n")
    with initialize_config_dir(config_dir=str(extra), version_base="1.3"):
        assert with_method(cfg, "lora_r2").method == {"name": "lora", "r": 2}
    with pytest.raises(ConfigError, match="'nope' is unknown; known: adapter, bias, full"):
        with_method(cfg, "nope")


@pytest.mark.process
def test_run_py_entry_point_and_output_dir(tmp_path):
    env = {**os.environ, "GRFT_RUNS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "run.py", "debug=smoke", "baselines=null", "k=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list(tmp_path.glob("digits/grft/*/record.json"))
    assert len(records) == 1
    run_dir = records[0].parent
    assert (run_dir / ".hydra" / "config.yaml").is_file()  # Hydra's own output lives in the run dir
    # Re-launching the same command finds the finished run and does not train again.
    again = subprocess.run(
        [sys.executable, "run.py", "debug=smoke", "baselines=null", "k=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and "already done" in again.stderr + again.stdout


class StopAtEpoch(L.Callback):
    """Simulates a killed job: dies at the start of ``epoch``, after the previous epoch's checkpoint."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise SystemExit("killed")


@pytest.mark.trains
def test_resume_keeps_the_selection_skips_the_probe_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    overrides = ("epochs=3", "trainer.limit_train_batches=3", "selection=column", "lambda=0.01")
    straight, straight_dir = run(tmp_path / "a", *overrides)

    with pytest.raises(SystemExit):
        run(tmp_path / "b", *overrides, callbacks=[StopAtEpoch(2)])
    cfg = make_cfg(tmp_path / "b", *overrides)
    run_dir = run_dir_of(cfg)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "record.json").is_file()

    import grft_app.methods.grft as grft_method

    def no_probe(*args, **kwargs):
        raise AssertionError("the probe ran again on resume")

    monkeypatch.setattr(grft_method, "select", no_probe)
    resumed = run_task(cfg, run_dir)
    assert resumed.resumed is True
    assert resumed.probe_facts == straight.probe_facts and resumed.probe_facts["selected_entries"] > 0
    assert grft.Selection.load(run_dir / resumed.selection_file) == grft.Selection.load(
        straight_dir / straight.selection_file
    )
    assert resumed.metrics["test_acc"] == straight.metrics["test_acc"]
    assert resumed.metrics["test_loss"] == pytest.approx(straight.metrics["test_loss"], rel=1e-6)


@pytest.mark.trains
def test_seeded_runs_are_deterministic_and_seeds_matter(tmp_path):
    first, first_dir = run(tmp_path / "a", "seed=3")
    second, second_dir = run(tmp_path / "b", "seed=3")
    assert first.metrics == second.metrics
    assert grft.Selection.load(first_dir / "selection.safetensors") == grft.Selection.load(
        second_dir / "selection.safetensors"
    )
    other, _ = run(tmp_path / "c", "seed=4")
    assert other.metrics["test_loss"] != first.metrics["test_loss"]


def run_cli(tmp_path, *args):
    env = {**os.environ, "GRFT_RUNS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "run.py", "debug=smoke", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.process
@pytest.mark.parametrize(
    "args,expected",
    [
        (["dataset=no_such_task"], "Available options in 'dataset'"),
        (["selection=diagonal"], "Available options in 'selection'"),
        (["norm=l3"], "Available options in 'norm'"),
        (["k=0"], "error: k must be"),
        (["lambda=-1"], "error: lambda must be"),
        (["regular_layers=99"], "error: regular_layers=99 exceeds"),
        (["k=1000"], "error: k=1000 is larger than"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(tmp_path, args, expected):
    proc = run_cli(tmp_path, *args)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr[-2000:]
    if expected.startswith("error:"):
        assert "Traceback" not in proc.stderr
        assert not list(tmp_path.rglob("record.json"))


@pytest.mark.parametrize(
    "group,expected", [("csv", ["CSVLogger"]), ("tensorboard", ["CSVLogger", "TensorBoardLogger"]), ("none", [])]
)
def test_the_logger_group_names_its_lightning_loggers_which_write_in_the_run_directory(tmp_path, group, expected):
    from grft_app.run.runner import make_loggers

    cfg = make_cfg(tmp_path, f"logger={group}")
    made = make_loggers(cfg, tmp_path / "run")
    assert [type(logger).__name__ for logger in made] == expected
    assert all(logger.save_dir == str(tmp_path / "run") for logger in made)

"""Choosing settings on validation data (``make tune``): a study's trials never see the test split,
its final run trains on train + val and is tested once, and a stopped study resumes where it stopped.

One two-trial study on the digits default (debug-sized), launched as ``make tune`` launches it
(``run.py -m tune=...``), is shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grft_app.paths import ROOT
from grft_app.record import load_record_file

optuna = pytest.importorskip("optuna")

STUDY = "digits-grft"
TEST_METRIC = re.compile(r"\btest[_/](acc|loss|ema|mcc|f1)")


def study_cli(runs: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "run.py", "-m", "tune=grft_digits", "debug=smoke", f"paths.runs={runs}", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def records(runs: Path) -> dict[str, list]:
    by_stage: dict[str, list] = {"trial": [], "final": []}
    for path in sorted((runs / "digits" / "grft").glob("*/record.json")):
        record = load_record_file(path)
        by_stage[record.evaluation.tuning.stage].append(record)
    return by_stage


def study_of(runs: Path):
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{runs / 'studies' / STUDY / 'study.db'}")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    done = study_cli(runs, "hydra.sweeper.trials=2")
    return runs, done.stdout


def test_two_trials_on_validation_then_one_final_run_on_train_and_val(study):
    from grft_app.data import build_datasets
    from grft_app.data.splits import InputSpec

    runs, out = study
    found = records(runs)
    assert len(found["trial"]) == 2 and len(found["final"]) == 1, out
    trials = study_of(runs).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    inputs = InputSpec(img_size=8, in_chans=1, mean=(0.5,), std=(0.5,))
    for record in found["trial"]:
        assert record.evaluation.reported.key == "val_acc"  # the simple protocol's statistic (final), on val
        assert record.metrics["val_acc"] == pytest.approx(
            next(t.value for t in trials if t.params["k"] == record.k and t.params["lr"] == record.lr)
        )
        # trained on the training part only: 160 of the 200 images, 40 held out (8 per class)
        splits = build_datasets(record.config["dataset"], "data", inputs)
        assert (len(splits.train), len(splits.val)) == (160, 40)
    final = found["final"][0]
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert final.evaluation.selected_on == "val"
    assert final.evaluation.tuning.study == STUDY and final.evaluation.tuning.trial == best.number
    assert (final.k, final.lr, final.lambda_) == (best.params["k"], best.params["lr"], best.params["lambda"])
    splits = build_datasets(final.config["dataset"], "data", inputs)
    assert len(splits.train) == 200 and splits.val is None  # train + val
    summary = json.loads((runs / "studies" / STUDY / "study.json").read_text())
    assert summary["final"]["run_dir"] == str(final.run_dir) and summary["best"]["trial"] == best.number
    held = json.loads((runs / "studies" / STUDY / "data_split.json").read_text())
    assert len(held["val_indices"]) == 40


def test_no_trial_evaluates_the_test_split_and_the_final_run_tests_once(study):
    runs, _ = study
    found = records(runs)
    for record in found["trial"]:
        run_dir = Path(record.run_dir)
        assert not [k for k in record.metrics if k.startswith("test")]
        assert not [k for point in record.evaluation.curve for k in point if k.startswith("test")]
        files = [run_dir / "record.json", run_dir / "run.log", *run_dir.glob("logs/*/metrics.csv")]
        assert len(files) == 3
        for path in files:
            assert not TEST_METRIC.search(path.read_text()), path
    final = found["final"][0]
    assert final.evaluation.test_every == 0 and final.evaluation.reported.key == "test_acc"
    assert [p["epoch"] for p in final.evaluation.curve if "test_acc" in p] == [final.evaluation.final_epoch]
    header = next(Path(final.run_dir).glob("logs/*/metrics.csv")).read_text().splitlines()[0]
    assert "test/acc" in header


def test_a_stopped_study_resumes_without_repeating_finished_trials(study):
    runs, _ = study
    before = {str(r.run_dir): r.launches for r in records(runs)["trial"]}
    stopped = study_of(runs)
    params = {"k": 1, "lambda": 0.0, "regular_layers": 2, "lr": 0.005}
    stopped.enqueue_trial(params)
    # what a launch stopped mid-trial leaves behind: a RUNNING trial, asked with the study's space
    running = stopped.ask(fixed_distributions=stopped.trials[0].distributions)
    assert running.params == params
    out = study_cli(runs, "hydra.sweeper.trials=3").stdout
    assert "2 of 3 trials finished" in out
    trials = study_of(runs).get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"], states
    assert trials[3].params == params and trials[3].user_attrs["retry_of"] == 2
    after = {str(r.run_dir): r.launches for r in records(runs)["trial"]}
    assert len(after) == 3
    for run_dir, launches in before.items():  # the finished trials were not launched again
        assert after[run_dir] == launches


def test_glue_holds_out_a_seeded_stratified_part_of_train(tmp_path):
    from collections import Counter

    from grft_app.data import build_datasets
    from grft_app.data.splits import InputSpec
    from grft_app.models.llama import tiny_tokenizer
    from helpers.miniature import glue_expected, write_glue

    write_glue(tmp_path, "cola")  # 8 training rows, 4 of each class
    _, labels = glue_expected("cola")
    cfg = {"name": "cola", "family": "glue", "folder": "CoLA", "num_classes": 2, "val_fraction": 0.5, "val_seed": 3}
    spec = InputSpec(kind="text", tokenizer=tiny_tokenizer(), max_length=64)
    splits = build_datasets(cfg, tmp_path, spec)
    held = splits.split_listing["val_indices"]
    kept = [i for i in range(8) if i not in held]
    assert Counter(labels[i] for i in held) == {0: 2, 1: 2}  # half of each class
    assert [splits.val[j][1] for j in range(4)] == [labels[i] for i in held]
    assert [splits.train[j][1] for j in range(4)] == [labels[i] for i in kept]
    assert build_datasets(cfg, tmp_path, spec).split_listing["val_indices"] == held  # seeded: every trial the same


@pytest.mark.slow
def test_a_vtab_study_validates_on_val200_and_trains_the_final_run_on_train800val200(tmp_path):
    from helpers.miniature import write_vtab

    write_vtab(tmp_path / "data", "dtd", 47, train_per_class=1, val_per_class=1, test_per_class=1)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "run.py", "-m", "experiment=vtab/dtd", "tune=grft", "debug=smoke", f"paths.runs={runs}",
               f"data_dir={tmp_path / 'data'}", "hydra.sweeper.trials=2", "regular_layers=all"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = {"trial": [], "final": []}
    for path in sorted((runs / "dtd" / "grft").glob("*/record.json")):
        record = load_record_file(path)
        found[record.evaluation.tuning.stage].append(record)
    assert len(found["trial"]) == 2 and len(found["final"]) == 1
    for record in found["trial"]:
        assert record.config["dataset"]["split"] == "train800"
        assert record.evaluation.reported.key == "val_acc_best"  # the reference protocol's best epoch, on val
        assert not [k for k in record.metrics if k.startswith("test")]
    final = found["final"][0]
    assert final.config["dataset"]["split"] == "train800val200" and final.evaluation.selected_on == "val"
    assert final.evaluation.tuning.objective == "val_acc_best" and final.evaluation.reported.key == "test_acc"


def test_own_data_final_run_trains_on_its_val_folder_too(tmp_path):
    from grft_app.data import build_datasets
    from grft_app.data.splits import InputSpec
    from grft_app.tune.stages import with_val_in_train
    from helpers.own_data import write_image_folder

    written = write_image_folder(tmp_path / "pets", {"train": 2, "val": 1, "test": 1})
    cfg = {"name": "images", "family": "images", "root": str(tmp_path / "pets"), "val_fraction": None,
           "test_fraction": None, "split_seed": 0, "transform": {"train": "resize", "eval": "resize"}}  # fmt: skip
    splits = build_datasets(cfg, tmp_path, InputSpec(kind="image", img_size=8))
    joined = with_val_in_train(splits)
    assert joined.val is None and len(joined.train) == len(written["train"]) + len(written["val"]) == len(joined.probe)
    assert joined.train.transform is splits.train.transform  # the val images train as training images do
    labels = sorted(int(joined.train.raw[i][1]) for i in range(len(joined.train)))
    assert labels == sorted([int(splits.train.raw[i][1]) for i in range(len(splits.train))] + [
        int(splits.val.raw[i][1]) for i in range(len(splits.val))])  # fmt: skip


@pytest.mark.slow
def test_a_study_on_own_images_validates_on_its_val_folder(tmp_path):
    from helpers.own_data import write_image_folder

    write_image_folder(tmp_path / "pets", {"train": 4, "val": 2, "test": 2})
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "run.py", "-m", "dataset=images", f"dataset.root={tmp_path / 'pets'}", "model=timm",
               "model.name=vit_tiny_patch16_224", "tune=grft_digits", "debug=smoke", f"paths.runs={runs}",
               "hydra.sweeper.trials=2", "regular_layers=all"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = {"trial": [], "final": []}
    for path in sorted((runs / "images" / "grft").glob("*/record.json")):
        record = load_record_file(path)
        found[record.evaluation.tuning.stage].append(record)
    assert len(found["trial"]) == 2 and len(found["final"]) == 1
    for record in found["trial"]:
        assert "val_acc" in record.metrics and not [k for k in record.metrics if k.startswith("test")]
    assert found["final"][0].evaluation.selected_on == "val" and "test_acc" in found["final"][0].metrics


def test_the_search_space_is_read_from_hydra_sweep_syntax_and_a_fixed_key_leaves_it():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from grft_app.tune.space import parse

    space, fixed = parse(
        [
            "k=choice(1, 2, 26)",
            "regular_layers=choice(0, all)",
            "lr=tag(log, interval(1e-4, 7e-3))",
            "subsets=range(1, 8, 3)",
            "seed=1",
            "k=auto",
        ],  # fmt: skip
        OverridesParser.create(),
    )
    assert fixed == {"seed": "seed=1", "k": "k=auto"} and "k" not in space
    assert space["regular_layers"] == CategoricalDistribution([0, "all"])
    assert space["lr"] == FloatDistribution(1e-4, 7e-3, log=True)
    assert space["subsets"] == IntDistribution(1, 7, step=3)  # Hydra's range excludes its stop: 1, 4, 7


def test_a_study_launched_again_with_other_settings_is_one_line_naming_the_fix(tmp_path):
    from grft_app.tune.study import StudyMismatch, open_study

    setup = {"objective": "val_acc", "space": {"k": "choice"}, "fixed": ["seed=0"]}
    open_study(tmp_path, "s", 0, setup)
    open_study(tmp_path, "s", 0, setup)  # the same study: it resumes
    with pytest.raises(StudyMismatch, match=r"another fixed .*hydra\.sweeper\.study=<name>") as err:
        open_study(tmp_path, "s", 0, {**setup, "fixed": ["seed=1"]})
    assert "\n" not in str(err.value)

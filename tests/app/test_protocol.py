"""The reproduction protocol (conf/protocol/, docs/PROTOCOL.md): schedule, short batches, records, adapters."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

import grft
from grft_app.data import build_datasets
from grft_app.lit.schedule import epoch_scheduler
from grft_app.models import build_model
from grft_app.paths import ROOT
from grft_app.run.settings import ConfigError, register_resolvers, train_settings
from helpers.app_runs import make_cfg, run
from helpers.miniature import write_fgvc

register_resolvers()


# --- the reference schedule is timm's, configured as the reference code configures it -----------------
def reference_code_lrs(lr: float, epochs: int, warmup_epochs: int, cooldown_epochs: int = 10) -> list[float]:
    """The LR of every epoch as the reference training script gets it: its argument defaults and the
    FGVC/VTAB scripts' values, handed to ``timm.scheduler.create_scheduler``, stepped with
    ``step(epoch + 1)`` after each epoch, for the epoch count ``create_scheduler`` returns."""
    from timm.scheduler import create_scheduler

    args = argparse.Namespace(
        sched="cosine",
        epochs=epochs,
        lr=lr,
        warmup_lr=1e-7,
        warmup_epochs=warmup_epochs,
        min_lr=1e-8,
        cooldown_epochs=cooldown_epochs,
        decay_epochs=100,
        decay_rate=0.1,
        patience_epochs=10,
        lr_noise=None,
        lr_noise_pct=0.67,
        lr_noise_std=1.0,
        lr_cycle_mul=1.0,
        lr_cycle_decay=0.5,
        lr_cycle_limit=1,
        lr_k_decay=1.0,
        seed=42,
    )
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler, num_epochs = create_scheduler(args, optimizer)
    lrs = []
    for epoch in range(num_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch + 1)
    return lrs


@pytest.mark.parametrize("experiment", ["fgvc/cub", "vtab/svhn", "fgvc/stanford_dogs"])
def test_reference_schedule_per_epoch_is_the_reference_codes(tmp_path, experiment):
    cfg = make_cfg(tmp_path / "runs", f"experiment={experiment}", "~debug")
    settings = train_settings(cfg, ("acc",))
    expected = reference_code_lrs(float(cfg.lr), 100, 10)
    assert len(expected) == 110 and int(cfg.trainer.max_epochs) == 110  # 100 + 10 cool-down epochs
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=float(cfg.lr))
    ours = epoch_scheduler(optimizer, settings.epochs, settings.warmup_epochs, settings.protocol)
    lrs = []
    for epoch in range(int(cfg.trainer.max_epochs)):
        ours.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    # The shape, by hand: warm-up from 1e-7 inside the 100 epochs, cosine over t/100, then 1e-8.
    lr = float(cfg.lr)
    assert lrs[0] == pytest.approx(1e-7) and lrs[5] == pytest.approx(1e-7 + 5 * (lr - 1e-7) / 10)
    assert lrs[10] == pytest.approx(1e-8 + 0.5 * (lr - 1e-8) * (1 + math.cos(math.pi * 10 / 100)))
    assert lrs[100:] == pytest.approx([1e-8] * 10)


class LearningRates(L.Callback):
    def __init__(self):
        self.by_epoch: dict[int, set] = {}
        self.batch_sizes: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.by_epoch.setdefault(trainer.current_epoch, set()).add(trainer.optimizers[0].param_groups[0]["lr"])
        labels = batch[1] if isinstance(batch, (list, tuple)) else batch["labels"]
        self.batch_sizes.append(len(labels))


@pytest.mark.trains
def test_a_reference_run_trains_with_that_schedule_and_records_best_final_and_curve(tmp_path):
    seen = LearningRates()
    record, _ = run(
        tmp_path / "runs",
        "protocol=reference",
        "epochs=4",
        "warmup_epochs=2",
        "protocol.cooldown_epochs=2",
        "lr=1e-2",
        callbacks=[seen],
    )
    expected = reference_code_lrs(1e-2, 4, 2, cooldown_epochs=2)
    assert len(expected) == 6 and sorted(seen.by_epoch) == list(range(6))
    for epoch, lr in enumerate(expected):
        (used,) = seen.by_epoch[epoch]  # one LR for the whole epoch
        assert used == pytest.approx(lr, rel=1e-12), epoch
    evaluation, metrics = record.evaluation, record.metrics
    curve = evaluation.curve
    assert [p["epoch"] for p in curve] == list(range(6)) and evaluation.final_epoch == 5
    accs = [p["test_acc"] for p in curve]
    assert metrics["test_acc_best"] == max(accs) and metrics["test_acc_best_epoch"] == accs.index(max(accs))
    assert curve[-1]["test_acc"] == metrics["test_acc"]  # the final test is the last epoch's point
    assert evaluation.reported.key == "test_acc_best" and "best epoch" in evaluation.reported.description


@pytest.mark.trains
def test_simple_protocol_reports_the_final_test_and_evaluates_once(tmp_path):
    record, _ = run(tmp_path / "runs", "epochs=2")
    evaluation = record.evaluation
    assert evaluation.protocol == "simple" and evaluation.reported.key == "test_acc"
    assert [p["epoch"] for p in evaluation.curve] == [1]  # only the final test
    assert record.metrics["test_acc_best"] == record.metrics["test_acc"]


# --- short last batches ---------------------------------------------------------------------------------
FGVC_CLASSES = [817, 295, 1000, 3, 52]  # 5 classes x (2 train + 1 val) = 15 = 3 x 4 + 3: an odd remainder


def nabirds_miniature(tmp_path: Path) -> list[str]:
    write_fgvc(tmp_path / "data", "nabirds", "images", FGVC_CLASSES, per_split=(2, 1, 1))
    return [
        "experiment=fgvc/nabirds",
        f"data_dir={tmp_path / 'data'}",
        "dataset.num_classes=5",
        "trainer.limit_train_batches=1.0",
        "epochs=2",
    ]


@pytest.mark.trains
def test_fgvc_trainval_with_an_odd_remainder_trains_full_epochs_with_mixup_and_cutmix(tmp_path):
    seen = LearningRates()
    record, _ = run(tmp_path / "runs", *nabirds_miniature(tmp_path), callbacks=[seen])
    cfg = record.config
    assert (cfg["augment"]["mixup"], cfg["augment"]["cutmix"], cfg["batch_size"]) == (0.8, 1.0, 4)
    assert seen.batch_sizes == [4] * (2 * (15 // 4))  # every epoch: 3 full batches, the 3 left over dropped
    assert record.done and set(record.adapter_files) == {"raw", "ema"}


@pytest.mark.process
def test_fgvc_odd_remainder_under_two_rank_ddp(tmp_path):
    overrides = nabirds_miniature(tmp_path)
    env = {**os.environ, "GRFT_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "run.py", "debug=smoke", "baselines=null", "trainer=ddp_cpu", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = list((tmp_path / "runs").rglob("record.json"))
    assert json.loads(path.read_text())["done"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["augment.mixup=0.8", "batch_size=5"], "batch_size must be even"),
        (["augment.cutmix=1.0", "protocol.drop_last=false"], "need protocol.drop_last=true"),
        (["protocol.report_model=ema"], "needs augment.ema"),
        (["protocol.report=median"], "protocol.report must be one of best, final"),
    ],
)
def test_protocol_errors_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train_settings(make_cfg(tmp_path / "runs", *overrides), ("acc",))


@pytest.mark.trains
def test_a_training_split_smaller_than_a_batch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size=512"):
        run(tmp_path / "runs", "batch_size=512")


# --- the adapter of an EMA run ----------------------------------------------------------------------------
def accuracy(model: torch.nn.Module, dataset) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=64)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images).argmax(-1) == labels).sum())
            total += len(labels)
    return correct / total


@pytest.mark.trains
def test_loading_each_adapter_of_an_ema_run_gives_its_recorded_accuracy(tmp_path):
    record, run_dir = run(tmp_path / "runs", "augment.ema=0.6", "epochs=3", "lr=3e-2", "trainer.limit_test_batches=1.0")
    files = record.adapter_files
    assert files == {"raw": "adapter.safetensors", "ema": "adapter_ema.safetensors"}
    cfg = make_cfg(tmp_path / "runs", "augment.ema=0.6", "epochs=3", "lr=3e-2", "trainer.limit_test_batches=1.0")
    measured = {}
    for which, name in files.items():
        L.seed_everything(int(cfg.seed), verbose=False)  # the run's frozen (tiny, random) base
        bundle = build_model(cfg.model, int(cfg.dataset.num_classes), pretrained=False, tiny=True)
        model = grft.load_adapter(bundle.model, run_dir / name, arch=bundle.arch)
        measured[which] = accuracy(model, build_datasets(cfg.dataset, cfg.data_dir, bundle.inputs).test)
    assert measured["raw"] == pytest.approx(record.metrics["test_acc"], abs=1e-6)
    assert measured["ema"] == pytest.approx(record.metrics["test_ema_acc"], abs=1e-6)
    # The two files hold different weights (the average lags the live ones).
    a, b = load_file(run_dir / files["raw"]), load_file(run_dir / files["ema"])
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("grft_delta"))

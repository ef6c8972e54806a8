"""The LightningModule every method trains under: same loss, schedule, metrics and checkpoints.

Order of events (why it is this way): Lightning builds the optimizer and the DDP wrapper before
``on_fit_start``. So ``configure_model`` lets the method allocate what will train (GRFT: zero
slices with placeholder indices), and ``on_fit_start`` runs the probe that fills them in, unless a
restored checkpoint already carries a selection.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grft.probe import call_model, split_batch

from ..methods import Method
from ..models import ModelBundle
from .data import probe_extent
from .ema import TrainableEMA
from .evaluation import EvalView, test_views, val_views
from .metrics import TaskMetrics
from .schedule import Protocol, epoch_scheduler, warmup_cosine


class Diverged(ValueError):
    """The training loss became NaN or inf; the message says where, and the fix (a lower ``lr``)."""


@dataclass
class TrainSettings:
    """Optimisation and protocol settings (paper §4.1 and the reference protocol)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam (paper, vision) | adamw (paper, GLUE)
    epochs: int = 100  # the cosine's length (the protocol may add cool-down epochs after it)
    warmup_epochs: float = 10.0
    protocol: Protocol = field(default_factory=Protocol)
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    ema_decay: float | None = None
    seed: int = 0
    metrics: tuple[str, ...] = ("acc",)


class FineTuneModule(L.LightningModule):
    def __init__(
        self,
        bundle: ModelBundle,
        method: Method,
        num_classes: int,
        settings: TrainSettings,
        probe_loader: Callable[[], Any] | None = None,
        progress: Callable | None = None,
        has_val: bool = False,
    ):
        super().__init__()
        self.bundle = bundle
        self.method = method
        self.num_classes = num_classes
        self.settings = settings
        self.probe_loader = probe_loader
        self.progress = progress
        self.model: nn.Module | None = None
        self.probe_seconds: float | None = None
        self.final_epoch: int | None = None  # the last trained epoch (from 0), set before the final test
        self.probe_facts: dict | None = None  # the method's probe facts and the probe's extent (kept in checkpoints)
        self.ema: TrainableEMA | None = None
        ema = bool(settings.ema_decay)
        self.val_views: list[EvalView] = val_views(has_val, settings.protocol.test_every, ema)
        self.test_views: list[EvalView] = test_views(ema)
        names = dict.fromkeys(v.name for v in (*self.val_views, *self.test_views))
        self.metrics = nn.ModuleDict({name: TaskMetrics(num_classes, settings.metrics) for name in names})
        self.curve: list[dict] = []  # one point per epoch the test split was evaluated in training
        self.eval_seconds = 0.0  # time spent evaluating during training (the cost of protocol.test_every)
        self._eval_started: float | None = None
        self.epoch_schedule = None
        self.mixup = self._make_mixup()
        # Checkpoints keep only what training changes; frozen weights are rebuilt from the config.
        self.strict_loading = False

    # --- building -------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is None:
            self.model = self.method.prepare(self.bundle)
            # Train with the dropout and drop-path the model's config asks for, whatever mode its
            # loader returned it in (transformers' from_pretrained returns eval mode; Lightning keeps
            # a module's mode). Evaluation switches to eval mode and back on its own.
            self.model.train()
            if self.settings.ema_decay:
                self.ema = TrainableEMA(self.model, self.settings.ema_decay)

    def _make_mixup(self):
        s = self.settings
        if not (s.mixup or s.cutmix):
            return None
        from timm.data import Mixup

        return Mixup(
            mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, label_smoothing=s.label_smoothing, num_classes=self.num_classes
        )

    # --- probe ----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._probe_if_needed()
        if self.trainer.is_global_zero:
            report = self.method.param_report(self.model)
            facts = {"params/trainable": report.trainable, "params/trainable_pct": report.percent}
            if self.probe_seconds is not None:
                facts["probe_s"] = self.probe_seconds
            for logger in self.loggers:
                logger.log_metrics(facts, step=self.global_step)

    def _probe_if_needed(self) -> None:
        if not self.method.needs_probe(self.model):
            return
        if self.probe_loader is None:
            raise ValueError(f"method {self.method.name} needs a probe loader")
        start = time.perf_counter()
        was_training = self.model.training
        self.model.train()
        loader = self.probe_loader()
        # The method's facts, and how many batches and images the probe walked (all ranks together).
        self.probe_facts = {**self.method.probe(self.model, loader, self.progress), **probe_extent(loader)}
        self.model.train(was_training)
        self.probe_seconds = time.perf_counter() - start

    # --- steps ----------------------------------------------------------------------------------
    def forward(self, inputs: Any) -> torch.Tensor:
        out = call_model(self.model, inputs)
        return out.logits if hasattr(out, "logits") else out

    def on_train_epoch_start(self) -> None:
        # The epoch's randomness (shuffle, augmentation, dropout, worker seeds) depends on
        # (seed, epoch) alone, so a run resumed at an epoch boundary continues exactly.
        seed = (self.settings.seed * 100_003 + self.current_epoch) % (2**31)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.epoch_schedule is not None:
            # The epoch's LR from the epoch alone: the same on a resumed run.
            self.epoch_schedule.step(self.current_epoch)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, labels = split_batch(batch)
        if self.mixup is not None and torch.is_tensor(inputs):
            inputs, soft = self.mixup(inputs, labels)
            logits = self(inputs)
            task_loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self(inputs)
            task_loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.settings.label_smoothing)
        extra = self.method.extra_loss(self.model)
        loss = task_loss if extra is None else task_loss + extra
        if not torch.isfinite(loss):
            value = "NaN" if torch.isnan(loss) else "inf"
            raise Diverged(
                f"training diverged: the loss became {value} at step {self.global_step} (epoch {self.current_epoch}, "
                f"both counted from 0) with lr={self.settings.lr:g}; launch it with a lower lr (or check the data)"
            )
        self.log("train/loss", task_loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        if extra is not None:
            self.log("train/penalty", extra.detach(), on_step=False, on_epoch=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.method.before_optimizer_step(self.model)
        self.method.decay(self.model, optimizer, self.settings.weight_decay, self.settings.optimizer == "adamw")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    def _evaluate(self, batch: Any, view: EvalView) -> None:
        self._use_ema(view.ema)
        inputs, labels = split_batch(batch)
        logits = self(inputs)
        self.log(
            f"{view.name}/loss",
            F.cross_entropy(logits.float(), labels),
            on_epoch=True,
            sync_dist=True,
            add_dataloader_idx=False,
        )
        self.metrics[view.name].update(logits.float(), labels)

    def _log_metrics(self, views: Sequence[EvalView]) -> dict[str, float]:
        values = {}
        for view in views:
            for name, value in self.metrics[view.name].compute().items():
                self.log(
                    f"{view.name}/{name}",
                    value,
                    prog_bar=view.name == "test" and name == "acc",
                    sync_dist=True,
                    add_dataloader_idx=False,
                )
                values[f"{view.name}_{name}"] = float(value)
            self.metrics[view.name].reset()
        return values

    def on_validation_epoch_start(self):
        self._eval_started = time.perf_counter()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, self.val_views[dataloader_idx])

    def on_validation_epoch_end(self):
        values = self._log_metrics(self.val_views)
        self._use_ema(False)
        if self._eval_started is not None and not self.trainer.sanity_checking:
            self.eval_seconds += time.perf_counter() - self._eval_started
        # The curve holds every split evaluated in training: test (protocol.test_every) and val (its best
        # epoch is a study's objective under the reference protocol, grft_app.tune).
        evaluated = {k: v for k, v in values.items() if k.startswith(("test", "val"))}
        if evaluated and not self.trainer.sanity_checking:
            self.curve = [p for p in self.curve if p["epoch"] != self.current_epoch] + [
                {"epoch": int(self.current_epoch), **evaluated}
            ]

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, self.test_views[dataloader_idx])

    def on_test_epoch_end(self):
        self._log_metrics(self.test_views)
        if self.final_epoch is not None:  # the logger's test row: the epoch tested, not one past it
            self.log("epoch", float(self.final_epoch))
        self._use_ema(False)

    def _use_ema(self, on: bool) -> None:
        """Evaluate a view with the EMA weights, train with the live ones (swapped in place, only on change)."""
        if self.ema is not None and self.ema.swapped != on:
            self.ema.swap(self.model)

    # --- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        s = self.settings
        self.method.check_training(s)
        optimizer = make_optimizer(self.method, self.model, s)
        if s.protocol.schedule == "epoch":
            # Set by on_train_epoch_start; Lightning steps no scheduler of its own.
            self.epoch_schedule = epoch_scheduler(optimizer, s.epochs, s.warmup_epochs, s.protocol)
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = int(round(total * min(s.warmup_epochs, epochs) / epochs))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, s.protocol.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.method.checkpoint_keys(self.model)
        if keep is not None:
            state = checkpoint["state_dict"]
            prefixed = {f"model.{k}" for k in keep}
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k in prefixed or not k.startswith("model.")}
        if self.ema is not None:
            checkpoint["grft_ema"] = self.ema.state_dict()
        checkpoint["grft_probe_s"] = self.probe_seconds
        checkpoint["grft_probe_facts"] = self.probe_facts
        checkpoint["grft_curve"] = self.curve
        checkpoint["grft_eval_s"] = self.eval_seconds

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None and "grft_ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["grft_ema"])
        self.probe_seconds = checkpoint.get("grft_probe_s")
        self.probe_facts = checkpoint.get("grft_probe_facts")
        self.curve = list(checkpoint.get("grft_curve", []))
        self.eval_seconds = float(checkpoint.get("grft_eval_s", 0.0))


def make_optimizer(method: Method, model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """Adam or AdamW over the method's parameter groups (the method may take over the decay of some)."""
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if s.optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {', '.join(optimizers)}; got {s.optimizer!r}")
    groups = [g for g in method.optimizer_groups(model, s.weight_decay) if g["params"]]
    if not groups:
        raise ValueError(f"method {method.name} left no parameter trainable")
    return optimizers[s.optimizer](groups, lr=s.lr, weight_decay=s.weight_decay)


__all__ = ["FineTuneModule", "TrainSettings", "make_optimizer", "warmup_cosine"]

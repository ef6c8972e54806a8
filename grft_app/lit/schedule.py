"""The learning-rate schedules of the two protocols (conf/protocol/, docs/PROTOCOL.md).

``reference``: timm's ``CosineLRScheduler`` configured as the reference code configures it (its
training script hands these values to ``timm.scheduler.create_scheduler``): the cosine runs over
``epochs`` with the linear warm-up from ``warmup_lr`` counted inside it, the LR is set once per
epoch, and after ``epochs`` it stays at ``min_lr`` for ``cooldown_epochs`` more. timm, not a
hand-written formula, so the values are the reference's by construction.

``simple``: a per-optimizer-step warm-up and cosine (``warmup_cosine``), the same whatever the
epoch count; the embedded default and users' own tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Protocol:
    """The ``protocol`` group. Defaults: ``simple``."""

    name: str = "simple"
    schedule: str = "step"  # epoch (timm, reference) | step
    warmup_lr: float = 0.0  # epoch schedule: LR at epoch 0
    min_lr: float = 0.0  # epoch schedule: cosine floor and cool-down LR
    min_lr_ratio: float = 0.0  # step schedule: floor as a fraction of lr
    cooldown_epochs: int = 0  # epoch schedule: epochs at min_lr after `epochs`
    test_every: int = 0  # test split every N epochs while training; 0: only after
    report: str = "final"  # best | final: the statistic the record reports
    report_model: str = "raw"  # raw | ema
    drop_last: bool = True  # drop the short last training batch

    def total_epochs(self, epochs: int) -> int:
        return int(epochs) + (self.cooldown_epochs if self.schedule == "epoch" else 0)


def epoch_scheduler(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: float, protocol: Protocol):
    """timm's cosine schedule, per epoch: ``scheduler.step(epoch)`` sets the LR of ``epoch`` (0-based)."""
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(
        optimizer,
        t_initial=int(epochs),
        lr_min=protocol.min_lr,
        warmup_t=int(warmup_epochs),
        warmup_lr_init=protocol.warmup_lr,
        cycle_limit=1,
        t_in_epochs=True,
    )


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR factor per optimizer step: linear warm-up from ~0 to 1, then cosine decay to ``min_ratio`` at the end."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor

"""The training settings a module is built with: plain values, no Lightning.

Kept apart from ``module.py`` so the run management (``grft_app.run.settings``) and the paper
renderer read them without loading Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .schedule import Protocol


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

"""The contract between a fine-tuning method and the training loop.

A method decides which parameters train (``prepare``), may look at the data before training
(``probe``), may add to the loss (``extra_loss``) or edit gradients before the optimizer step, and
saves what it trained (``save_adapter``). The LightningModule calls these hooks and nothing else,
so every method runs under the same data, schedule and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from ..config import GRFTConfig
from ..models import ModelBundle
from ..report import ParamReport

Progress = Callable[[Iterable, str, Optional[int]], Iterable]


@dataclass(frozen=True)
class MethodSettings:
    """The method's Hydra group (``options``: everything in it but ``name``) and the GRFT keys."""

    name: str
    grft: GRFTConfig = field(default_factory=GRFTConfig)
    options: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base: nothing trains but what ``prepare`` unfreezes; no probe, no extra loss."""

    name = "base"

    def __init__(self, settings: MethodSettings):
        self.settings = settings
        self.base_parameter_count: Optional[int] = None

    # --- building -----------------------------------------------------------------------------
    def prepare(self, bundle: ModelBundle) -> nn.Module:
        """Make ``bundle.model`` trainable as the method defines; return the module to train.

        Runs in ``configure_model``: before the optimizer exists, before any data is seen.
        """
        self.base_parameter_count = sum(p.numel() for p in bundle.model.parameters())
        self.arch = bundle.arch
        return self.configure(bundle)

    def configure(self, bundle: ModelBundle) -> nn.Module:
        raise NotImplementedError

    # --- before training ------------------------------------------------------------------------
    def needs_probe(self, model: nn.Module) -> bool:
        return False

    def probe(self, model: nn.Module, batches: Iterable, progress: Optional[Progress] = None) -> dict:
        """Look at the training data before training (GRFT/GPS selection); returns facts to record."""
        return {}

    # --- training -------------------------------------------------------------------------------
    def extra_loss(self, model: nn.Module) -> Optional[torch.Tensor]:
        return None

    def before_optimizer_step(self, model: nn.Module) -> None:
        """Edit gradients after backward, before the step (GPS applies its masks here)."""

    # --- reporting and saving -------------------------------------------------------------------
    def param_report(self, model: nn.Module) -> ParamReport:
        """Parameters the method updates / parameters of the original model (with its new head)."""
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return ParamReport(trainable, self.base_parameter_count or sum(p.numel() for p in model.parameters()))

    def save_adapter(self, model: nn.Module, path: Path) -> Optional[Path]:
        """Write what the method trained (small file); ``None`` if the method has no adapter format."""
        from safetensors.torch import save_file

        tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(path))
        return path

    def checkpoint_keys(self, model: nn.Module) -> Optional[set[str]]:
        """State-dict keys a checkpoint must keep; ``None`` keeps everything.

        Frozen pre-trained weights are rebuilt from the model config on resume, so a checkpoint
        needs only what training changes.
        """
        keys = {n for n, p in model.named_parameters() if p.requires_grad}
        return keys


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)

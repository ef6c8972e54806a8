"""GRFT as a method of the app: allocate slices up front, probe in ``on_fit_start``, penalise."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from ..adapter import running_statistics, save_adapter
from ..penalty import penalty
from ..probe import select
from ..tuner import apply_selection, attach, has_selection
from ..models import ModelBundle
from .base import Method, NoOptions, Progress


class GRFTMethod(Method):
    name = "grft"
    grft_keys = ("k", "selection", "norm", "lambda", "regular_layers", "subsets")
    several_head_modules = True

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        # Placeholders now (zeros, shape from k); the probe fills them in on_fit_start.
        return attach(bundle.model, None, self.settings.grft, bundle.arch)

    def needs_probe(self, model: nn.Module) -> bool:
        return not has_selection(model)

    def probe(self, model: nn.Module, batches: Iterable, progress: Optional[Progress] = None) -> dict:
        selection = select(model, batches, self.settings.grft, arch=self.arch, progress=progress)
        apply_selection(model, selection)
        return {"selection": selection}

    def extra_loss(self, model: nn.Module) -> Optional[torch.Tensor]:
        return penalty(model)

    def save_adapter(self, model: nn.Module, path: Path) -> Optional[Path]:
        return save_adapter(model, path)

    def checkpoint_keys(self, model: nn.Module) -> set[str]:
        keys = super().checkpoint_keys(model)
        keys |= {n for n, _ in model.named_buffers() if n.rsplit(".", 1)[-1].startswith("grft_")}
        return keys | set(running_statistics(model))

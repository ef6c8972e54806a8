"""Full fine-tuning: every parameter trains, and a checkpoint keeps the whole model."""

from __future__ import annotations

from torch import nn

from ..models import ModelBundle
from .base import Method, NoOptions, unfreeze


class FullMethod(Method):
    """Full fine-tuning: every parameter trains."""

    name = "full"
    several_head_modules = True

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        unfreeze(bundle.model)
        return bundle.model

    def checkpoint_keys(self, model: nn.Module):
        return None

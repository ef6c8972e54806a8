"""The two reference points every table needs: all parameters (full) and the head alone (linear)."""

from __future__ import annotations

from torch import nn

from ..models import ModelBundle
from .base import Method, freeze_all, unfreeze


class FullMethod(Method):
    """Full fine-tuning: every parameter trains."""

    name = "full"

    def configure(self, bundle: ModelBundle) -> nn.Module:
        unfreeze(bundle.model)
        return bundle.model

    def checkpoint_keys(self, model: nn.Module):
        return None


class LinearMethod(Method):
    """Linear probing: only the new head trains."""

    name = "linear"

    def configure(self, bundle: ModelBundle) -> nn.Module:
        freeze_all(bundle.model)
        unfreeze(bundle.model.get_submodule(bundle.arch.head))
        return bundle.model

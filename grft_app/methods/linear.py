"""Linear probing: only the new classification head trains (every module of it, where it has several)."""

from __future__ import annotations

from torch import nn

from ..models import ModelBundle
from .base import Method, NoOptions, freeze_all, unfreeze


class LinearMethod(Method):
    """Linear probing: only the new head trains."""

    name = "linear"
    several_head_modules = True

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        freeze_all(bundle.model)
        for head in bundle.arch.heads:
            unfreeze(bundle.model.get_submodule(head))
        return bundle.model

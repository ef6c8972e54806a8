"""LoRA as a method of the app: peft's LoRA layers on the attention projections, plus the head."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import nn

from ..baselines.lora import LoRAConfig, add_lora, save_lora
from ..models import ModelBundle
from .base import Method, freeze_all, unfreeze


class LoRAMethod(Method):
    """Trainable: the LoRA matrices A and B of every target layer, and the head (nothing else)."""

    name = "lora"

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.config = self.options_as(LoRAConfig)
        model, head = bundle.model, bundle.arch.head
        freeze_all(model)
        self.targets = add_lora(model, self.config, head)
        unfreeze(model.get_submodule(head))
        return model

    def save_adapter(self, model: nn.Module, path: Path) -> Optional[Path]:
        return save_lora(model, path, self.config, self.arch.head)

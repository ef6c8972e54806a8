"""Methods that add small modules to a frozen timm ViT: adapters, visual prompts, SSF.

What trains is exactly what the method adds, plus the new head; every pre-trained parameter stays
frozen. The modules come from ``grft_app.baselines``; they are ViT-only and say so for other models.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..baselines.adapter import AdapterConfig, add_adapters
from ..baselines.ssf import add_ssf
from ..baselines.vpt import add_prompts
from ..baselines.vit import require_vit
from ..models import ModelBundle
from .base import Method, NoOptions, freeze_all, unfreeze


def _train_added(model: nn.Module, added: list[nn.Module], head: str) -> nn.Module:
    for module in added:
        unfreeze(module)
    unfreeze(model.get_submodule(head))
    return model


class AdapterMethod(Method):
    """Bottleneck adapters (``method.bottleneck``, ``method.placement``) + head."""

    name = "adapter"

    def configure(self, bundle: ModelBundle) -> nn.Module:
        config = self.options_as(AdapterConfig)
        model = require_vit(bundle.model, self.name)
        freeze_all(model)
        added = add_adapters(model, config)
        return _train_added(model, list(added.values()), bundle.arch.head)


@dataclass(frozen=True)
class PromptConfig:
    """length: prompt tokens (per block for vpt_deep)."""

    length: int = 10


class VPTMethod(Method):
    """Prompt tokens (``method.length``; shallow: once before the blocks, deep: per block) + head."""

    name = "vpt"
    deep = False

    def configure(self, bundle: ModelBundle) -> nn.Module:
        config = self.options_as(PromptConfig)
        model = require_vit(bundle.model, self.name)
        freeze_all(model)
        prompts = add_prompts(model, config.length, self.deep)
        return _train_added(model, [prompts], bundle.arch.head)


class VPTShallowMethod(VPTMethod):
    name = "vpt_shallow"
    deep = False


class VPTDeepMethod(VPTMethod):
    name = "vpt_deep"
    deep = True


class SSFMethod(Method):
    """A scale and a shift per feature after every linear layer and LayerNorm + head."""

    name = "ssf"

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        model = require_vit(bundle.model, self.name)
        freeze_all(model)
        added = add_ssf(model, bundle.arch.head)
        return _train_added(model, list(added.values()), bundle.arch.head)

"""Bottleneck adapters (Houlsby et al. 2019) on a frozen timm ViT: the method and its modules.

An adapter maps a sublayer's output ``h [batch, tokens, dim]`` to ``h + up(act(down(h)))`` with
``down: [bottleneck, dim]`` and ``up: [dim, bottleneck]``, before the block's residual add. ``up``
starts at zero, so until the first step the model computes exactly what the pre-trained one does.

Placement: ``houlsby`` puts two adapters in every block, on the attention output and on the MLP
output (Houlsby et al. 2019); ``pfeiffer`` puts one, on the MLP output (the "Pfeiffer" style the
VPT code uses for its adapter baseline).

Each adapter is a child of the sublayer it follows (``blocks.3.mlp.adapter``) and runs from a
forward hook, so every pre-trained parameter keeps its name and timm's forward stays untouched.
What trains: the adapters and the new head; every pre-trained parameter stays frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models import ModelBundle
from .base import CannotMerge, Method, freeze_all, train_added
from .vit_only import parameter_like, require_vit

PLACEMENTS = {"houlsby": ("attn", "mlp"), "pfeiffer": ("mlp",)}


@dataclass(frozen=True)
class AdapterConfig:
    """bottleneck: hidden width of each adapter; placement: ``houlsby`` or ``pfeiffer``."""

    bottleneck: int = 8
    placement: str = "houlsby"

    def __post_init__(self) -> None:
        if isinstance(self.bottleneck, bool) or not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            raise ValueError(f"adapter bottleneck must be a whole number >= 1, got {self.bottleneck!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"adapter placement must be one of {', '.join(PLACEMENTS)}; got {self.placement!r}")


class Bottleneck(nn.Module):
    """``h + up(gelu(down(h)))``; zero ``up`` at the start makes it the identity."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


def _run_adapter(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return module.adapter(output)


class AdapterMethod(Method):
    """Bottleneck adapters (``method.bottleneck``, ``method.placement``) + head."""

    name = "adapter"
    timm_vit_only = True

    def configure(self, bundle: ModelBundle) -> nn.Module:
        config = self.options_as(AdapterConfig)
        model = require_vit(bundle.model, self.name)
        freeze_all(model)
        added = add_adapters(model, config)
        return train_added(model, added.values(), bundle.arch.head)

    def merge(self, model: nn.Module) -> nn.Module:
        raise CannotMerge(
            "method adapter adds bottleneck layers (a GELU between two linear maps) after its sublayers; no weight "
            "of the base model can hold them, so the tuned model is not a plain model of its library"
        )


def add_adapters(model: nn.Module, config: AdapterConfig) -> dict[str, Bottleneck]:
    """Insert adapters into every block of a timm ViT in place; returns them by module name."""
    require_vit(model, "adapter")
    like = parameter_like(model)
    added = {}
    for i, block in enumerate(model.blocks):
        for sub in PLACEMENTS[config.placement]:
            target = getattr(block, sub, None)
            if target is None:
                raise ValueError(f"adapter: block {i} ({type(block).__name__}) has no {sub!r} sublayer")
            if hasattr(target, "adapter"):
                raise ValueError(f"adapter: blocks.{i}.{sub} already has an adapter; start from a fresh model")
            target.adapter = Bottleneck(model.embed_dim, config.bottleneck).to(**like)
            target.register_forward_hook(_run_adapter)
            added[f"blocks.{i}.{sub}.adapter"] = target.adapter
    return added

"""Visual prompt tuning (Jia et al. 2022) on a frozen timm ViT: ``vpt_shallow`` and ``vpt_deep``.

Learned tokens ``tokens: [layers, length, dim]`` join the sequence right after the prefix tokens
(class token, and register tokens if any), with no position embedding:

- shallow (``layers = 1``): inserted once, after the patch and position embedding, and carried
  through every block;
- deep (``layers = depth``): the same insertion before block 0, and before every later block the
  prompt positions are overwritten by that block's own tokens (the previous block's prompt outputs
  are discarded).

After the last block the prompt positions are removed, so the final norm, the pooling and the head
see the token layout of the pre-trained model. The hooks sit on ``norm_pre`` (runs once, right
before the blocks) and on the blocks themselves, so they fire however timm walks the blocks
(plain, gradient checkpointing, or one by one). What trains: the prompts and the new head.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..models import ModelBundle
from .base import CannotMerge, Method, freeze_all, train_added
from .vit_only import parameter_like, require_vit


@dataclass(frozen=True)
class PromptConfig:
    """length: prompt tokens (per block for vpt_deep)."""

    length: int = 10


class VPTMethod(Method):
    """Prompt tokens (``method.length``; shallow: once before the blocks, deep: per block) + head."""

    name = "vpt"
    timm_vit_only = True
    deep = False

    def configure(self, bundle: ModelBundle) -> nn.Module:
        config = self.options_as(PromptConfig)
        model = require_vit(bundle.model, self.name)
        freeze_all(model)
        prompts = add_prompts(model, config.length, self.deep)
        return train_added(model, [prompts], bundle.arch.head)

    def merge(self, model: nn.Module) -> nn.Module:
        raise CannotMerge(
            f"method {self.name} adds prompt tokens to the token sequence; no weight of the base model can hold "
            "them, so the tuned model is not a plain model of its library"
        )


class VPTShallowMethod(VPTMethod):
    name = "vpt_shallow"
    deep = False


class VPTDeepMethod(VPTMethod):
    name = "vpt_deep"
    deep = True


class PromptTokens(nn.Module):
    """The prompts and the three hooks that place them in the token sequence ``[batch, tokens, dim]``."""

    def __init__(self, layers: int, length: int, dim: int, prefix: int, init_bound: float):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(layers, length, dim).uniform_(-init_bound, init_bound))
        self.prefix = prefix
        self.length = length

    def _prompts(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.tokens[layer].to(x.dtype).expand(x.shape[0], -1, -1)

    def insert(self, module: nn.Module, args, x: torch.Tensor) -> torch.Tensor:
        """Forward hook on ``norm_pre``: ``[B, prefix + patches, D] -> [B, prefix + length + patches, D]``."""
        return torch.cat([x[:, : self.prefix], self._prompts(0, x), x[:, self.prefix :]], dim=1)

    def replace(self, layer: int, module: nn.Module, args: tuple) -> tuple:
        """Forward pre-hook on block ``layer`` (deep): overwrite the prompt positions with its own tokens."""
        x, rest = args[0], args[1:]
        end = self.prefix + self.length
        return (torch.cat([x[:, : self.prefix], self._prompts(layer, x), x[:, end:]], dim=1), *rest)

    def drop(self, module: nn.Module, args, x: torch.Tensor) -> torch.Tensor:
        """Forward hook on the last block: remove the prompt positions."""
        return torch.cat([x[:, : self.prefix], x[:, self.prefix + self.length :]], dim=1)


def add_prompts(model: nn.Module, length: int, deep: bool) -> PromptTokens:
    """Install ``length`` prompt tokens (per block if ``deep``) as ``model.vpt``; returns the module.

    Initialised uniform in ``±sqrt(6 / (patch fan-in + dim))``, the Xavier bound the VPT paper's
    code uses for prompts (fan-in of the patch embedding: ``channels * patch_h * patch_w``).
    """
    method = "vpt_deep" if deep else "vpt_shallow"
    require_vit(model, method)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{method}: length (prompt tokens) must be a whole number >= 1, got {length!r}")
    if hasattr(model, "vpt"):
        raise ValueError(f"{method}: the model already has prompts; start from a fresh model")
    depth = len(model.blocks)
    fan_in = model.patch_embed.proj.weight[0].numel()
    bound = math.sqrt(6.0 / (fan_in + model.embed_dim))
    prompts = PromptTokens(depth if deep else 1, length, model.embed_dim, model.num_prefix_tokens, bound)
    model.vpt = prompts.to(**parameter_like(model))
    model.norm_pre.register_forward_hook(prompts.insert)
    if deep:
        for layer in range(1, depth):
            model.blocks[layer].register_forward_pre_hook(functools.partial(prompts.replace, layer))
    model.blocks[depth - 1].register_forward_hook(prompts.drop)
    return prompts

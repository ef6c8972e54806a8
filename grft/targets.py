"""Which matrices of a model GRFT may slice, which train in full, and which the penalty covers.

The rules (they reproduce the paper's Table 8 trainable shares):
- eligible: every ``nn.Linear`` and ``nn.Conv2d`` (groups=1, zero padding) outside the head; for
  a timm ViT that is each block's qkv/proj/fc1/fc2 and the patch embedding, for a Llama each
  layer's q/k/v/o/gate/up/down projection;
- trainable in full: the head and the bias of every eligible layer;
- frozen: everything else (norms, position/cls tokens, token embeddings);
- regular set (Eq. 8): the last L blocks, the stem (patch embedding) and the head.

``Architecture`` names the head, the block list and the stem; ``detect_architecture`` finds them
for timm ViTs, Hugging Face decoder classifiers and any model with an obvious head and block list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

HEAD_NAMES = ("head", "score", "classifier", "fc", "lm_head")
BLOCK_LISTS = ("blocks", "model.layers", "layers", "encoder.layer", "transformer.h", "h")
STEM_NAMES = ("patch_embed", "embeddings.patch_embeddings", "conv1", "stem")

Pool = Callable[[torch.Tensor, object], torch.Tensor]


@dataclass(frozen=True)
class Architecture:
    """Where the head, the blocks and the stem live in a model (dotted module names).

    pool: turns the head's input into one feature vector per example; ``None`` means the head
    input already is ``[batch, features]`` (ViT pre-logits). Sequence classifiers whose head runs
    on every token pass ``pool_last_token``.
    """

    head: str
    blocks: str
    stem: tuple[str, ...] = ()
    pool: Optional[Pool] = field(default=None, compare=False)


def pool_last_token(hidden: torch.Tensor, inputs: object) -> torch.Tensor:
    """Pick each sequence's last attended token from ``[batch, tokens, features]``.

    That is the token Hugging Face's ``*ForSequenceClassification`` heads read their logits from.
    """
    if hidden.dim() != 3:
        return hidden
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if mask is None:
        return hidden[:, -1]
    # argmax of the running count finds the first position where it peaks: the last attended token.
    last = mask.long().cumsum(dim=1).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def detect_architecture(model: nn.Module) -> Architecture:
    """Find head, block list and stem by the names timm and Hugging Face use."""
    modules = dict(model.named_modules())
    head = next((n for n in HEAD_NAMES if isinstance(modules.get(n), nn.Linear)), None)
    if head is None:
        raise ValueError(
            "could not find the classification head (looked for an nn.Linear named "
            f"{', '.join(HEAD_NAMES)}); pass grft.Architecture(head=..., blocks=...)"
        )
    blocks = next(
        (n for n in BLOCK_LISTS if isinstance(modules.get(n), (nn.ModuleList, nn.Sequential))), None
    )
    if blocks is None:
        raise ValueError(
            "could not find the list of blocks (looked for "
            f"{', '.join(BLOCK_LISTS)}); pass grft.Architecture(head=..., blocks=...)"
        )
    stem = tuple(n for n in STEM_NAMES if n in modules)
    is_sequence_model = hasattr(getattr(model, "config", None), "vocab_size")
    return Architecture(head=head, blocks=blocks, stem=stem, pool=pool_last_token if is_sequence_model else None)


def is_eligible(module: nn.Module) -> bool:
    """Slice-trainable layer types: Linear, and Conv2d that is a plain matrix product."""
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
    return isinstance(module, nn.Linear)


def eligible_layers(model: nn.Module, arch: Architecture) -> dict[str, nn.Module]:
    """Every eligible layer outside the head, in module order."""
    head_prefix = arch.head + "."
    return {
        name: module
        for name, module in model.named_modules()
        if name and name != arch.head and not name.startswith(head_prefix) and is_eligible(module)
    }


def block_count(model: nn.Module, arch: Architecture) -> int:
    return len(model.get_submodule(arch.blocks))


def regular_prefixes(model: nn.Module, arch: Architecture, regular_layers) -> list[str]:
    """Module-name prefixes of the regular set R: last L blocks + stem + head (Eq. 8)."""
    depth = block_count(model, arch)
    if regular_layers == "all":
        chosen = range(depth)
    else:
        if regular_layers > depth:
            raise ValueError(f"regular_layers={regular_layers} exceeds the model's {depth} blocks; allowed: 0..{depth} or 'all'")
        chosen = range(depth - regular_layers, depth)
    return [f"{arch.blocks}.{i}" for i in chosen] + list(arch.stem) + [arch.head]


def in_prefixes(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)

"""Which matrices of a model GRFT may slice, which train in full, and which the penalty covers.

The rules (they reproduce the paper's Table 8 trainable shares):
- eligible: every layer that is one weight matrix: ``nn.Linear``, ``nn.Conv2d`` (groups=1, zero
  padding, seen as ``[out, in*kh*kw]``) and transformers' ``Conv1D`` (GPT-2, stored ``[in, out]``),
  outside the head; for a timm ViT that is each block's qkv/proj/fc1/fc2 and the patch embedding,
  for a Llama each layer's q/k/v/o/gate/up/down projection. ``GRFTConfig.target_modules`` /
  ``exclude_modules`` narrow the set (peft's rules);
- trainable in full: the head and the bias of every eligible layer;
- frozen: everything else (norms, position/cls tokens, embeddings, grouped/depthwise convolutions);
- regular set (Eq. 8): the last L blocks, the stem (patch embedding) and the head.

Where head, blocks and stem are is ``architecture.py``; which layer is one matrix, ``matrices.py``.
"""

from __future__ import annotations

import re

from torch import nn

from .architecture import Architecture, block_names, in_prefixes
from .matrices import ineligible_reason, is_eligible


# --- which names a config targets ---------------------------------------------------------------
def matches(name: str, patterns) -> bool:
    """peft's rule: a string is a regex the whole name must match; a list holds names or suffixes."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def in_head(name: str, arch: Architecture) -> bool:
    return in_prefixes(name, list(arch.heads))


def eligible_layers(model: nn.Module, arch: Architecture, config=None) -> dict[str, nn.Module]:
    """Every eligible layer outside the head, in module order, narrowed by the config's targets.

    ``config.target_modules`` naming a layer GRFT cannot slice, or matching none, is an error.
    """
    targets = getattr(config, "target_modules", None)
    exclude = getattr(config, "exclude_modules", None)
    layers = {}
    for name, module in model.named_modules():
        if not name or in_head(name, arch):
            continue
        if exclude is not None and matches(name, exclude):
            continue
        if targets is not None and not matches(name, targets):
            continue
        if is_eligible(module):
            layers[name] = module
        elif targets is not None and ineligible_reason(module) is not None:
            raise ValueError(f"target_modules matches {name}, which GRFT cannot slice: {ineligible_reason(module)}")
    if targets is not None and not layers:
        raise ValueError(f"target_modules={targets!r} matches no Linear/Conv2d/Conv1D layer outside the head")
    return layers


def nothing_to_slice(model: nn.Module, arch: Architecture, config=None) -> str:
    """The one-line refusal for a model without an eligible layer, naming why its layers are left out."""
    reasons: dict[str, int] = {}
    for reason in left_out_layers(model, arch, config).values():
        reasons[reason] = reasons.get(reason, 0) + 1
    common = sorted(reasons.items(), key=lambda item: -item[1])[:2]
    why = "; ".join(f"{n} x {reason}" for reason, n in common) or "it has no layer with a weight matrix"
    return (
        f"{type(model).__name__} has no eligible layer, nothing GRFT can slice outside its head (an nn.Linear, "
        f"nn.Conv2d with groups=1 or Conv1D): {why}"
    )


def left_out_layers(model: nn.Module, arch: Architecture, config=None) -> dict[str, str]:
    """Layers with a weight matrix that stay frozen, each with the reason (for ``param_report``)."""
    chosen = eligible_layers(model, arch, config)
    out = {}
    for name, module in model.named_modules():
        if not name or name in chosen or in_head(name, arch):
            continue
        reason = ineligible_reason(module)
        if reason is None and is_eligible(module):
            reason = "excluded by exclude_modules/target_modules"
        if reason is not None:
            out[name] = reason
    return out


def regular_prefixes(model: nn.Module, arch: Architecture, regular_layers) -> list[str]:
    """Module-name prefixes of the regular set R: last L blocks + stem + head (Eq. 8).

    ``"all"`` is the whole model (``""``): every block, and what lies between them (Swin's patch
    merging, ConvNeXt's downsampling, BERT's pooler).
    """
    if regular_layers == "all":
        return [""]
    blocks = block_names(model, arch)
    depth = len(blocks)
    if depth == 0 and regular_layers > 0:
        raise ValueError(
            f"regular_layers={regular_layers} counts blocks, and grft found no list of blocks in "
            f"{type(model).__name__}: use regular_layers='all' or 0, or pass grft.Architecture(head=..., blocks=...)"
        )
    if regular_layers > depth:
        raise ValueError(
            f"regular_layers={regular_layers} exceeds the model's {depth} blocks; allowed: 0..{depth} or 'all'"
        )
    return blocks[depth - regular_layers :] + list(arch.stem) + list(arch.heads)

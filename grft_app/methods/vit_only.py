"""What the ViT-only methods share (adapter, vpt, ssf): they know timm's ViT layout, and say so for other models."""

from __future__ import annotations

from torch import nn


def require_vit(model: nn.Module, method: str):
    """Return ``model`` if it is a timm ``VisionTransformer``; otherwise a clear error."""
    from timm.models.vision_transformer import VisionTransformer

    from . import generic_methods

    if not isinstance(model, VisionTransformer):
        raise ValueError(
            f"method {method} supports timm ViT models (got {type(model).__name__}); "
            f"for other models, Llama included, use {', '.join(generic_methods())}"
        )
    return model


def parameter_like(model: nn.Module) -> dict:
    """``device`` and ``dtype`` of the model's weights, for new modules that must match them."""
    p = next(model.parameters())
    return {"device": p.device, "dtype": p.dtype}

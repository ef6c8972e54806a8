"""timm Vision Transformers (the paper's ViT-B/16 in21k), from the hub or a local checkpoint.

``model.name`` is any timm ViT (default ``vit_base_patch16_224.augreg_in21k``, the checkpoint of
the reference code); ``model.kwargs`` passes architecture options on to ``timm.create_model``.
``model.checkpoint`` loads a local file instead of the hub: Google's ``.npz`` (timm reads it with
the ViT's own npz loader) or a ``.safetensors``/``.pth`` state dict in timm's naming. The
classification head is always new, sized for the task.
"""

from __future__ import annotations

from collections.abc import Mapping

from grft.targets import Architecture

from ..data.splits import InputSpec
from .timm_classifier import create as create_timm_classifier

VIT_ARCH = Architecture(head="head", blocks="blocks", stem=("patch_embed",))
TINY_IMG_SIZE = 32
# The same family in miniature, for debug=smoke and tests: random weights, no download.
# Depth 8: every regular_layers value of the paper configs and of the Fig. 4c sweep (1..8) fits.
TINY_KWARGS = dict(img_size=TINY_IMG_SIZE, patch_size=8, embed_dim=32, depth=8, num_heads=2, mlp_ratio=2.0)


def create(cfg: Mapping, num_classes: int, *, pretrained: bool):
    """A timm VisionTransformer (any other timm classifier goes through ``model=timm``)."""
    from timm.models.vision_transformer import VisionTransformer

    model = create_timm_classifier(cfg, num_classes, pretrained=pretrained)
    if not isinstance(model, VisionTransformer):
        raise ValueError(
            f"model.name={cfg['name']} is a {type(model).__name__}, not a timm VisionTransformer; "
            "the vit family needs one (blocks, patch_embed, head)"
        )
    return model


def timm_vit(cfg: Mapping) -> bool:
    """Whether the model is a timm VisionTransformer (what the ViT-only baselines need)."""
    return True


def input_kind(cfg: Mapping) -> str:
    return "image"


def build(cfg: Mapping, num_classes: int, *, pretrained: bool = True, tiny: bool = False):
    import timm

    from . import ModelBundle

    if tiny:
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes, **TINY_KWARGS)
    else:
        model = create(cfg, num_classes, pretrained=pretrained)
    inputs = InputSpec(
        kind="image",
        img_size=int(model.patch_embed.img_size[0]),
        mean=tuple(cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(cfg.get("std", (0.5, 0.5, 0.5))),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )
    return ModelBundle(model, VIT_ARCH, inputs)

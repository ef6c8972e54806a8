"""timm Vision Transformers (the paper's ViT-B/16 in21k), from the hub or a local checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..data.splits import InputSpec
from ..targets import Architecture

VIT_ARCH = Architecture(head="head", blocks="blocks", stem=("patch_embed",))
TINY_IMG_SIZE = 32


def build(cfg: Mapping, num_classes: int, *, pretrained: bool = True, tiny: bool = False):
    import timm

    from . import ModelBundle

    if tiny:
        model = timm.create_model(
            "vit_base_patch16_224", pretrained=False, img_size=TINY_IMG_SIZE, patch_size=8, embed_dim=32, depth=2,
            num_heads=2, mlp_ratio=2.0, num_classes=num_classes,
        )
        img_size = TINY_IMG_SIZE
    else:
        kwargs = {}
        checkpoint = cfg.get("checkpoint")
        if pretrained and checkpoint:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"model.checkpoint={checkpoint} does not exist; give the path of a .npz or .safetensors file of {cfg['name']}"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        try:
            model = timm.create_model(cfg["name"], pretrained=pretrained, num_classes=num_classes, **kwargs)
        except (OSError, RuntimeError) as err:
            raise RuntimeError(
                f"could not load pre-trained weights for {cfg['name']} ({err.__class__.__name__}: {err}). Without "
                "internet access, download the checkpoint elsewhere and pass model.checkpoint=/path/to/file "
                "(.npz or .safetensors)"
            ) from err
        img_size = int(cfg.get("img_size", 224))
    inputs = InputSpec(
        kind="image",
        img_size=img_size,
        mean=tuple(cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(cfg.get("std", (0.5, 0.5, 0.5))),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )
    return ModelBundle(model, VIT_ARCH, inputs)

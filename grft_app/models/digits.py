"""A small ViT for 8x8 digits, pre-trained on the source digits.

It stands in for "a model pre-trained on a large dataset" in the embedded default experiment:
the target task then fine-tunes it on digits it never saw. The default recipe's weights ship with
the code (``weights/``, pre-trained by ``source_checkpoint`` below): pre-training on another CPU
family's vector kernels gives other weights, and the toy's accuracies moved by up to 9 points with
them, while fine-tuning the same weights gave the same GRFT and linear accuracies on either kernel
set. Another recipe is pre-trained here once and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from grft.targets import Architecture

from ..data.splits import InputSpec

ARCH = Architecture(head="head", blocks="blocks", stem=("patch_embed",))
SHIPPED = Path(__file__).parent / "weights"  # pre-trained source weights that ship with the code, by recipe key
INPUTS = InputSpec(kind="image", img_size=8, in_chans=1, mean=(0.5,), std=(0.5,))


def make_vit(cfg: Mapping, num_classes: int):
    import timm

    return timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=8,
        patch_size=2,
        in_chans=1,
        embed_dim=int(cfg.get("embed_dim", 64)),
        depth=int(cfg.get("depth", 4)),
        num_heads=int(cfg.get("num_heads", 4)),
        mlp_ratio=2.0,
        num_classes=num_classes,
    )


def source_checkpoint(cfg: Mapping) -> Path:
    """The source-task weights: the shipped ones of this recipe (``source_weights: shipped``), else a copy
    trained here earlier and cached, else trained here now (seconds) and cached."""
    from grft.io import save_tensors

    from ..data.digits import source_dataset

    recipe = {
        k: cfg.get(k) for k in ("embed_dim", "depth", "num_heads", "source_classes", "source_epochs", "source_seed")
    }
    key = hashlib.sha1(json.dumps(recipe, sort_keys=True, default=list).encode()).hexdigest()[:10]
    name = f"digits_vit_source_{key}.safetensors"
    weights = str(cfg.get("source_weights", "shipped"))
    if weights not in ("shipped", "train"):
        raise ValueError(f"model.source_weights={weights!r} is unknown; use shipped or train")
    if weights == "shipped" and (SHIPPED / name).is_file():
        return SHIPPED / name
    path = Path(cfg.get("cache_dir", ".cache/grft")) / name
    if path.is_file():
        return path
    torch.manual_seed(int(cfg.get("source_seed", 0)))
    classes = list(cfg["source_classes"])
    model = make_vit(cfg, len(classes))
    data = torch.utils.data.DataLoader(source_dataset(cfg, INPUTS), batch_size=64, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    epochs = int(cfg.get("source_epochs", 30))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=epochs * len(data))
    print(f"pre-training the digits ViT on source classes {classes} ({epochs} epochs, cached at {path})")
    model.train()
    for _ in range(epochs):
        for x, y in data:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return save_tensors(path, model.state_dict())


def timm_vit(cfg: Mapping) -> bool:
    """Whether the model is a timm VisionTransformer (what the ViT-only baselines need)."""
    return True


def input_kind(cfg: Mapping) -> str:
    return "image"


def build(cfg: Mapping, num_classes: int, *, pretrained: bool = True, tiny: bool = False):
    from grft.io import load_tensors

    from . import ModelBundle

    model = make_vit(cfg, num_classes)
    if pretrained and not tiny:
        state = {k: v for k, v in load_tensors(source_checkpoint(cfg)).items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert set(missing) == {"head.weight", "head.bias"} and not unexpected, (missing, unexpected)
    return ModelBundle(model, ARCH, INPUTS)

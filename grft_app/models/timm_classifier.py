"""Any timm image classifier (``model=timm model.name=<timm name>``): ConvNeXt, Swin, ResNet,
EfficientNet, EVA, DeiT, ViT...

The classifier is new, sized for the task; GRFT finds head, blocks and stem through timm's own
``get_classifier()`` and ``pretrained_cfg`` (``grft.targets``). The input size, mean, std and
interpolation come from the model's pretrained config unless ``model.*`` sets them.
``model.checkpoint`` reads a local file instead of the hub (as for the ViT family).
``tiny=True`` (``debug=smoke``, tests) builds a small random model of the same class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from grft.targets import detect_architecture

from ..data.splits import InputSpec

TINY_IMG_SIZE = 32
_VIT = dict(img_size=TINY_IMG_SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
# Small overrides per timm model class: (timm name to build instead or None for the user's, kwargs).
# EfficientNet's variants fix their widths inside timm, so its tiny model is timm's own test model.
TINY = {
    "VisionTransformer": (None, _VIT),
    "Eva": (None, _VIT),
    "SwinTransformer": (
        None,
        dict(img_size=TINY_IMG_SIZE, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
    ),
    "ConvNeXt": (None, dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16))),
    "ResNet": (None, dict(layers=(1, 1, 1, 1), channels=(8, 16, 16, 16), stem_width=8)),
    "EfficientNet": ("test_efficientnet", {}),
}

# Checkpoint files timm reads: Google's npz (the ViT's own loader), or a state dict in timm's naming.
CHECKPOINT_SUFFIXES = (".npz", ".safetensors", ".pth", ".pt", ".bin")


def model_class(name: str) -> str:
    """The timm class ``name`` builds (on the meta device: no memory, no download)."""
    import timm

    with torch.device("meta"):
        return type(timm.create_model(name, pretrained=False)).__name__


def tiny_model(name: str, num_classes: int, overrides: Mapping | None = None):
    """A small random model of ``name``'s class; ``overrides`` replaces the built-in recipe."""
    import timm

    if overrides is not None:
        recipe = (None, dict(overrides))
    else:
        cls = model_class(name)
        if cls not in TINY:
            raise ValueError(
                f"no tiny recipe for timm's {cls} ({name}); give model.tiny_kwargs (timm.create_model options "
                f"that shrink it), known classes: {', '.join(sorted(TINY))}"
            )
        recipe = TINY[cls]
    tiny_name, kwargs = recipe
    return timm.create_model(tiny_name or name, pretrained=False, num_classes=num_classes, **kwargs)


def overlay_for(checkpoint: str, name: str) -> dict:
    """timm's pretrained-config overlay that makes it read ``checkpoint`` instead of the hub."""
    from . import ModelUnavailableError

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(
            f"model.checkpoint={checkpoint} does not exist; give the path of a .npz (Google's release) or "
            f".safetensors (the timm hub file) checkpoint of {name}"
        )
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"model.checkpoint={checkpoint}: unknown format {path.suffix!r}; "
            f"use one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    # Google's npz needs the ViT's custom loader; a state dict goes through timm's usual filter.
    return {"file": str(path.resolve()), "custom_load": path.suffix == ".npz"}


def _unavailable(name: str, err: Exception, cls) -> Exception:
    return cls(
        f"could not load pre-trained weights for {name} ({err.__class__.__name__}: {err}). Without internet "
        f"access, download the checkpoint elsewhere (e.g. `hf download timm/{name} model.safetensors`, "
        "or Google's .npz) and pass model.checkpoint=/path/to/file"
    )


def create(cfg: Mapping, num_classes: int, *, pretrained: bool):
    import timm

    from . import ModelUnavailableError

    name = str(cfg["name"])
    kwargs = dict(cfg.get("kwargs") or {})
    if cfg.get("img_size") is not None:
        kwargs.setdefault("img_size", int(cfg["img_size"]))
    checkpoint = cfg.get("checkpoint")
    if pretrained and checkpoint:
        kwargs["pretrained_cfg_overlay"] = overlay_for(str(checkpoint), name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except RuntimeError as err:
        if any(s in str(err) for s in ("size mismatch", "Missing key", "Unexpected key")):
            raise ValueError(
                f"model.checkpoint={checkpoint} does not fit {name} (model.kwargs={kwargs}): {err}"
            ) from err
        raise _unavailable(name, err, ModelUnavailableError) from err
    except (OSError, ConnectionError) as err:
        raise _unavailable(name, err, ModelUnavailableError) from err


def input_spec(model, cfg: Mapping) -> InputSpec:
    """What the model was pre-trained on, as timm resolves it (``resolve_model_data_config``: the
    pretrained config's size, mean/std, interpolation, crop share), unless the config says otherwise."""
    from timm.data import resolve_model_data_config

    data = resolve_model_data_config(model)
    return InputSpec(
        kind="image",
        img_size=int(cfg.get("img_size") or (cfg.get("kwargs") or {}).get("img_size") or data["input_size"][-1]),
        in_chans=int(data["input_size"][0]),
        mean=tuple(cfg.get("mean") or data["mean"]),
        std=tuple(cfg.get("std") or data["std"]),
        interpolation=str(cfg.get("interpolation") or data["interpolation"]),
        crop_pct=float(data["crop_pct"]) if data.get("crop_pct") else None,
    )


def timm_vit(cfg: Mapping) -> bool | None:
    """Whether ``model.name`` builds a timm VisionTransformer (on the meta device: no memory, no download);
    ``None`` for a name timm does not know (building it says so)."""
    try:
        return model_class(str(cfg["name"])) == "VisionTransformer"
    except (RuntimeError, ValueError, TypeError):
        return None


def input_kind(cfg: Mapping) -> str:
    return "image"


def build(cfg: Mapping, num_classes: int, *, pretrained: bool = True, tiny: bool = False):
    from . import ModelBundle

    if tiny:
        model = tiny_model(str(cfg["name"]), num_classes, cfg.get("tiny_kwargs"))
        inputs = InputSpec(kind="image", img_size=TINY_IMG_SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    else:
        model = create(cfg, num_classes, pretrained=pretrained)
        inputs = input_spec(model, cfg)
    return ModelBundle(model, detect_architecture(model), inputs)

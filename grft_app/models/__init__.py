"""Models by family, built from their Hydra config: timm ViTs, Hugging Face Llamas, the digits ViT,
and any timm or transformers classifier (``timm``, ``hf``).

``build_model(model_cfg, num_classes, pretrained=..., tiny=...)`` dispatches on
``model_cfg["family"]`` to ``grft_app.models.<family>.build``. ``tiny=True`` builds a small random
model of the same family (for ``debug=smoke`` and tests): same layer types, same names.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from grft.targets import Architecture

from ..data.splits import InputSpec

FAMILIES = {
    "vit": "grft_app.models.vit",
    "llama": "grft_app.models.llama",
    "digits_vit": "grft_app.models.digits",
    "timm": "grft_app.models.timm_classifier",
    "hf": "grft_app.models.hf",
}


class ModelUnavailableError(FileNotFoundError):
    """Pre-trained weights cannot be loaded (no file, no hub access); the message says how to provide them."""


@dataclass
class ModelBundle:
    model: nn.Module
    arch: Architecture
    inputs: InputSpec


def build_model(model_cfg: Mapping, num_classes: int, *, pretrained: bool = True, tiny: bool = False) -> ModelBundle:
    family = model_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is unknown; known: {', '.join(sorted(FAMILIES))}")
    module = importlib.import_module(FAMILIES[family])
    return module.build(model_cfg, num_classes, pretrained=pretrained, tiny=tiny)


def base_of_run(cfg: Mapping, num_classes: int) -> ModelBundle:
    """A run's model before its method touches it: ``build_model`` right after seeding every generator
    with the run's seed (a tiny model's random weights and the new head come from it), pre-trained
    weights unless ``model.tiny``. The runner builds its model with it, and ``grft_app.trained``
    rebuilds a finished run's base with it, so the run's adapter finds the weights it was trained from.
    """
    seed = int(cfg["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tiny = bool(cfg["model"].get("tiny", False))
    return build_model(cfg["model"], num_classes, pretrained=not tiny, tiny=tiny)


def input_kind(model_cfg: Mapping) -> str | None:
    """``image`` or ``text``: what the model reads, known without loading it (``None``: only its files say)."""
    family = model_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is unknown; known: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[family]).input_kind(model_cfg)


def timm_vit(model_cfg: Mapping) -> bool | None:
    """Whether the model is a timm VisionTransformer, known without loading it (``None``: unknown)."""
    return importlib.import_module(FAMILIES[model_cfg.get("family")]).timm_vit(model_cfg)


__all__ = [
    "FAMILIES",
    "ModelBundle",
    "ModelUnavailableError",
    "base_of_run",
    "build_model",
    "input_kind",
    "timm_vit",
]

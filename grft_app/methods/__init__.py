"""Fine-tuning methods by name (Hydra ``method=<name>``); ``grft`` is the default.

One method, one module: ``grft_app/methods/<name>.py`` holds its Method class and every torch piece
it adds to a model (LoRA layers, adapters, prompts, scale-shifts, GPS masks), with its file format.
``base.py`` is the contract with the training loop; ``vit_only.py`` the check the ViT-only methods
share. ``make_method`` is the one factory: the app and the benchmark (``experiments/bench``) build
every method through it.
"""

from __future__ import annotations

import importlib

from .base import Method, MethodSettings

METHODS = {
    "grft": "grft_app.methods.grft:GRFTMethod",
    "full": "grft_app.methods.full:FullMethod",
    "linear": "grft_app.methods.linear:LinearMethod",
    "bias": "grft_app.methods.bias:BiasMethod",
    "lora": "grft_app.methods.lora:LoRAMethod",
    "gps": "grft_app.methods.gps:GPSMethod",
    "adapter": "grft_app.methods.adapter:AdapterMethod",
    "vpt_shallow": "grft_app.methods.vpt:VPTShallowMethod",
    "vpt_deep": "grft_app.methods.vpt:VPTDeepMethod",
    "ssf": "grft_app.methods.ssf:SSFMethod",
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"method {name!r} is unknown; known: {', '.join(sorted(METHODS))}")
    module_name, _, class_name = METHODS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_method(settings: MethodSettings) -> Method:
    return method_class(settings.name)(settings)


__all__ = ["METHODS", "Method", "MethodSettings", "make_method", "method_class"]

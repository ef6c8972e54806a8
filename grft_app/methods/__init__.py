"""Fine-tuning methods by name (Hydra ``method=<name>``); ``grft`` is the default."""

from __future__ import annotations

import importlib

from .base import Method, MethodSettings

METHODS = {
    "grft": "grft_app.methods.grft:GRFTMethod",
    "full": "grft_app.methods.simple:FullMethod",
    "linear": "grft_app.methods.simple:LinearMethod",
    "bias": "grft_app.methods.simple:BiasMethod",
    "lora": "grft_app.methods.lora:LoRAMethod",
    "gps": "grft_app.methods.gps:GPSMethod",
    "adapter": "grft_app.methods.additive:AdapterMethod",
    "vpt_shallow": "grft_app.methods.additive:VPTShallowMethod",
    "vpt_deep": "grft_app.methods.additive:VPTDeepMethod",
    "ssf": "grft_app.methods.additive:SSFMethod",
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"method {name!r} is unknown; known: {', '.join(sorted(METHODS))}")
    module_name, _, class_name = METHODS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_method(settings: MethodSettings) -> Method:
    return method_class(settings.name)(settings)


__all__ = ["METHODS", "Method", "MethodSettings", "make_method", "method_class"]

"""Fine-tuning methods by name (Hydra ``method=<name>``); ``grft`` is the default.

One method, one module: ``grft_app/methods/<name>.py`` holds its Method class and every torch piece
it adds to a model (LoRA layers, adapters, prompts, scale-shifts, GPS masks), with its file format.
``base.py`` is the contract with the training loop; ``vit_only.py`` the check the ViT-only methods
share. ``make_method`` is the one factory: the app and the benchmark (``experiments/bench``) build
every method through it.

Which class a name means is said once, by the method's YAML (``conf/method/<name>.yaml``'s
``_target_``): a new method is its module plus its YAML, and no list here goes stale.
"""

from __future__ import annotations

import importlib
from functools import cache

from omegaconf import OmegaConf

from ..paths import CONF_DIR
from .base import Method, MethodSettings

METHOD_CONF = CONF_DIR / "method"
TARGET = "_target_"


@cache
def method_targets() -> dict[str, str]:
    """Method name -> the dotted path of its class, as ``conf/method/<name>.yaml`` names it."""
    targets = {}
    for path in sorted(METHOD_CONF.glob("*.yaml")):
        target = OmegaConf.load(path).get(TARGET)
        if not target:
            raise ValueError(f"{path} names no class: add `{TARGET}: grft_app.methods.<module>.<Class>`")
        targets[path.stem] = str(target)
    return targets


def load_class(target: str) -> type[Method]:
    """``package.module.Class`` -> the class (the form Hydra's ``_target_`` takes)."""
    module_name, _, class_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"method {TARGET}={target!r} names no class that can be imported") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"method {TARGET}={target!r} is not a Method (grft_app.methods.base.Method)")
    return cls


def method_class(name: str) -> type[Method]:
    targets = method_targets()
    if name not in targets:
        raise ValueError(f"method {name!r} is unknown; known: {', '.join(sorted(targets))}")
    return load_class(targets[name])


def make_method(settings: MethodSettings) -> Method:
    cls = load_class(settings.target) if settings.target else method_class(settings.name)
    return cls(settings)


def method_label(name: str, selection: str | None = None, k: int | None = None) -> str:
    """How tables and summaries name a run's method (``Method.label``); a name no method has stays as it is."""
    targets = method_targets()
    return load_class(targets[name]).label(selection, k) if name in targets else name


def method_words(name: str, selection: str | None = None, k: int | None = None) -> list[str]:
    """What sets a run of method ``name`` apart in a one-line summary (``Method.distinguishing``)."""
    targets = method_targets()
    return load_class(targets[name]).distinguishing(selection, k) if name in targets else []


def generic_methods() -> list[str]:
    """The methods that work on any model with an obvious head (not only timm's ViT), with what they need."""
    classes = {name: method_class(name) for name in method_targets()}
    fits = [name for name, cls in classes.items() if not cls.timm_vit_only and not cls.requires]
    fits_some = [f"{name} ({cls.requires})" for name, cls in classes.items() if not cls.timm_vit_only and cls.requires]
    return fits + fits_some


def __getattr__(name: str):
    if name == "METHODS":  # name -> class path; read from conf/method when first asked
        return method_targets()
    raise AttributeError(name)


__all__ = [
    "METHODS",
    "Method",
    "MethodSettings",
    "generic_methods",
    "make_method",
    "method_class",
    "method_label",
    "method_words",
    "method_targets",
]

"""From the composed Hydra config to typed settings, with one-line errors naming the key.

Also the run key: a short hash of everything that decides a run's result, so a run's directory is
the same every time the same configuration is launched (re-launching resumes or skips it) and two
different configurations never share one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config import GRFTConfig
from ..methods import MethodSettings, method_class
from .module import TrainSettings

# Keys that change where or how a run is shown or launched, not what it computes.
NOT_IN_KEY = (
    "paths", "logger", "data_dir", "num_workers", "cpu_threads", "force", "baselines", "progress", "tags", "trace_memory_every",
    "model.cache_dir",
)


GRFT_KEYS = ("k", "selection", "norm", "lambda", "regular_layers", "subsets")


class ConfigError(ValueError):
    """A configuration value out of range; the message names the key and the allowed values."""


def run_key(root: DictConfig) -> str:
    container = OmegaConf.to_container(root, resolve=False)
    # hydra.run.dir interpolates run_name, which interpolates this key: drop them before resolving.
    container.pop("hydra", None)
    container.pop("run_name", None)
    resolved = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    for dotted in NOT_IN_KEY:
        *parents, leaf = dotted.split(".")
        node = resolved
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    # A baseline ignores GRFT's keys: the same baseline run serves every GRFT setting.
    used = method_class(resolved["method"]["name"]).grft_keys
    for key in GRFT_KEYS:
        if key not in used:
            resolved.pop(key, None)
    return hashlib.sha1(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:10]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("grft.key"):
        OmegaConf.register_new_resolver("grft.key", lambda *, _root_: run_key(_root_))


def grft_config(cfg: DictConfig) -> GRFTConfig:
    try:
        return GRFTConfig(
            k=_whole(cfg.k),
            selection=str(cfg.selection.kind),
            norm=str(cfg.norm.kind),
            lam=float(cfg["lambda"]),
            regular_layers=cfg.regular_layers,
            subsets=_whole(cfg.subsets),
            seed=int(cfg.seed),
        )
    except ValueError as err:
        raise ConfigError(str(err).replace("lam (lambda)", "lambda")) from None


def _whole(value: Any) -> Any:
    """Hydra hands ``k=2.0`` or ``k='2'`` through as given; whole numbers become ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def method_settings(cfg: DictConfig) -> MethodSettings:
    options = OmegaConf.to_container(cfg.method, resolve=True)
    name = options.pop("name")
    return MethodSettings(name=name, grft=grft_config(cfg), options=options)


def train_settings(cfg: DictConfig, metrics: tuple[str, ...]) -> TrainSettings:
    for key in ("lr", "batch_size", "epochs"):
        if not float(cfg[key]) > 0:
            raise ConfigError(f"{key} must be > 0, got {cfg[key]!r}")
    if float(cfg.warmup_epochs) < 0:
        raise ConfigError(f"warmup_epochs must be >= 0, got {cfg.warmup_epochs!r}")
    aug = cfg.augment
    return TrainSettings(
        lr=float(cfg.lr),
        weight_decay=float(cfg.weight_decay),
        optimizer=str(cfg.optimizer),
        warmup_epochs=float(cfg.warmup_epochs),
        min_lr_ratio=float(cfg.min_lr_ratio),
        label_smoothing=float(aug.label_smoothing),
        mixup=float(aug.mixup),
        cutmix=float(aug.cutmix),
        ema_decay=None if aug.ema is None else float(aug.ema),
        seed=int(cfg.seed),
        metrics=metrics,
    )

"""Checks that need no model and no training: run first, so a bad launch fails in a second.

Why: loading ViT-B/16 or Llama (or retrying the hub offline) takes tens of seconds; a missing
data folder or an impossible setting should not wait for it. Each failure is one line naming the
key or the folder and the fix.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ..data import check_data_present
from ..data import input_kind as data_kind
from ..models import input_kind as model_kind
from ..models import timm_vit
from .settings import ConfigError, method_settings, train_settings


def preflight(cfg: DictConfig) -> None:
    """Settings, probe size and data presence of one run, before its model is built."""
    settings = method_settings(cfg)  # GRFT keys (k, lambda, regular_layers, subsets, ...)
    train_settings(cfg, ("acc",))  # lr, batch_size, epochs, warm-up
    # (train_settings also refuses an odd batch_size under mixup/cutmix: they pair images in a batch)
    subsets, max_batches = int(settings.grft.subsets), cfg.probe.get("max_batches")
    for key in ("max_batches", "batch_size"):
        check_count(f"probe.{key}", cfg.probe.get(key), "null: " + PROBE_NULL[key])
    if (
        "subsets" in _grft_keys(settings.name)
        and subsets > 1
        and max_batches is not None
        and int(max_batches) < subsets
    ):
        raise ConfigError(
            f"subsets={subsets} splits the probe batches into {subsets} parts but probe.max_batches={max_batches}; "
            f"raise probe.max_batches to at least {subsets} or lower subsets"
        )
    check_fit(cfg)
    check_method_fits(cfg)
    check_data_present(cfg.dataset, cfg.data_dir)


PROBE_NULL = {"max_batches": "the whole training set", "batch_size": "batch_size"}


def check_count(key: str, value, when_null: str) -> None:
    """``value`` is null or a whole number >= 1; otherwise one line naming ``key``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ConfigError(f"{key} must be a whole number >= 1 (or {when_null}), got {value!r}")


KIND_WORDS = {"image": "images", "text": "texts"}
EXAMPLES = {
    "image": "an image model (model=timm model.name=<timm name>, or model=hf with a vision model)",
    "text": "a text model (model=hf model.name=<transformers text model>)",
}


def check_fit(cfg: DictConfig) -> None:
    """An image model on a text task, or the reverse: one line naming both, before either loads."""
    holds = data_kind(cfg.dataset)
    reads = model_kind(cfg.model)
    if reads is None or reads == holds:
        return
    raise ConfigError(
        f"dataset {cfg.dataset.name} holds {KIND_WORDS[holds]} but model {cfg.model.name} "
        f"(model family {cfg.model.family}) reads {KIND_WORDS[reads]}; choose {EXAMPLES[holds]}, "
        f"or a dataset of {KIND_WORDS[reads]}"
    )


def _grft_keys(method: str) -> tuple[str, ...]:
    from ..methods import method_class

    return method_class(method).grft_keys


def check_method_fits(cfg: DictConfig) -> None:
    """A baseline that knows only timm's ViT (adapter, vpt_*, ssf) on another model: one line, before it loads."""
    from ..methods import method_class
    from ..methods.vit_only import GENERIC_METHODS

    name = str(cfg.method.name)
    if method_class(name).timm_vit_only and timm_vit(cfg.model) is False:
        raise ConfigError(
            f"method {name} supports timm ViT models, but model {cfg.model.name} (model family {cfg.model.family}) "
            f"is not one; for other models use {', '.join(GENERIC_METHODS)}"
        )

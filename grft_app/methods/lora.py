"""LoRA (Hu et al. 2021) through peft, injected into the model in place: the method and its file format.

Trainable: the LoRA matrices A and B of every target layer, and the head (nothing else).

``peft.inject_adapter_in_model`` swaps each target ``nn.Linear`` for peft's LoRA layer, which
computes ``W x + (alpha / r) B A x`` with ``A: [r, in]`` (Kaiming init) and ``B: [out, r]`` (zeros).
Unlike ``get_peft_model`` it returns the model itself, not a wrapper: the forward signature
(``model(x)``, ``model(**inputs)``), the head's name and every other module name stay as they were,
so the probe, the LightningModule and the checkpoints need nothing special. The head is not one of
peft's ``modules_to_save``; the method unfreezes it itself.

The adapter file holds peft's own LoRA state dict (``<module>.lora_A.weight``, ``.lora_B.weight``,
as ``peft.get_peft_model_state_dict`` names them) plus the head and any BatchNorm running
statistics, and the options as metadata. Merging is peft's own: each LoRA layer folds
``(alpha / r) B A`` into its base weight (``merge``) and gives its base layer back in its place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from grft.adapter import running_statistics
from grft.io import load_tensors, read_metadata, save_tensors

from ..models import ModelBundle
from .base import Method, freeze_all, load_running_statistics, unfreeze

FORMAT = "grft-lora"
VIT_TARGETS = ("qkv",)
DECODER_TARGETS = ("q_proj", "v_proj")
OTHER_TARGETS = (("query", "value"), ("q_lin", "v_lin"))


@dataclass(frozen=True)
class LoRAConfig:
    """r: rank; alpha: scale numerator (update = alpha / r * B A); dropout: on the LoRA input;
    targets: module-name suffixes to adapt (``None``: ``qkv`` on timm ViTs, ``q_proj``/``v_proj`` on
    Llama-style decoders)."""

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora r must be a whole number >= 1, got {self.r!r}")
        if not float(self.alpha) > 0:
            raise ValueError(f"lora alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))
        if self.targets is not None:
            targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ValueError(f"lora targets must be a non-empty list of module names, got {self.targets!r}")
            object.__setattr__(self, "targets", targets)


class LoRAMethod(Method):
    """peft's LoRA layers on the target projections (``method.r``, ``alpha``, ``dropout``, ``targets``) + head."""

    name = "lora"

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.config = self.options_as(LoRAConfig)
        model, head = bundle.model, bundle.arch.head
        freeze_all(model)
        self.targets = add_lora(model, self.config, head)
        unfreeze(model.get_submodule(head))
        return model

    def save_adapter(self, model: nn.Module, path: Path) -> Path | None:
        return save_lora(model, path, self.config, self.arch.head)

    def load_adapter(self, bundle: ModelBundle, path: Path) -> nn.Module:
        self.arch = bundle.arch
        return load_lora(bundle.model, path)

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_lora(model)


def default_targets(model: nn.Module) -> tuple[str, ...]:
    """The attention projections LoRA adapts by default: peft's own choice for a transformers model
    type it knows (BERT's ``query``/``value``, GPT-2's ``c_attn``...), else fused ``qkv`` (timm ViT),
    ``q_proj`` + ``v_proj`` (decoders), ``query`` + ``value`` (BERT-like) or ``q_lin`` + ``v_lin`` (DistilBERT)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in PEFT_TARGETS:
        return tuple(PEFT_TARGETS[model_type])
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for targets in (VIT_TARGETS, DECODER_TARGETS, *OTHER_TARGETS):
        if set(targets) <= leaves:
            return targets
    raise ValueError(
        "lora: found none of the usual attention projections (qkv, q_proj/v_proj, query/value, q_lin/v_lin); "
        "set method.targets=[...] to the names of the linear layers to adapt"
    )


def add_lora(model: nn.Module, config: LoRAConfig, head: str) -> tuple[str, ...]:
    """Inject LoRA into ``model`` in place; returns the target names used. Everything else is frozen by peft."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = config.targets or default_targets(model)
    if head in targets:
        raise ValueError(f"lora: the head {head!r} trains in full; leave it out of method.targets")
    peft_config = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(targets),
        bias="none",
        exclude_modules=[head],
    )
    try:
        inject_adapter_in_model(peft_config, model)
    except ValueError as err:
        raise ValueError(f"lora: {err} (method.targets={list(targets)})") from None
    return targets


def lora_tensors(model: nn.Module, head: str) -> dict[str, torch.Tensor]:
    """peft's LoRA state dict plus the head's parameters, on the CPU."""
    from peft import get_peft_model_state_dict

    tensors = dict(get_peft_model_state_dict(model))
    for pname, p in model.get_submodule(head).named_parameters():  # nested heads too (RoBERTa)
        tensors[f"{head}.{pname}"] = p
    tensors.update(running_statistics(model))  # a frozen BatchNorm still moves them in train mode
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def save_lora(model: nn.Module, path: str | Path, config: LoRAConfig, head: str) -> Path:
    meta = {"format": FORMAT, "config": asdict(config), "head": head}
    return save_tensors(path, lora_tensors(model, head), meta)


def load_lora(model: nn.Module, path: str | Path) -> nn.Module:
    """Inject LoRA into a fresh base ``model`` and load a saved adapter (LoRA matrices and head)."""
    from peft import set_peft_model_state_dict

    meta = read_metadata(path, FORMAT, "LoRA adapter")
    config, head = LoRAConfig(**meta["config"]), meta["head"]
    add_lora(model, config, head)
    tensors = load_tensors(path)
    statistics = running_statistics(model)
    head_state = {k[len(head) + 1 :]: v for k, v in tensors.items() if k.startswith(head + ".")}
    lora_state = {k: v for k, v in tensors.items() if not k.startswith(head + ".") and k not in statistics}
    result = set_peft_model_state_dict(model, lora_state)
    if result.unexpected_keys:
        raise ValueError(f"{path}: LoRA tensors with no place in this model: {result.unexpected_keys[:5]}")
    unfilled = [k for k in result.missing_keys if ".lora_" in k]
    if unfilled:
        raise ValueError(f"{path}: the file lacks LoRA tensors this model has: {unfilled[:5]}")
    model.get_submodule(head).load_state_dict(head_state)
    return load_running_statistics(model, tensors, path)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base layer (peft's ``merge``) and put the base layer back in its place."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)  # safe: a non-finite merged weight is an error, not a model
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return model

"""The fine-tuning methods the benchmark compares, each made ready to train one model.

- full: every parameter trains.
- gps: gradient-based parameter selection (Zhang et al. 2024) as ``method=gps`` runs it
  (``grft_app.methods.gps``): every eligible weight requires a full gradient and keeps full-size Adam
  state, and its gradient is zeroed outside a full-size mask (the top-k ``|H|`` entries of each
  row of the SCL probe gradient) before the optimizer step. Eligible biases and the head train in
  full, as in GRFT.
- lora: peft LoRA, r=8, alpha=16, no dropout, on ViT ``qkv`` and Llama ``q_proj``/``v_proj``; the
  head trains in full (``modules_to_save``).
- grft_row / grft_column: ``grft.select`` (SCL probe) then ``grft.attach``; the loss adds
  ``grft.penalty`` (squared L2, lam > 0, over the last 2 blocks + stem + head).
- linear: the head only.
- floor: the head plus the bias of the network's first layer (ViT: the patch embedding; Llama,
  which has no biases: a zero bias given to layer 0's ``q_proj``, so the outputs do not change),
  so backward runs through every layer but computes no weight gradient inside it. No method that
  trains inside the network can take less time or memory than this.

Each method also writes what it must store to reproduce the tuned model (``save``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import save_model
from torch import nn

import grft
from grft.io import save_tensors
from grft.targets import detect_architecture, eligible_layers
from grft_app.methods import gps

from .models import Workload
from .names import METHODS

LORA_RANK = 8
LORA_ALPHA = 16
PENALTY_LAMBDA = 1e-3
REGULAR_LAYERS = 2


@dataclass
class Trainable:
    """A model made trainable by one method.

    model: what the training step calls (LoRA wraps the original). params: what Adam updates.
    extra_loss: added to the task loss (GRFT's penalty). before_step: runs between backward and
    the optimizer step (GPS's masks). probe_s: wall seconds of the selection probe (0 if none).
    save: writes the method's adapter file(s) under a folder, returns the file to measure.
    """

    model: nn.Module
    params: list[nn.Parameter]
    extra_loss: Optional[Callable[[], torch.Tensor]]
    before_step: Optional[Callable[[], None]]
    probe_s: float
    save: Callable[[Path], Path]
    moving: Optional[int] = None
    masks: Optional[dict[str, torch.Tensor]] = None


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _freeze_all_but(model: nn.Module, names: set[str]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(names - set(params))
    if missing:
        raise ValueError(f"parameters {missing} not found in the model")
    for name, p in params.items():
        p.requires_grad_(name in names)


def _save_tensors(model: nn.Module) -> Callable[[Path], Path]:
    """Save the model's trainable tensors by name (what head-only methods must store)."""

    def save(folder: Path) -> Path:
        return save_tensors(folder / "adapter.safetensors", {n: p for n, p in model.named_parameters() if p.requires_grad})

    return save


def _timed(fn: Callable, sync: Callable[[], None]):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


# --- GPS ------------------------------------------------------------------------------------------

def prepare_gps(work: Workload, k: int, sync) -> Trainable:
    """The framework's GPS (``grft_app.methods.gps``): its masks, its gradient edit, its adapter file."""
    model = work.model
    arch = detect_architecture(model)
    layers = eligible_layers(model, arch)
    config = grft.GRFTConfig(k=k, selection="sparse")
    masks, probe_s = _timed(
        lambda: gps.build_masks(grft.accumulate_gradients(model, work.probe_batches, config, arch=arch), k), sync
    )
    names = {f"{n}.weight" for n in layers} | {f"{n}.bias" for n, m in layers.items() if m.bias is not None}
    names |= {f"{work.head}.{n}" for n, _ in model.get_submodule(work.head).named_parameters()}
    _freeze_all_but(model, names)
    for name, mask in masks.items():
        model.get_submodule(name).register_buffer(gps.MASK, mask)

    def save(folder: Path) -> Path:
        return gps.save_gps(model, folder / "adapter.safetensors", work.head)

    params = _trainable(model)
    masked = {id(model.get_submodule(n).weight) for n in masks}
    moving = sum(int(m.count_nonzero()) for m in masks.values()) + sum(p.numel() for p in params if id(p) not in masked)
    return Trainable(model, params, None, lambda: gps.apply_masks(model, masks), probe_s, save, moving, masks)


# --- the others -----------------------------------------------------------------------------------

def prepare_grft(work: Workload, kind: str, k: int, sync) -> Trainable:
    model = work.model
    config = grft.GRFTConfig(k=k, selection=kind, norm="l2", lam=PENALTY_LAMBDA, regular_layers=REGULAR_LAYERS)
    selection, probe_s = _timed(lambda: grft.select(model, work.probe_batches, config), sync)
    grft.attach(model, selection, config)
    return Trainable(model, _trainable(model), lambda: grft.penalty(model), None, probe_s,
                     lambda folder: grft.save_adapter(model, folder / "adapter.safetensors"))


def prepare_lora(work: Workload) -> Trainable:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=list(work.lora_targets),
                        modules_to_save=[work.head])
    model = get_peft_model(work.model, config)

    def save(folder: Path) -> Path:
        model.save_pretrained(str(folder / "lora"))
        return folder / "lora" / "adapter_model.safetensors"

    return Trainable(model, _trainable(model), None, None, 0.0, save)


def prepare_full(work: Workload) -> Trainable:
    model = work.model
    for p in model.parameters():
        p.requires_grad_(True)

    def save(folder: Path) -> Path:
        path = folder / "model.safetensors"
        save_model(model, str(path))
        return path

    return Trainable(model, _trainable(model), None, None, 0.0, save)


def prepare_head(work: Workload, with_first_bias: bool) -> Trainable:
    """The head alone (linear), or with the first layer's bias (floor)."""
    model = work.model
    names = {f"{work.head}.{n}" for n, _ in model.get_submodule(work.head).named_parameters()}
    if with_first_bias:
        first = model.get_submodule(work.floor)
        if first.bias is None:  # a zero bias changes no output, and its gradient needs backward to reach here
            weight = first.weight
            first.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
        names.add(f"{work.floor}.bias")
    _freeze_all_but(model, names)
    return Trainable(model, _trainable(model), None, None, 0.0, _save_tensors(model))


def prepare(method: str, work: Workload, k: int, sync: Callable[[], None] = lambda: None) -> Trainable:
    """Make ``work.model`` trainable the way ``method`` does (runs its probe, if it has one)."""
    check_method(method)
    if method == "full":
        return prepare_full(work)
    if method == "gps":
        return prepare_gps(work, k, sync)
    if method == "lora":
        return prepare_lora(work)
    if method.startswith("grft_"):
        return prepare_grft(work, method.removeprefix("grft_"), k, sync)
    return prepare_head(work, with_first_bias=method == "floor")

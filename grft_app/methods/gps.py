"""GPS (Zhang et al. 2024) as the GPS code runs it: full-size masks applied to full gradients.

Selection: the SCL probe gradient ``H`` of every eligible weight (``grft.accumulate_gradients``,
the probe GRFT uses too) and, for every output neuron (row of ``W [out, in]``; a conv weight is
seen as ``[out, in*kh*kw]``), the k input connections with the largest ``|H|``
(``grft.selection.rank(H, "sparse", k)``), marked in a bool mask of W's full shape.

Training: every eligible weight keeps ``requires_grad`` and gets its full gradient; before each
optimizer step the gradient is set to zero outside the mask, as the GPS code does in its loss
scaler. With Adam and weight decay 0 (the setting of every GPS training script) a gradient that is
zero from the first step on leaves both Adam moments at zero, so the update of a frozen entry is
exactly zero and the entry stays bit-identical. Weight decay would move frozen entries, so the
method refuses it.

Trainable, as in the GPS code's masks: the selected entries of each eligible weight (on a ViT: every
block's qkv, proj, fc1, fc2 and the patch embedding), the biases of those layers, and the head.
Norms, position and class embeddings stay frozen; GPS zeroes their gradients, here they do not
require grad, which gives the same weights and spares their gradients.

Differences in detail, both inactive by default: the GPS code clips gradients before masking,
Lightning clips after this hook; the GPS code probes on every training batch, here on the probe
loader the app gives every method (``probe.max_batches``), without GRFT's ``subsets``.

The masks are bool buffers (``<layer>.gps_mask``), so a checkpoint carries them and a resumed run
skips the probe. The adapter file keeps, per layer, the indices ``[out, k]`` and values of the
selected entries plus the trained biases and head: enough to rebuild the model from its base.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from grft.adapter import running_statistics
from grft.config import GRFTConfig
from grft.io import load_tensors, read_metadata, save_tensors
from grft.probe import accumulate_gradients
from grft.selection import as_matrix, check_k, compact_index, rank
from grft.targets import Architecture, detect_architecture, eligible_layers

from ..models import ModelBundle
from .base import Method, NoOptions, Progress, freeze_all, load_running_statistics, unfreeze

log = logging.getLogger("grft")

MASK = "gps_mask"
FORMAT = "grft-gps"


def build_masks(grads: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Layer name -> bool mask shaped like its weight: True at the k largest ``|H|`` of every row."""
    masks = {}
    for name, grad in grads.items():
        matrix = as_matrix(grad)
        mask = torch.zeros(matrix.shape, dtype=torch.bool, device=grad.device)
        mask.scatter_(1, rank(grad, "sparse", k).to(grad.device), True)
        masks[name] = mask.reshape(grad.shape)
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero, in place, each masked layer's weight gradient outside its mask (call before the step)."""
    for name, mask in masks.items():
        grad = model.get_submodule(name).weight.grad
        if grad is not None:
            grad.masked_fill_(~mask, 0)


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if MASK in m._buffers}


def model_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m._buffers[MASK] for name, m in masked_layers(model).items()}


class GPSMethod(Method):
    name = "gps"
    grft_keys = ("k",)

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        grft = self.settings.grft
        if grft.subsets != 1 or grft.lam > 0:
            log.warning(
                "method gps ignores GRFT's subsets=%s and lambda=%s (GPS probes every batch, no penalty)",
                grft.subsets,
                grft.lam,
            )
        model = bundle.model
        layers = eligible_layers(model, bundle.arch)
        if not layers:
            raise ValueError("gps: the model has no eligible layer (nn.Linear or nn.Conv2d outside the head)")
        for name, layer in layers.items():
            check_k("sparse", grft.k, tuple(as_matrix(layer.weight).shape), name)
        freeze_all(model)
        for layer in layers.values():
            layer.weight.requires_grad_(True)
            if layer.bias is not None:
                layer.bias.requires_grad_(True)
            # Nothing selected yet: the probe fills the masks in on_fit_start.
            layer.register_buffer(MASK, torch.zeros_like(layer.weight, dtype=torch.bool))
        unfreeze(model.get_submodule(bundle.arch.head))
        return model

    def needs_probe(self, model: nn.Module) -> bool:
        return not all(bool(mask.any()) for mask in model_masks(model).values())

    def probe(self, model: nn.Module, batches: Iterable, progress: Progress | None = None) -> dict:
        grft = self.settings.grft
        config = GRFTConfig(k=grft.k, selection="sparse", norm="none", temperature=grft.temperature, seed=grft.seed)
        grads = accumulate_gradients(model, batches, config, arch=self.arch, progress=progress)
        layers = masked_layers(model)
        with torch.no_grad():
            for name, mask in build_masks(grads, config.k).items():
                layers[name]._buffers[MASK].copy_(mask)
        masks = model_masks(model)
        return {"layers": len(masks), "selected_entries": sum(int(m.count_nonzero()) for m in masks.values())}

    def check_training(self, settings) -> None:
        if float(settings.weight_decay) != 0.0:
            raise ValueError(
                f"method gps needs weight_decay=0 (got {settings.weight_decay}): weight decay would move the "
                "entries its masks freeze (the GPS scripts use Adam with weight decay 0)"
            )

    def before_optimizer_step(self, model: nn.Module) -> None:
        apply_masks(model, model_masks(model))

    def gradient_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": mask for name, mask in model_masks(model).items()}

    def save_adapter(self, model: nn.Module, path: Path) -> Path | None:
        return save_gps(model, path, self.arch.head)

    def load_adapter(self, bundle: ModelBundle, path: Path) -> nn.Module:
        """The selected entries written into the fresh base's own layers: already plain, nothing to merge."""
        self.arch = bundle.arch
        return load_gps(bundle.model, path, bundle.arch)

    def checkpoint_keys(self, model: nn.Module) -> set[str]:
        return super().checkpoint_keys(model) | {f"{name}.{MASK}" for name in masked_layers(model)}


def selected_entries(weight: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``[out, k]`` of a mask with k Trues per row, and the weight's values there."""
    matrix, rows = as_matrix(mask), mask.shape[0]
    counts = matrix.sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("gps: a mask must hold the same number of entries in every row")
    index = matrix.nonzero()[:, 1].reshape(rows, -1)
    return index, as_matrix(weight).gather(1, index)


def save_gps(model: nn.Module, path: str | Path, head: str) -> Path:
    """Selected entries (indices + values), the masked layers' biases and the head, in safetensors."""
    tensors, shapes = {}, {}
    for name, layer in masked_layers(model).items():
        index, values = selected_entries(layer.weight.detach(), layer._buffers[MASK])
        tensors[f"{name}.gps_index"] = compact_index(index, max(as_matrix(layer.weight).shape))
        tensors[f"{name}.gps_values"] = values
        if layer.bias is not None:
            tensors[f"{name}.bias"] = layer.bias
        shapes[name] = list(layer.weight.shape)
    for pname, p in model.get_submodule(head).named_parameters():  # nested heads too (RoBERTa)
        tensors[f"{head}.{pname}"] = p
    tensors.update(running_statistics(model))  # a frozen BatchNorm still moves them in train mode
    meta = {"format": FORMAT, "head": head, "shapes": shapes}
    return save_tensors(path, tensors, meta)


@torch.no_grad()
def load_gps(model: nn.Module, path: str | Path, arch: Architecture | None = None) -> nn.Module:
    """Write a saved GPS adapter into a fresh pre-trained ``model`` (plain layers, no masks)."""
    meta = read_metadata(path, FORMAT, "GPS adapter")
    arch = arch or detect_architecture(model)
    if arch.head != meta["head"]:
        raise ValueError(f"the adapter's head is {meta['head']!r}, this model's is {arch.head!r}")
    tensors = load_tensors(path)
    modules = dict(model.named_modules())
    for name, shape in meta["shapes"].items():
        layer = modules.get(name)
        if layer is None or list(layer.weight.shape) != shape:
            raise ValueError(f"{path}: layer {name} {shape} does not match this model")
        matrix = as_matrix(layer.weight).clone()
        matrix.scatter_(1, tensors[f"{name}.gps_index"].long(), tensors[f"{name}.gps_values"].to(matrix.dtype))
        layer.weight.copy_(matrix.reshape(layer.weight.shape))
        if f"{name}.bias" in tensors:
            layer.bias.copy_(tensors[f"{name}.bias"])
    head = model.get_submodule(arch.head)
    head.load_state_dict({k[len(arch.head) + 1 :]: v for k, v in tensors.items() if k.startswith(arch.head + ".")})
    load_running_statistics(model, tensors, path)
    return model

"""A tuned model's own tensors in one small safetensors file, and loading them onto a fresh base.

The file holds, per sliced matrix, its indices and its delta (``W - W_pre`` on the slice), the
eligible layers' biases, the head, and BatchNorm running statistics (training in train mode moves
them: ResNet, EfficientNet); plus the config as metadata. No full weight matrix of the base model
is ever written, so the file is a fraction of a percent of a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .config import GRFTConfig
from .selection import LayerSelection, Selection, compact_index
from .targets import Architecture, detect_architecture
from .tuner import attach, sliced_layers, state_of

FORMAT = "grft-adapter"


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    state = state_of(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in sliced_layers(model).items():
        tensors[f"{name}.grft_index"] = compact_index(layer.grft_index, max(layer.matrix.shape))
        tensors[f"{name}.grft_delta"] = layer.grft_delta
        if layer.bias is not None:
            tensors[f"{name}.bias"] = layer.bias
    for head in state.arch.heads:
        for pname, p in model.get_submodule(head).named_parameters():
            tensors[f"{head}.{pname}"] = p
    tensors.update(running_statistics(model))
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def running_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm buffers a forward in train mode updates (frozen weights, moving statistics)."""
    return {
        f"{name}.{b}" if name else b: buffer
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for b, buffer in module.named_buffers(recurse=False)
        if buffer is not None
    }


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter of a tuned (attached, not merged) model; returns the path."""
    state = state_of(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = {name: list(layer.matrix.shape) for name, layer in sliced_layers(model).items()}
    meta = {
        "format": FORMAT,
        "config": state.config.to_dict(),
        "head": state.arch.head,
        "shapes": shapes,
    }
    save_file(adapter_tensors(model), str(path), metadata={"grft": json.dumps(meta)})
    return path


def read_adapter_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}")
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("grft")
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a GRFT adapter (written by grft.save_adapter)")
    return meta


def load_adapter(model: nn.Module, path: str | Path, arch: Architecture | None = None) -> nn.Module:
    """Attach GRFT to a fresh base ``model`` and load the adapter's slices, biases and head.

    The result computes what the saved model computed; call ``grft.merge`` for plain layers.
    """
    meta = read_adapter_metadata(path)
    tensors = load_file(str(path))
    config = GRFTConfig.from_dict(meta["config"])
    arch = arch or detect_architecture(model)
    if arch.head != Architecture(head=meta["head"], blocks=()).head:  # a list in the file when several
        raise ValueError(f"the adapter's head is {meta['head']!r}, this model's is {arch.head!r}; pass arch=grft.Architecture(...)")
    layers = {
        name: LayerSelection(tensors[f"{name}.grft_index"].long(), tuple(shape)) for name, shape in meta["shapes"].items()
    }
    attach(model, Selection(config.selection, config.k, layers), config, arch)
    own = {n: t for n, t in tensors.items() if not n.endswith(".grft_index")}
    params = {**dict(model.named_parameters()), **running_statistics(model)}
    with torch.no_grad():
        for name, value in own.items():
            if name not in params:
                raise ValueError(f"adapter tensor {name} has no place in this model")
            target = params[name]
            if target.shape != value.shape:
                raise ValueError(f"adapter tensor {name} has shape {tuple(value.shape)}, the model's is {tuple(target.shape)}")
            target.copy_(value)
    return model

"""A tuned model's own tensors in one small safetensors file, and loading them onto a fresh base.

The file holds, per sliced matrix, its indices and its delta (``W - W_pre`` on the slice), the
eligible layers' biases, the head, and BatchNorm running statistics (training in train mode moves
them: ResNet, EfficientNet); plus the config as metadata. No full weight matrix of the base model
is ever written, so the file is a fraction of a percent of a checkpoint.

The metadata also holds a checksum of the tensors and a fingerprint of the base model (every
eligible matrix's shape, and a few of its pre-trained values), so ``load_adapter`` checks the file
and the base before it changes the model: a damaged file or the wrong base is an error that names
the problem, and the model is left as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .config import GRFTConfig
from .io import UnreadableFile, load_tensors, read_metadata, save_tensors
from .layers import slice_shape
from .selection import LayerSelection, Selection, check_k, compact_index
from .targets import Architecture, detect_architecture, eligible_layers, weight_matrix
from .tuner import attach, sliced_layers, state_of

FORMAT = "grft-adapter"
SAMPLES_PER_MATRIX = 4  # pre-trained values per eligible matrix in the base fingerprint
SAMPLE_RTOL = 2e-2  # the same base in bf16 or fp16 still matches (bf16 keeps ~3 significant digits)


class AdapterMismatch(ValueError):
    """An adapter file that is damaged, or that does not fit the model it is loaded onto."""


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sample_positions(numel: int) -> list[int]:
    n = min(SAMPLES_PER_MATRIX, numel)
    return [round(i * (numel - 1) / max(n - 1, 1)) for i in range(n)]


def _pretrained_value(layer, row: int, col: int) -> float:
    """``W_pre[row, col]`` of a sliced layer (its weight holds ``W_pre + delta`` on the slice)."""
    index, kind = layer.grft_index, layer.grft_kind
    if kind == "row":
        hit = (index == row).nonzero()
        return float(layer.grft_base[hit[0, 0], col]) if len(hit) else float(layer.matrix[row, col])
    hit = (index == col).nonzero() if kind == "column" else (index[row] == col).nonzero()
    return float(layer.grft_base[row, hit[0, 0]]) if len(hit) else float(layer.matrix[row, col])


def base_fingerprint(model: nn.Module) -> dict[str, list[float]]:
    """A few pre-trained values of every sliced matrix of a tuned model, by module name."""
    out = {}
    for name, layer in sliced_layers(model).items():
        cols = layer.matrix.shape[1]
        out[name] = [_pretrained_value(layer, *divmod(p, cols)) for p in sample_positions(layer.matrix.numel())]
    return out


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
    """The BatchNorm buffers a forward in train mode updates (frozen weights, moving statistics).

    Only BatchNorm's own buffers: a BatchNorm inside the head (LeViT, RepViT) also holds the
    penalty's anchors (``grft_*_start``), which ``attach`` adds and a fresh base does not have.
    """
    return {
        f"{name}.{b}" if name else b: buffer
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for b, buffer in module.named_buffers(recurse=False)
        if buffer is not None and not b.startswith("grft_")
    }


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter of a tuned (attached, not merged) model; returns the path."""
    state = state_of(model)
    shapes = {name: list(layer.matrix.shape) for name, layer in sliced_layers(model).items()}
    tensors = adapter_tensors(model)
    meta = {
        "format": FORMAT,
        "config": state.config.to_dict(),
        "head": state.arch.head,
        "shapes": shapes,
        "sha256": tensors_checksum(tensors),
        "base_samples": base_fingerprint(model),
    }
    return save_tensors(path, tensors, meta)


DAMAGED_FIX = "copy it again, or save the adapter again from its run"


def read_adapter_metadata(path: str | Path) -> dict:
    try:
        return read_metadata(path, FORMAT, "GRFT adapter")
    except UnreadableFile as err:
        raise AdapterMismatch(f"{err}: {DAMAGED_FIX}") from None


def load_adapter(model: nn.Module, path: str | Path, arch: Architecture | None = None) -> nn.Module:
    """Attach GRFT to a fresh base ``model`` and load the adapter's slices, biases and head.

    Everything is checked first (the file's checksum, the base's eligible shapes and pre-trained
    values, every tensor's shape and place); on any error the model is left untouched. The result
    computes what the saved model computed; call ``grft.merge`` for plain layers.
    """
    path = Path(path)
    meta = read_adapter_metadata(path)
    try:
        tensors = load_tensors(path)
    except UnreadableFile as err:
        raise AdapterMismatch(f"{err}: {DAMAGED_FIX}") from None
    check_integrity(path, meta, tensors)
    config = GRFTConfig.from_dict(meta["config"])
    if getattr(model, "grft_state", None) is not None:
        raise ValueError("model already has GRFT layers attached; load the adapter onto a fresh base model")
    arch = arch or detect_architecture(model)
    if arch.head != Architecture(head=meta["head"], blocks=()).head:  # a list in the file when several
        raise AdapterMismatch(
            f"the adapter's head is {meta['head']!r}, this model's is {arch.head!r}; pass arch=grft.Architecture(...)"
        )
    layers = check_fits(path, meta, tensors, model, arch, config)
    attach(model, Selection(config.selection, config.k, layers), config, arch)
    params = {**dict(model.named_parameters()), **running_statistics(model)}
    with torch.no_grad():
        for name, value in tensors.items():
            if not name.endswith(".grft_index"):
                params[name].copy_(value)
    return model


def check_integrity(path: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """The tensors are the ones that were saved (checksum, where the file has one), and all finite.

    Finite always: a checksum only says the file is what was saved, and a diverged run (or a file
    rewritten with a matching checksum) saves NaN or inf as faithfully as any other value.
    """
    expected = meta.get("sha256")
    if expected is not None and tensors_checksum(tensors) != expected:
        raise AdapterMismatch(
            f"{path} is damaged: its tensors do not match the checksum saved with them; {DAMAGED_FIX}"
        )
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise AdapterMismatch(
            f"{path} holds non-finite values (NaN or inf) in {bad[:3]}; the file is damaged or the run diverged: "
            "train it again (with a lower lr if it diverged)"
        )


def check_fits(
    path: Path, meta: dict, tensors: dict[str, torch.Tensor], model: nn.Module, arch: Architecture, config: GRFTConfig
) -> dict[str, LayerSelection]:
    """Every tensor has its place and shape in ``model``, and ``model`` is the base it was trained on."""
    eligible = {name: tuple(weight_matrix(layer).shape) for name, layer in eligible_layers(model, arch, config).items()}
    saved = {name: tuple(shape) for name, shape in meta["shapes"].items()}
    missing, unknown = sorted(set(eligible) - set(saved)), sorted(set(saved) - set(eligible))
    differ = [f"{n} {saved[n]} vs {eligible[n]}" for n in saved if n in eligible and saved[n] != eligible[n]]
    if missing or unknown or differ:
        raise AdapterMismatch(
            f"{path} was trained on another base model: its eligible layers differ (in the model only: {missing[:3]}, "
            f"in the adapter only: {unknown[:3]}, other shapes (adapter vs model): {differ[:3]}); load it onto the "
            "base model it was trained from"
        )
    modules = dict(model.named_modules())
    for name, values in (meta.get("base_samples") or {}).items():
        matrix = weight_matrix(modules[name]).detach().reshape(-1)
        here = matrix[sample_positions(matrix.numel())].float().cpu()
        if not torch.allclose(here, torch.tensor(values, dtype=torch.float32), rtol=SAMPLE_RTOL, atol=1e-6):
            raise AdapterMismatch(
                f"{path} was trained on another base model: the pre-trained weights of {name} differ from those it "
                "was saved with; load it onto the base model (checkpoint) it was trained from"
            )
    layers = {}
    for name, shape in saved.items():
        check_k(config.selection, config.k, shape, name)
        index, delta = tensors.get(f"{name}.grft_index"), tensors.get(f"{name}.grft_delta")
        if index is None or delta is None:
            raise AdapterMismatch(f"{path} lacks the index or delta of {name}; the file is incomplete")
        want_index = (shape[0], config.k) if config.selection == "sparse" else (config.k,)
        side = shape[0] if config.selection == "row" else shape[1]
        if tuple(index.shape) != want_index or tuple(delta.shape) != slice_shape(config.selection, config.k, shape):
            raise AdapterMismatch(
                f"{path}: {name} has index {tuple(index.shape)} and delta {tuple(delta.shape)}, "
                f"but {config.selection} k={config.k} of a {shape} matrix needs {want_index} and "
                f"{slice_shape(config.selection, config.k, shape)}"
            )
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= side):
            raise AdapterMismatch(f"{path}: {name} has indices outside 0..{side - 1}")
        layers[name] = LayerSelection(index.long(), shape)
    params = {**dict(model.named_parameters()), **running_statistics(model)}
    needed = [f"{n}.bias" for n in saved if getattr(modules[n], "bias", None) is not None]
    needed += [f"{head}.{p}" for head in arch.heads for p, _ in model.get_submodule(head).named_parameters()]
    absent = [n for n in needed if n not in tensors]
    if absent:
        raise AdapterMismatch(f"{path} lacks {absent[:3]}; the file is incomplete or from another model")
    for name, value in tensors.items():
        if name.endswith((".grft_index", ".grft_delta")):
            continue
        if name not in params:
            raise AdapterMismatch(f"adapter tensor {name} of {path} has no place in this model")
        if params[name].shape != value.shape:
            raise AdapterMismatch(
                f"adapter tensor {name} of {path} has shape {tuple(value.shape)}, the model's is "
                f"{tuple(params[name].shape)} (another number of classes?)"
            )
    return layers

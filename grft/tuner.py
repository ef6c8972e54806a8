"""Turn a model into a GRFT-tuned one (``attach``), fill in a selection later, and ``merge`` back.

``attach`` swaps each eligible layer for its slice-trainable version, freezes every base weight,
and leaves trainable exactly: the slices, the biases of eligible layers, and the head (every
parameter of every head module, nested ones included). It records
what the penalty needs (the regular set and the anchors of biases and head) on the model itself,
so a checkpoint of the model is a checkpoint of the whole GRFT state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import GRFTConfig
from .layers import SlicedLayer, make_sliced
from .selection import Selection, check_k
from .targets import (
    Architecture,
    detect_architecture,
    eligible_layers,
    nothing_to_slice,
    regular_prefixes,
    weight_matrix,
)


@dataclass
class GRFTState:
    """What ``attach`` decided; kept on the model as ``model.grft_state``."""

    config: GRFTConfig
    arch: Architecture
    regular: list[str]  # module-name prefixes of the regular set


def state_of(model: nn.Module) -> GRFTState:
    state = getattr(model, "grft_state", None)
    if state is None:
        raise ValueError("this model has no GRFT layers; call grft.attach(model, selection, config) first")
    return state


def sliced_layers(model: nn.Module) -> dict[str, SlicedLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SlicedLayer)}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def attach(
    model: nn.Module, selection: Selection | None, config: GRFTConfig, arch: Architecture | None = None
) -> nn.Module:
    """Make ``model`` GRFT-trainable in place and return it.

    ``selection=None`` allocates every slice (zeros, shape known from k) with placeholder indices;
    ``apply_selection`` fills them later without changing any output. Lightning needs this: its
    optimizers and DDP wrapper exist before ``on_fit_start``, where the probe runs.
    """
    if getattr(model, "grft_state", None) is not None:
        raise ValueError("model already has GRFT layers attached; merge it or start from a fresh model")
    arch = arch or detect_architecture(model)
    layers = eligible_layers(model, arch, config)
    if not layers:
        raise ValueError(nothing_to_slice(model, arch, config))
    regular = regular_prefixes(model, arch, config.regular_layers)
    if selection is not None:
        _check_selection_fits(selection, layers, config)
    for name, layer in layers.items():
        check_k(config.selection, config.k, tuple(weight_matrix(layer).shape), name)

    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in layers.items():
        index = selection[name].index if selection is not None else None
        sliced = make_sliced(layer, config.selection, config.k, index)
        if sliced.bias is not None:
            sliced.bias.requires_grad_(True)
        _set_submodule(model, name, sliced)
    for module in head_modules(model, arch):
        for pname, p in list(module.named_parameters(recurse=False)):
            p.requires_grad_(True)
            module.register_buffer(f"grft_{pname}_start", p.detach().clone())
    model.grft_state = GRFTState(config, arch, regular)
    return model


def head_modules(model: nn.Module, arch: Architecture) -> list[nn.Module]:
    """Every module inside the head(s): a nested head (RoBERTa's dense + out_proj) trains whole."""
    return [m for name in arch.heads for m in model.get_submodule(name).modules()]


def _check_selection_fits(selection: Selection, layers: dict[str, nn.Module], config: GRFTConfig) -> None:
    if selection.kind != config.selection or selection.k != config.k:
        raise ValueError(
            f"selection is {selection.kind} k={selection.k} but the config asks for {config.selection} k={config.k}"
        )
    missing = sorted(set(layers) - set(selection.layers))
    extra = sorted(set(selection.layers) - set(layers))
    if missing or extra:
        raise ValueError(
            f"selection does not match the model's eligible layers (missing: {missing[:5]}, unknown: {extra[:5]})"
        )
    for name, layer in layers.items():
        shape = tuple(weight_matrix(layer).shape)
        if tuple(selection[name].shape) != shape:
            raise ValueError(f"selection for {name} is for a {selection[name].shape} matrix, the model's is {shape}")


def apply_selection(model: nn.Module, selection: Selection) -> None:
    """Fill the allocated slices with the probe's choice (resets their deltas to zero)."""
    state = state_of(model)
    layers = sliced_layers(model)
    _check_selection_fits(selection, layers, state.config)
    for name, layer in layers.items():
        layer.set_index(selection[name].index)


def current_selection(model: nn.Module) -> Selection:
    """The selection a tuned model carries (from its index buffers)."""
    state = state_of(model)
    layers = {
        name: (layer.grft_index.detach().cpu().clone(), tuple(layer.matrix.shape))
        for name, layer in sliced_layers(model).items()
    }
    from .selection import LayerSelection

    return Selection(state.config.selection, state.config.k, {n: LayerSelection(i, s) for n, (i, s) in layers.items()})


def has_selection(model: nn.Module) -> bool:
    """True once every slice holds a probe's choice (e.g. restored from a checkpoint)."""
    layers = sliced_layers(model)
    return bool(layers) and all(bool(layer.grft_selected) for layer in layers.values())


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Fold every slice into its weight: plain layers, the original state-dict keys, no overhead."""
    state = state_of(model)
    for name, layer in sliced_layers(model).items():
        _set_submodule(model, name, layer.unwrap())
    for module in head_modules(model, state.arch):
        for anchor in [b for b in module._buffers if b.startswith("grft_") and b.endswith("_start")]:
            del module._buffers[anchor]
    del model.grft_state
    return model

"""The pull towards the starting weights (Eq. 7-8): ``lam * sum_{p in R} ||p - p_start||``.

Over every trainable tensor of the regular set R. For a slice, ``p - p_start`` is its ``delta``
(the slice starts at the pre-trained values), so no copy of a weight matrix is ever needed; biases
and the head are compared with the values they had when ``attach`` ran.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import SlicedLayer
from .targets import in_prefixes
from .tuner import state_of


def regular_differences(model: nn.Module) -> list[torch.Tensor]:
    """``p - p_start`` for every trainable tensor of the regular set (differentiable)."""
    state = state_of(model)
    diffs: list[torch.Tensor] = []
    head_name = state.arch.head
    for name, module in model.named_modules():
        if not in_prefixes(name, state.regular):
            continue
        if isinstance(module, SlicedLayer):
            diffs.append(module.grft_delta)
            if module.bias is not None:
                diffs.append(module.bias - module.grft_bias_start)
        elif name == head_name:
            for pname, p in module.named_parameters(recurse=False):
                diffs.append(p - getattr(module, f"grft_{pname}_start"))
    return diffs


def penalty(model: nn.Module) -> torch.Tensor:
    """The regularisation term to add to the task loss (a 0-dim tensor; 0 for norm='none')."""
    state = state_of(model)
    cfg = state.config
    if cfg.norm == "none" or cfg.lam == 0.0:
        return next(model.parameters()).new_zeros(())
    diffs = regular_differences(model)
    if cfg.norm == "l2":
        total = sum(d.square().sum() for d in diffs)
    else:
        total = sum(d.abs().sum() for d in diffs)
    return cfg.lam * total

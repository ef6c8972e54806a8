"""The pull towards the starting weights (Eq. 7-8): ``lam * sum_{p in R} ||p - p_start||``.

Over every trainable tensor of the regular set R. For a slice, ``p - p_start`` is its ``delta``
(the slice starts at the pre-trained values), so no copy of a weight matrix is ever needed; biases
and the head are compared with the values they had when ``attach`` ran.
"""

from __future__ import annotations

import torch
from torch import nn

from .architecture import in_prefixes
from .layers import SlicedLayer
from .tuner import state_of


def _regular_terms(model: nn.Module, state) -> list[tuple[nn.Module, str, str | None]]:
    """``(module, tensor name, anchor name or None)`` of every term of the regular set.

    Found by one walk over the modules per ``attach`` and cached on the GRFT state (which ``merge``
    drops), not once per step: the walk costs about as much as the penalty itself on a ViT-B.
    """
    cached = getattr(state, "penalty_terms", None)
    if cached is not None:
        return cached
    terms: list[tuple[nn.Module, str, str | None]] = []
    heads = list(state.arch.heads)
    for name, module in model.named_modules():
        if not in_prefixes(name, state.regular):
            continue
        if isinstance(module, SlicedLayer):
            terms.append((module, "grft_delta", None))
            if module.bias is not None:
                terms.append((module, "bias", "grft_bias_start"))
        elif in_prefixes(name, heads):  # every module of a nested head holds its own anchors
            for pname, _ in module.named_parameters(recurse=False):
                terms.append((module, pname, f"grft_{pname}_start"))
    state.penalty_terms = terms
    return terms


def regular_differences(model: nn.Module) -> list[torch.Tensor]:
    """``p - p_start`` for every trainable tensor of the regular set (differentiable)."""
    state = state_of(model)
    return [
        getattr(module, attr) if anchor is None else getattr(module, attr) - getattr(module, anchor)
        for module, attr, anchor in _regular_terms(model, state)
    ]


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

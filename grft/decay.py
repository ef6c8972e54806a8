"""Weight decay on a slice: the decay of the weights that train, not of their change.

A slice trains ``delta = W[slice] - W_pre[slice]``. An optimizer's own weight decay on ``delta``
would pull ``W[slice]`` towards the pre-trained values (a second regulariser beside lambda's
penalty). Algorithm 1 updates the masked entries of ``W`` itself (Eq. 6), and AdamW's decoupled
decay is part of that update, so here it shrinks the selected weights towards zero, exactly as
AdamW on ``W`` would with the update restricted to the mask (and as full fine-tuning does to every
entry). The method's slices therefore take weight decay 0 in the optimizer and get it from here.
"""

from __future__ import annotations

import torch
from torch import nn

from .tuner import sliced_layers


@torch.no_grad()
def decay_slices_(model: nn.Module, rate: float) -> None:
    """Decoupled (AdamW) decay, before the step: ``W[slice] -= rate * W[slice]``; ``rate = lr * weight_decay``."""
    if rate:
        for layer in sliced_layers(model).values():
            layer.grft_delta.sub_(rate * (layer.grft_base + layer.grft_delta))


@torch.no_grad()
def add_slice_decay_grad_(model: nn.Module, weight_decay: float) -> None:
    """Coupled (Adam's L2) decay: the gradient of ``weight_decay / 2 * ||W[slice]||^2`` added to ``delta``'s."""
    if weight_decay:
        for layer in sliced_layers(model).values():
            if layer.grft_delta.grad is not None:
                layer.grft_delta.grad.add_(layer.grft_base + layer.grft_delta, alpha=weight_decay)

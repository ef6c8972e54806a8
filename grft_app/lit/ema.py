"""Exponential moving average of the trainable parameters only.

Why not a whole-model EMA (timm ModelEmaV3, torch AveragedModel): those copy every frozen weight
too; for a PEFT method the average only ever differs on the few parameters that train.
"""

from __future__ import annotations

import torch
from torch import nn


class TrainableEMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: params[n].detach().clone() for n in self.names}
        self.swapped = False

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for n in self.names:
            shadow = self.shadow[n]
            if shadow.device != params[n].device:
                self.shadow[n] = shadow = shadow.to(params[n].device)
            shadow.lerp_(params[n].detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model: nn.Module) -> None:
        """Exchange live and averaged values in place; calling twice restores the live ones."""
        params = dict(model.named_parameters())
        for n in self.names:
            live = params[n]
            shadow = self.shadow[n].to(live.device)
            tmp = live.detach().clone()
            live.copy_(shadow)
            self.shadow[n] = tmp
        self.swapped = not self.swapped

    def state_dict(self) -> dict:
        return {"decay": self.decay, "swapped": self.swapped, "shadow": {n: t.cpu() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.swapped = state["decay"], False
        self.shadow = dict(state["shadow"])

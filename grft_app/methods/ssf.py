"""SSF: scale and shift deep features (Lian et al. 2022) on a frozen timm ViT: the method and its module.

After every linear operation and every LayerNorm of the backbone (each block's qkv, proj, fc1,
fc2, norm1, norm2; the patch embedding; the final norm) the output is rescaled per feature:
``y * scale + shift`` with ``scale, shift: [features]``. Both start near the identity (normal
around 1 and 0 with std 0.02, as in the SSF paper). Because the operation is linear per feature,
it folds into the preceding layer after training (``W' = diag(scale) W``, ``b' = scale * b + shift``).

Each ``ScaleShift`` is a child of the layer it follows (``blocks.0.attn.qkv.ssf``) and runs from a
forward hook, so the pre-trained parameters keep their names. What trains: every scale and shift
and the new head.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import ModelBundle
from .base import CannotMerge, Method, NoOptions, freeze_all, train_added
from .vit_only import parameter_like, require_vit

INIT_STD = 0.02


class SSFMethod(Method):
    """A scale and a shift per feature after every linear layer and LayerNorm + head."""

    name = "ssf"
    timm_vit_only = True

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        model = require_vit(bundle.model, self.name)
        freeze_all(model)
        added = add_ssf(model, bundle.arch.head)
        return train_added(model, added.values(), bundle.arch.head)

    def merge(self, model: nn.Module) -> nn.Module:
        return fold_ssf(model)


class ScaleShift(nn.Module):
    """``y * scale + shift`` along feature axis ``dim`` (``-1`` for tokens, ``1`` for conv maps)."""

    def __init__(self, features: int, dim: int = -1, init_std: float = INIT_STD):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(features).normal_(1.0, init_std))
        self.shift = nn.Parameter(torch.empty(features).normal_(0.0, init_std))
        self.dim = dim

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        shape = [1] * y.dim()
        shape[self.dim] = -1
        return y * self.scale.view(shape).to(y.dtype) + self.shift.view(shape).to(y.dtype)


def _run_ssf(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return module.ssf(output)


def ssf_targets(model: nn.Module, head: str) -> dict[str, tuple[nn.Module, int, int]]:
    """Name -> (layer, features, feature axis of its output) for every Linear, Conv2d, LayerNorm outside the head."""
    found = {}
    for name, module in model.named_modules():
        if name == head or name.startswith(head + "."):
            continue
        if isinstance(module, nn.Linear):
            found[name] = (module, module.out_features, -1)
        elif isinstance(module, nn.Conv2d):
            found[name] = (module, module.out_channels, 1)
        elif isinstance(module, nn.LayerNorm):
            if len(module.normalized_shape) != 1:
                raise ValueError(
                    f"ssf: {name} normalises over {module.normalized_shape}; only 1-D LayerNorms are supported"
                )
            found[name] = (module, module.normalized_shape[0], -1)
    return found


def add_ssf(model: nn.Module, head: str, init_std: float = INIT_STD) -> dict[str, ScaleShift]:
    """Insert a ScaleShift after every linear layer and LayerNorm of a timm ViT in place; returns them by name."""
    require_vit(model, "ssf")
    like = parameter_like(model)
    added = {}
    for name, (module, features, dim) in ssf_targets(model, head).items():
        if hasattr(module, "ssf"):
            raise ValueError(f"ssf: {name} already has a scale-shift; start from a fresh model")
        module.ssf = ScaleShift(features, dim, init_std).to(**like)
        module.register_forward_hook(_run_ssf)
        added[f"{name}.ssf"] = module.ssf
    return added


@torch.no_grad()
def fold_ssf(model: nn.Module) -> nn.Module:
    """Fold every ScaleShift into the layer it follows and remove it: ``W' = diag(scale) W``,
    ``b' = scale * b + shift`` (a conv scales each output channel, a LayerNorm its affine weight).

    Every layer is checked first (a layer without a bias, or a LayerNorm without an affine
    weight, has nowhere to hold the shift or the scale); on an error the model is unchanged.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(getattr(m, "ssf", None), ScaleShift)}
    lacking = [name for name, m in layers.items() if getattr(m, "weight", None) is None or m.bias is None]
    if lacking:
        raise CannotMerge(
            f"ssf: {lacking[:3]} have no bias (or no affine weight) to fold the scale and shift into, so the tuned "
            "model is not a plain model of its library"
        )
    for layer in layers.values():
        ssf = layer.ssf
        scale = ssf.scale.to(layer.weight.dtype)
        layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.dim() - 1))))
        layer.bias.mul_(scale).add_(ssf.shift.to(layer.bias.dtype))
        for key, hook in list(layer._forward_hooks.items()):
            if hook is _run_ssf:
                del layer._forward_hooks[key]
        del layer.ssf
    return model

"""Which layers are one weight matrix GRFT can slice, and that matrix as ``[out, in]``.

``nn.Linear`` (and subclasses whose forward is the plain product), ``nn.Conv2d`` with groups=1 and
zero padding (seen as ``[out, in*kh*kw]``), and transformers' ``Conv1D`` (stored ``[in, out]``).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SlicedLayer, is_conv1d, numeric_padding


def ineligible_reason(module: nn.Module) -> str | None:
    """Why a layer with a weight matrix is not sliced (None: it is eligible).

    Subclasses that change ``forward`` (timm's ``Conv2dSame`` pads at run time, ``StdConv2d``
    standardises its weight) are left out: the slice layer computes the plain product.
    """
    if isinstance(module, SlicedLayer):
        return None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped/depthwise Conv2d (groups={module.groups}): not one [out, in*kh*kw] matrix"
        if module.padding_mode != "zeros" or numeric_padding(module) is None:
            return (
                f"Conv2d with padding={module.padding!r}, padding_mode={module.padding_mode!r}: "
                "only zero padding is sliced"
            )
        if type(module).forward is not nn.Conv2d.forward:
            return f"{type(module).__name__} overrides Conv2d.forward: slicing would change what it computes"
        return None
    if isinstance(module, nn.Linear):
        if type(module).forward is not nn.Linear.forward and not computes_plain_product(module):
            return f"{type(module).__name__} overrides Linear.forward: slicing would change what it computes"
        return None
    if is_conv1d(module):
        return None
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        if isinstance(module, nn.Embedding):
            return "embedding table: frozen, as every embedding"
        return f"{type(module).__name__} is not a Linear, Conv2d (groups=1) or Conv1D"
    return None


_PLAIN_PRODUCT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def computes_plain_product(layer: nn.Linear) -> bool:
    """Whether a Linear subclass's own ``forward`` gives ``F.linear(x, W, b)`` (Falcon's ``FalconLinear``).

    Asked of the layer itself, in training and in eval mode, on a small random input: a forward
    that returns anything else (a tuple, a quantised or noisy product) is not the plain product,
    and the slice layer, which computes ``F.linear``, would change it. A layer on the meta device
    cannot be asked and counts as not plain. Remembered per layer.
    """
    known = _PLAIN_PRODUCT.get(layer)
    if known is not None:
        return known
    weight = layer.weight
    plain = False
    if weight.device.type != "meta" and weight.dim() == 2:
        mode = layer.training
        tolerance = 1e-2 if weight.element_size() < 4 else 1e-4  # the sum's order differs
        generator = torch.Generator(device=weight.device).manual_seed(0)
        x = torch.randn(2, weight.shape[1], generator=generator, device=weight.device).to(weight.dtype)
        try:
            with torch.no_grad():
                expected = F.linear(x, weight, layer.bias)
                plain = True
                for training in (True, False):
                    layer.train(training)
                    out = type(layer).forward(layer, x)
                    plain = plain and torch.is_tensor(out) and out.shape == expected.shape
                    plain = plain and bool(torch.allclose(out, expected, rtol=tolerance, atol=tolerance))
        except Exception:  # noqa: BLE001 - a forward that cannot take a plain input is not the plain product
            plain = False
        finally:
            layer.train(mode)
    _PLAIN_PRODUCT[layer] = plain
    return plain


def is_eligible(module: nn.Module) -> bool:
    """Slice-trainable layer types: Linear, Conv2d that is a plain matrix product, Conv1D."""
    if isinstance(module, SlicedLayer):
        return True
    if not isinstance(module, (nn.Linear, nn.Conv2d)) and not is_conv1d(module):
        return False
    return ineligible_reason(module) is None


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as ``[out, in]`` (a view): Conv2d flattened, Conv1D transposed."""
    return layer_matrix(layer, layer.weight)


def layer_matrix(layer: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (the weight or its gradient) of ``layer`` as ``[out, in]``: row i is output neuron i."""
    if is_conv1d(layer) or getattr(layer, "grft_transposed", False):
        return tensor.t()
    return tensor.reshape(tensor.shape[0], -1)

"""The slice layers' memory and speed paths give the gradients of the plain computation.

- Row slices whose input is a GELU or a product output keep the producer's tensors instead of the
  input and recompute it in backward: the gradients must be bit-identical to the path that saves
  the input, and the input itself must not be among the saved tensors.
- Column slices get the slice and bias gradients from one product: checked against the float64
  formulas ``g^T x[:, C]`` and ``sum_n g``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grft.layers import make_sliced


def _sliced(kind: str, inp: int = 6, out: int = 5, index=(1, 3), dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    base = nn.Linear(inp, out).to(dtype)
    index = torch.tensor(index)
    layer = make_sliced(base, kind, index.shape[-1], index)
    with torch.no_grad():
        layer.grft_delta.normal_()  # a non-zero slice, so the weight differs from W_pre
    return layer


def _producers(x_in: torch.Tensor, kind: str):
    """The sliced layer's input: GELU of a linear map, or the product of two (Llama's MLP)."""
    torch.manual_seed(1)
    a, b = nn.Linear(4, 6).to(x_in.dtype), nn.Linear(4, 6).to(x_in.dtype)
    if kind == "gelu":
        return lambda x: F.gelu(a(x)), [a]
    return lambda x: F.silu(a(x)) * b(x), [a, b]


@pytest.mark.parametrize("producer", ["gelu", "mul"])
@pytest.mark.parametrize("kind", ["row", "sparse"])
def test_recomputed_input_gives_bit_identical_gradients_and_is_not_saved(producer, kind):
    index = (1, 3) if kind == "row" else [[0, 2], [1, 5], [3, 4], [0, 1], [2, 5]]
    x_in = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(2))
    g_out = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(3))
    grads = {}
    for path in ("recompute", "saved"):
        layer = _sliced(kind, index=index)
        make_input, upstream = _producers(x_in, producer)
        x = make_input(x_in)
        if path == "saved":
            x = x.view_as(x)  # a view's producer is not recomputable: the layer keeps x itself
        y = layer(x)
        node = y.grad_fn
        kept = [t.data_ptr() for t in node.saved_tensors]
        if path == "recompute":
            assert node.recompute is not None
            assert x.data_ptr() not in kept, "the input should not be kept when it can be recomputed"
        else:
            assert node.recompute is None and x.data_ptr() in kept
        y.backward(g_out)
        params = [layer.grft_delta, layer.bias] + [p for m in upstream for p in m.parameters()]
        grads[path] = [p.grad.clone() for p in params]
    for got, want in zip(grads["recompute"], grads["saved"], strict=True):
        assert torch.equal(got, want)


def test_column_slice_and_bias_gradients_match_float64_formulas():
    layer = _sliced("column", inp=9, out=7, index=(2, 6, 8))
    x = torch.randn(4, 5, 9, requires_grad=True, generator=torch.Generator().manual_seed(4))
    g = torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(5))
    layer(x).backward(g)
    g2, x2 = g.reshape(-1, 7).double(), x.detach().reshape(-1, 9).double()
    want_delta = (g2.t() @ x2)[:, [2, 6, 8]]
    torch.testing.assert_close(layer.grft_delta.grad.double(), want_delta, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad.double(), g2.sum(0), rtol=1e-5, atol=1e-5)
    weight = layer.weight.detach().double()
    torch.testing.assert_close(x.grad.double(), (g2 @ weight).reshape(4, 5, 9), rtol=1e-5, atol=1e-5)


def test_column_without_bias_gradient_still_gives_the_slice_gradient():
    layer = _sliced("column", inp=9, out=7, index=(0, 4))
    layer.bias.requires_grad_(False)
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(6))
    g = torch.randn(6, 7, generator=torch.Generator().manual_seed(7))
    layer(x).backward(g)
    want = (g.double().t() @ x.double())[:, [0, 4]]
    torch.testing.assert_close(layer.grft_delta.grad.double(), want, rtol=1e-5, atol=1e-5)
    assert layer.bias.grad is None


@pytest.mark.parametrize("kind", ["row", "column"])
@pytest.mark.parametrize("tokens", [127, 300, 301])
def test_token_split_products_match_float64_formulas(kind, tokens, monkeypatch):
    """Enough tokens for the per-thread split (2 threads), also with a remainder part."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    index = (1, 4)
    layer = _sliced(kind, inp=6, out=5, index=index, dtype=torch.float64)
    x = torch.randn(tokens, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    g = torch.randn(tokens, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    layer(x).backward(g)
    full = g.t() @ x  # the dense weight gradient, [out, in]
    want = full[list(index)] if kind == "row" else full[:, list(index)]
    torch.testing.assert_close(layer.grft_delta.grad, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, g.sum(0), rtol=1e-12, atol=1e-12)

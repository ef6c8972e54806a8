"""Slice-trainable Linear, Conv2d and Conv1D: the frozen layer plus a trainable slice ``delta``.

Why a custom autograd function: the layer must cost one matmul forward and no full-size weight
gradient backward. Before each forward the slice ``base + delta`` is written into the frozen weight
(a ``k``-row copy), so the forward is the plain ``F.linear``/``F.conv2d``; backward returns the input
gradient through that weight and only the slice's gradient:

- row    (delta ``[k, in]``):  ``g_delta = g_y[..., R]^T x``          saves ``x`` (or, where ``x``
  is a GELU or product output, the tensors autograd already keeps to recompute it: no extra memory)
- column (delta ``[out, k]``): ``g_delta = g_y^T x[..., C]``          saves only ``x[..., C]``
- sparse (delta ``[out, k]``, GPS pattern): ``g_delta[i, j] = (g_y^T x)[i, idx[i, j]]``, computed in
  blocks of rows so that no full ``[out, in]`` gradient ever exists.

``W - W_pre`` is ``delta`` on the slice and zero elsewhere, so the penalty never needs a copy of W.
``base`` holds the pre-trained values of the slice (slice-sized) so the weight can be restored.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from .selection import as_matrix

# Rows of the sparse slice gradient computed per block: bounds its transient to this many rows of W.
SPARSE_BLOCK_ROWS = 256


def read_slice(matrix: torch.Tensor, kind: str, index: torch.Tensor) -> torch.Tensor:
    if kind == "row":
        return matrix.index_select(0, index)
    if kind == "column":
        return matrix.index_select(1, index)
    return matrix.gather(1, index)


def write_slice(matrix: torch.Tensor, kind: str, index: torch.Tensor, values: torch.Tensor) -> None:
    """In place, outside autograd: ``matrix[slice] = values``."""
    if kind == "row":
        matrix.index_copy_(0, index, values)
    elif kind == "column":
        matrix.index_copy_(1, index, values)
    else:
        matrix.scatter_(1, index, values)


def slice_shape(kind: str, k: int, shape: tuple[int, int]) -> tuple[int, int]:
    out, inp = shape
    return (k, inp) if kind == "row" else (out, k)


def placeholder_index(kind: str, k: int, shape: tuple[int, int], device) -> torch.Tensor:
    """A valid index to allocate with before the probe has chosen (any distinct slots will do)."""
    if kind == "sparse":
        return torch.arange(k, device=device).expand(shape[0], k).contiguous()
    return torch.arange(k, device=device)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t.to(dtype)`` without the call when nothing changes (these run per layer per step)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _without_autocast(device_type: str):
    """The slice layers cast by hand; inside an autocast region, switch it off for their ops."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _sparse_slice_grad(grad_rows, index: torch.Tensor) -> torch.Tensor:
    """Gather ``G[i, index[i]]`` block by block; ``grad_rows(start, stop)`` returns ``G[start:stop]``."""
    out = index.shape[0]
    parts = []
    for start in range(0, out, SPARSE_BLOCK_ROWS):
        stop = min(start + SPARSE_BLOCK_ROWS, out)
        parts.append(grad_rows(start, stop).gather(1, index[start:stop]))
    return torch.cat(parts)


def _token_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^T @ b`` for ``a [tokens, m]`` with few columns (k or k+1) and ``b [tokens, n]``.

    On CPU, BLAS runs a product with so few output rows on one thread. Cutting the tokens into one
    part per thread and handing the parts to ``bmm``, which runs them in parallel, then adding the
    partial products, takes about half the time on two cores (the sum is over the same terms,
    grouped differently).
    """
    parts = torch.get_num_threads() if a.device.type == "cpu" else 1
    tokens = a.shape[0]
    if parts < 2 or tokens < 64 * parts:
        return a.t() @ b
    size = tokens // parts
    cut = size * parts
    out = torch.bmm(a[:cut].reshape(parts, size, -1).transpose(1, 2), b[:cut].reshape(parts, size, -1)).sum(0)
    if cut < tokens:
        out += a[cut:].t() @ b[cut:]
    return out


def _recompute_recipe(x: torch.Tensor):
    """``(tensors, fn)`` with ``fn(*tensors)`` equal to ``x`` bit for bit, where ``tensors`` are
    already kept alive by the autograd node that produced ``x``; else None.

    Row and sparse slices need the whole input in backward. When that input is the output of an
    elementwise op whose own backward keeps the op's inputs (ViT ``fc2`` after GELU, Llama
    ``down_proj`` after ``act(gate) * up``), saving those instead of ``x`` costs no memory, and
    backward recomputes ``x`` with the same kernel (one GELU or one multiply).
    """
    node = x.grad_fn
    if node is None or torch.compiler.is_compiling():
        return None
    name = type(node).__name__
    if name == "GeluBackward0":
        return (node._saved_self,), functools.partial(F.gelu, approximate=node._saved_approximate)
    if name == "MulBackward0":
        a, b = node._saved_self, node._saved_other
        if torch.is_tensor(a) and torch.is_tensor(b):
            return (a, b), torch.mul
    return None


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` whose result is never a view, so the model may edit it in place.

    For an input of 3 or more dimensions ``F.linear`` multiplies the flattened input and returns a
    view of that product, and autograd forbids in-place edits of a custom Function's output that is
    a view (Swin-V2 scales it, NaFlexViT, Longformer and RoCBert add to it). Here the product is
    written straight into a tensor of the output's shape: the same one ``addmm``/``mm`` call.
    """
    if x.dim() <= 2 or not x.is_contiguous():
        y = F.linear(x, weight, bias)
        return y.clone() if y._is_view() else y  # a transposed/strided input: rare, and copied
    y = x.new_empty(*x.shape[:-1], weight.shape[0])
    flat_x, flat_y = x.view(-1, x.shape[-1]), y.view(-1, weight.shape[0])
    if bias is None:
        torch.mm(flat_x, weight.t(), out=flat_y)
    else:
        torch.addmm(bias, flat_x, weight.t(), out=flat_y)
    return y


class _SlicedLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, bias, weight, index, kind):
        dtype = compute_dtype(x)
        with _without_autocast(x.device.type):
            xc = _cast(x, dtype)
            y = _linear(xc, _cast(weight, dtype), _cast(bias, dtype))
        ctx.recompute = None
        if kind == "column":
            ctx.save_for_backward(index, xc.index_select(-1, index))
        else:
            recipe = _recompute_recipe(x) if ctx.needs_input_grad[1] else None
            if recipe is None:
                ctx.save_for_backward(index, xc)
            else:
                ctx.save_for_backward(index, *recipe[0])
                ctx.recompute = recipe[1]
        ctx.weight, ctx.kind, ctx.compute_dtype = weight, kind, dtype
        ctx.dtypes = (x.dtype, delta.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        index, *saved = ctx.saved_tensors
        x_dtype, delta_dtype, bias_dtype = ctx.dtypes
        g = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = grad_delta = grad_bias = None
        if ctx.needs_input_grad[1]:
            x = saved[0] if ctx.recompute is None else _cast(ctx.recompute(*saved), ctx.compute_dtype)
            s = _cast(x.reshape(-1, x.shape[-1]), g.dtype)
            del x
            if ctx.kind == "row":
                grad_delta = _token_product(g.index_select(1, index), s)
            elif ctx.kind == "column":
                # (x_C^T g)^T, not g^T x_C: BLAS runs the [k, N] @ [N, out] product ~15x faster on
                # CPU than the equal [out, N] @ [N, k] one, whose output is k columns wide. With a
                # ones column appended the same product also gives the bias gradient (one pass over g).
                if ctx.needs_input_grad[2]:
                    both = _token_product(torch.cat([s, s.new_ones(s.shape[0], 1)], dim=1), g)
                    grad_delta, grad_bias = both[:-1].t(), _cast(both[-1], bias_dtype)
                else:
                    grad_delta = _token_product(s, g).t()
            else:
                grad_delta = _sparse_slice_grad(lambda a, b: g[:, a:b].t() @ s, index)
            grad_delta = _cast(grad_delta, delta_dtype)
            del s
        if ctx.needs_input_grad[0]:
            grad_x = _cast((g @ _cast(ctx.weight, g.dtype)).view(*grad_y.shape[:-1], -1), x_dtype)
        if ctx.needs_input_grad[2] and grad_bias is None:
            grad_bias = _cast(g.sum(0), bias_dtype)
        return grad_x, grad_delta, grad_bias, None, None, None


class _SlicedConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, bias, weight, index, kind, geometry):
        stride, padding, dilation = geometry
        dtype = compute_dtype(x)
        with _without_autocast(x.device.type):
            xc = _cast(x, dtype)
            y = F.conv2d(xc, _cast(weight, dtype), _cast(bias, dtype), stride, padding, dilation)
        if kind == "column":
            # Only the chosen (channel, ky, kx) features of every patch: [batch, k, positions].
            patches = F.unfold(xc, weight.shape[2:], dilation=dilation, padding=padding, stride=stride)
            saved = patches.index_select(1, index)
        else:
            saved = xc
        ctx.save_for_backward(saved, index)
        ctx.weight, ctx.kind, ctx.geometry, ctx.x_shape = weight, kind, geometry, x.shape
        ctx.dtypes = (x.dtype, delta.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        saved, index = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        x_dtype, delta_dtype, bias_dtype = ctx.dtypes
        weight = ctx.weight
        grad_x = grad_delta = grad_bias = None
        if ctx.needs_input_grad[0]:
            w = weight.to(grad_y.dtype)
            grad_x = conv2d_input(ctx.x_shape, w, grad_y, stride, padding, dilation).to(x_dtype)
        if ctx.needs_input_grad[1]:
            s = saved.to(grad_y.dtype)
            in_shape = weight.shape[1:]

            def grad_rows(channels: torch.Tensor | slice) -> torch.Tensor:
                g = grad_y[:, channels]
                w_shape = (g.shape[1], *in_shape)
                return conv2d_weight(s, w_shape, g, stride, padding, dilation).reshape(g.shape[1], -1)

            if ctx.kind == "row":
                grad_delta = grad_rows(index)
            elif ctx.kind == "column":
                # Per image [k, L] @ [L, out], then summed: several times faster than one einsum.
                grad_delta = torch.bmm(s, grad_y.flatten(2).transpose(1, 2)).sum(0).t()
            else:
                grad_delta = _sparse_slice_grad(lambda a, b: grad_rows(slice(a, b)), index)
            grad_delta = grad_delta.to(delta_dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_y.sum((0, 2, 3)).to(bias_dtype)
        return grad_x, grad_delta, grad_bias, None, None, None, None


class SlicedLayer:
    """Shared state of a slice-trainable layer (mixed into the Linear and Conv2d versions).

    Parameters and buffers it adds (all slice-sized):
      grft_delta  trainable ``W[slice] - W_pre[slice]``;
      grft_index  the chosen rows ``[k]``, columns ``[k]`` or entries ``[out, k]``;
      grft_base   ``W_pre[slice]``, to restore the weight and to fold;
      grft_selected  whether ``grft_index`` came from a probe (False: a placeholder);
      grft_bias_start  the bias when training started (anchor of the penalty).
    """

    grft_delta: nn.Parameter
    grft_index: torch.Tensor
    grft_base: torch.Tensor

    def _init_slice(self, base_layer: nn.Module, kind: str, k: int, index: torch.Tensor | None) -> None:
        object.__setattr__(self, "_grft_original", base_layer)  # not registered: restored by merge
        self.grft_kind = kind
        self.grft_probing = False
        weight = self.weight
        shape = tuple(self.matrix.shape)
        if index is None:
            index = placeholder_index(kind, k, shape, weight.device)
            selected = False
        else:
            selected = True
        index = index.to(device=weight.device, dtype=torch.long)
        self.register_buffer("grft_index", index.clone())
        self.register_buffer("grft_base", read_slice(self.matrix, kind, index).detach().clone())
        self.register_buffer("grft_selected", torch.tensor(selected, device=weight.device))
        if self.bias is not None:
            self.register_buffer("grft_bias_start", self.bias.detach().clone())
        self.grft_delta = nn.Parameter(
            torch.zeros(slice_shape(kind, k, shape), dtype=weight.dtype, device=weight.device)
        )
        weight.requires_grad_(False)

    @property
    def matrix(self) -> torch.Tensor:
        return as_matrix(self.weight)

    def write_delta(self) -> None:
        """Make ``weight[slice] == base + delta`` (done before each forward; cheap: slice-sized)."""
        with torch.no_grad():
            write_slice(self.matrix, self.grft_kind, self.grft_index, self.grft_base + self.grft_delta)

    @torch.no_grad()
    def set_index(self, index: torch.Tensor) -> None:
        """Fill in the probe's choice; the output stays that of the pre-trained layer (delta = 0)."""
        index = index.to(device=self.grft_index.device, dtype=torch.long)
        if index.shape != self.grft_index.shape:
            raise ValueError(
                f"index of shape {tuple(index.shape)} does not fit the allocated {tuple(self.grft_index.shape)}"
            )
        write_slice(self.matrix, self.grft_kind, self.grft_index, self.grft_base)  # restore W_pre
        self.grft_index.copy_(index)
        self.grft_base.copy_(read_slice(self.matrix, self.grft_kind, index))
        self.grft_delta.zero_()
        self.grft_selected.fill_(True)

    @torch.no_grad()
    def unwrap(self) -> nn.Module:
        """Fold the slice into the weight and hand back the original plain layer."""
        self.write_delta()
        return self._grft_original

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grft={self.grft_kind}, k={self.grft_index.shape[-1]}"


class SlicedLinear(SlicedLayer, nn.Linear):
    """``nn.Linear`` whose weight is frozen except for a trainable row/column/sparse slice."""

    def __init__(self, base: nn.Linear, kind: str, k: int, index: torch.Tensor | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self._init_slice(base, kind, k, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grft_probing:
            return F.linear(x, self.weight, self.bias)
        self.write_delta()
        return _SlicedLinearFn.apply(x, self.grft_delta, self.bias, self.weight, self.grft_index, self.grft_kind)


def numeric_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """A Conv2d's zero padding as numbers: ``"valid"`` is none, ``"same"`` is symmetric when every
    ``dilation * (kernel - 1)`` is even (else None: PyTorch pads one side more)."""
    if isinstance(conv.padding, tuple):
        return conv.padding
    if conv.padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
    if conv.padding == "same" and all(t % 2 == 0 for t in total):
        return (total[0] // 2, total[1] // 2)
    return None


class SlicedConv2d(SlicedLayer, nn.Conv2d):
    """``nn.Conv2d`` (groups=1) seen as an ``[out, in*kh*kw]`` matrix with a trainable slice."""

    def __init__(self, base: nn.Conv2d, kind: str, k: int, index: torch.Tensor | None = None):
        nn.Module.__init__(self)
        for attr in (
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "transposed",
            "output_padding",
            "groups",
            "padding_mode",
            "_reversed_padding_repeated_twice",
        ):
            setattr(self, attr, getattr(base, attr))
        self.padding = numeric_padding(base)
        self.weight, self.bias = base.weight, base.bias
        self._init_slice(base, kind, k, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grft_probing:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        self.write_delta()
        geometry = (self.stride, self.padding, self.dilation)
        return _SlicedConv2dFn.apply(
            x, self.grft_delta, self.bias, self.weight, self.grft_index, self.grft_kind, geometry
        )


class SlicedConv1D(SlicedLayer, nn.Module):
    """transformers' ``Conv1D`` (GPT-2: ``y = x W + b``, weight stored ``[in, out]``) with a slice.

    Its matrix is the transposed view ``W^T [out, in]``, so a row is an output neuron, as for
    ``nn.Linear``; the product is the Linear one on that view, and merge gives back the ``Conv1D``.
    """

    grft_transposed = True

    def __init__(self, base: nn.Module, kind: str, k: int, index: torch.Tensor | None = None):
        nn.Module.__init__(self)
        self.nf, self.nx = base.nf, base.weight.shape[0]
        self.weight, self.bias = base.weight, base.bias
        self._init_slice(base, kind, k, index)

    @property
    def matrix(self) -> torch.Tensor:
        return self.weight.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grft_probing:
            return F.linear(x, self.weight.t(), self.bias)
        self.write_delta()
        return _SlicedLinearFn.apply(x, self.grft_delta, self.bias, self.weight.t(), self.grft_index, self.grft_kind)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}, grft={self.grft_kind}, k={self.grft_index.shape[-1]}"


def conv1d_type() -> type | None:
    """transformers' ``Conv1D`` (GPT-2's ``[in, out]`` linear) if transformers is loaded (a model can only hold
    one if it is); never imported here, so the library does not load transformers."""
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    kind = conv1d_type()
    return kind is not None and isinstance(module, kind)


def make_sliced(layer: nn.Module, kind: str, k: int, index: torch.Tensor | None = None) -> SlicedLayer:
    if isinstance(layer, nn.Conv2d):
        return SlicedConv2d(layer, kind, k, index)
    if is_conv1d(layer):
        return SlicedConv1D(layer, kind, k, index)
    return SlicedLinear(layer, kind, k, index)

"""A Linear layer's per-batch weight gradient added into the probe's sum a block of rows at a time.

Why: autograd makes each batch's gradient of a weight whole, a weight-sized tensor, before the probe
adds it to that weight's sum (``grft.accumulation``), so a probe pass holds two weight-sized tensors
for its largest matrix: the sum and the batch's gradient (Llama-3.2-1B's MLP: 2 x 64 MiB in fp32).
For ``nn.Linear`` the batch's gradient is ``g^T x`` (``g`` the gradient reaching the layer's output,
``x`` its input, both flattened to ``[tokens, features]``), and a block of its rows is the same
product over a block of ``g``'s columns. Added block by block, the transient is one block.

Exact: adding a block into the sum is the same elementwise addition as adding the whole gradient,
and each block's entries are the dot products over the tokens that autograd's one product computes,
provided the BLAS computes a block's rows by the same kernels as in the whole product. Blocks
therefore start on 64-row boundaries and are never thinner than 64 rows (``row_blocks``): with that,
float32 and float64, odd sizes included, equal autograd's gradient bit for bit on CPU (MKL), which
the tests check; with thin or unaligned blocks they did not (a 3-row block went another way). A
BLAS elsewhere (a GPU's) might still round a block otherwise; the one-pass probe and the probe in
passes sum the same way, so the number of passes never changes a bit either way.

Where it is safe, and only there (elsewhere the weight's gradient comes from autograd, as before):

- the layer is an ``nn.Linear`` (or the probe-time plain forward of ``grft.layers.SlicedLinear``)
  computing in float32 or float64 throughout, outside autocast, on a contiguous input;
- it sits outside the checkpointed blocks: there autograd keeps ``x`` for the weight's gradient
  anyway, so holding it until backward costs nothing (inside a checkpointed block it would);
- its weight is reached once in this batch's graph, by this one call (a layer called twice, or a
  weight tied to another use, is left to autograd, which adds the uses up before the sum does);
- the model did not change the output in place afterwards, itself or through a view (its version
  counter tells; Swin-V2 scales a projection's output in place, NaFlexViT, Longformer and RoCBert
  add to one: with such an edit the gradient a hook on the output receives is not the layer's).

The hook that receives ``g`` is registered on the layer's output as the layer returns it, and the
pass's backward asks for the gradient at that output (its gradient edge, so nothing is stored in
``.grad``). The output is held until backward for the version check: most outputs are kept by
autograd anyway (the next operation saves them), the others are a layer's output, not a weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge

from .layers import SlicedLinear
from .selection import RANK_CHUNK_ELEMENTS

# Entries of one block of the batch's gradient: the ranking's chunk (4 MiB in float32); blocks
# hold whole multiples of ROW_ALIGNMENT rows (row_blocks).
BLOCK_ELEMENTS = RANK_CHUNK_ELEMENTS
ROW_ALIGNMENT = 64
DIRECT_DTYPES = (torch.float32, torch.float64)


def plain_linear(layer: nn.Module, probing: bool | None = None) -> bool:
    """Whether ``layer``'s forward is ``F.linear(x, weight, bias)`` (a sliced layer's, while probing:
    now, or with ``probing=True`` once the probe runs)."""
    probing = layer.grft_probing if probing is None and isinstance(layer, SlicedLinear) else probing
    return type(layer).forward is nn.Linear.forward or (
        isinstance(layer, SlicedLinear) and type(layer).forward is SlicedLinear.forward and bool(probing)
    )


def row_blocks(rows: int, width: int) -> list[tuple[int, int]]:
    """``[start, stop)`` blocks of the product's rows: about ``BLOCK_ELEMENTS`` entries each, in whole
    multiples of ``ROW_ALIGNMENT`` rows from row 0, the last one taking any remainder.

    Why so: a BLAS tiles a product's rows from the first one; blocks that start on a tile boundary,
    none of them thinner than a tile group, are computed by the kernels that compute those rows in
    the whole product (a block of a few rows may go to another kernel, whose sums round otherwise).
    """
    size = max(ROW_ALIGNMENT, BLOCK_ELEMENTS // max(1, width) // ROW_ALIGNMENT * ROW_ALIGNMENT)
    starts = list(range(0, rows, size))
    if len(starts) > 1 and rows - starts[-1] < size:
        starts.pop()
    return list(zip(starts, [*starts[1:], rows], strict=True))


def add_weight_gradient(total: torch.Tensor, grad_output: torch.Tensor, x: torch.Tensor) -> None:
    """``total += g^T x`` over the flattened tokens, a block of rows at a time (``row_blocks``)."""
    g = grad_output.reshape(-1, grad_output.shape[-1])
    x = x.reshape(-1, x.shape[-1])
    for start, stop in row_blocks(g.shape[1], x.shape[1]):
        total[start:stop].add_(g[:, start:stop].t().mm(x))


def _adder(total: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], None]:
    return lambda g, x: add_weight_gradient(total, g, x)


class _Call:
    """One call of a layer in the current batch: its output (and the output's version then), the
    output's gradient edge, and its input."""

    def __init__(self, out: torch.Tensor, x: torch.Tensor):
        self.out = out
        self.version = out._version
        self.edge = get_gradient_edge(out)
        self.x = x
        self.direct = False  # set before backward: whether the hook adds into the sum

    def edited(self) -> bool:
        """Whether the model changed the output in place after the layer (or through a view of it)."""
        return self.out._version != self.version


def _counts_of_weight_edges(roots: list, weights: set[int]) -> dict[int, int]:
    """How many edges of the graph below ``roots`` lead into each of ``weights``' gradient accumulators."""
    counts = dict.fromkeys(weights, 0)
    seen: set[int] = set()
    stack = [node for node in roots if node is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for next_node, _ in node.next_functions:
            if next_node is None:
                continue
            variable = getattr(next_node, "variable", None)
            if variable is not None:
                if id(variable) in counts:
                    counts[id(variable)] += 1
                continue
            stack.append(next_node)
    return counts


class DirectSums:
    """For the layers of one probe pass's group: each batch's weight gradient added straight into
    ``sums`` (name -> the weight-shaped sum) where that is safe, and the backward targets.

    ``layers``: the group's layers that may sum directly (plain Linear, outside the checkpointed
    blocks); ``sums``: per layer, the weight-shaped sum of ``grft.accumulation.FlatAccumulator``,
    or a callable ``sink(g, x)`` that takes the batch's factors instead (``grft.deferred_sums``).
    Use as a context manager around the pass; call ``targets`` after each forward, before backward,
    and ``done`` after each backward.
    """

    def __init__(self, layers: dict[str, nn.Module], sums: dict[str, torch.Tensor | Callable]):
        self.layers = layers
        self.sinks = {name: _adder(sums[name]) if torch.is_tensor(sums[name]) else sums[name] for name in layers}
        self.calls: dict[str, list[_Call]] = {}
        self._handles = []

    def __enter__(self) -> DirectSums:
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._recorder(name)))
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.done()
        return False

    def _recorder(self, name: str):
        def record(layer, args, out):
            x = args[0] if args else None
            if not (torch.is_tensor(x) and torch.is_tensor(out) and out.requires_grad and out.grad_fn is not None):
                self.calls.setdefault(name, []).append(None)  # a call this cannot follow: autograd's
                return None
            call = _Call(out, x)
            ok = (
                x.is_contiguous()
                and x.dtype == out.dtype == layer.weight.dtype
                and x.dtype in DIRECT_DTYPES
                and not torch.is_autocast_enabled(x.device.type)
            )
            self.calls.setdefault(name, []).append(call if ok else None)
            if ok:
                sink = self.sinks[name]

                def take(grad: torch.Tensor) -> None:
                    if call.direct:
                        sink(grad, call.x)

                out.register_hook(take)
            return None

        return record

    def targets(self, roots: list, other_weights: list[torch.Tensor]) -> list:
        """The gradient edges of the layers summed directly in this batch, and the weights left to
        autograd; ``roots``: the grad_fn(s) backward starts from."""
        weights = {id(layer.weight): name for name, layer in self.layers.items()}
        counts = _counts_of_weight_edges(roots, set(weights)) if self.calls else {}
        out: list = []
        left: dict[int, torch.Tensor] = {id(w): w for w in other_weights}
        for name, layer in self.layers.items():
            calls = self.calls.get(name, [])
            single = len(calls) == 1 and calls[0] is not None and not calls[0].edited()
            if single and counts.get(id(layer.weight)) == 1:
                calls[0].direct = True
                out.append(calls[0].edge)
            else:
                left[id(layer.weight)] = layer.weight
        return out + list(left.values())

    def done(self) -> None:
        """After a batch's backward (or before a batch): let go of its inputs and edges. The hook on
        an output holds its call, and the call's edge holds the output's node, which holds the hook:
        a cycle through autograd's C++ graph that Python's garbage collector cannot break, so the
        links are cut here."""
        for calls in self.calls.values():
            for call in calls:
                if call is not None:
                    call.edge = call.x = call.out = None
        self.calls.clear()

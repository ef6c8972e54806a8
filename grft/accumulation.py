"""Where the low-memory probe sums ``H``: one flat buffer, filled as soon as each gradient exists.

Eq. 4 squares ``H`` summed over every probe batch, so one weight-sized sum per matrix must live
through the whole probe; that is the minimum. What this module avoids is everything around it:

- all sums live in one flat buffer per (device, dtype), allocated before the first batch. Left to
  autograd, each ``.grad`` is allocated during the first backward pass, between the activations of
  that pass, and the long-lived gradients pin the allocator's heap in place (on CPU that showed as
  a few hundred MB of resident memory above the live tensors); one large buffer is mapped apart.
- each weight's per-batch gradient is added into its sum by a post-accumulate-grad hook the moment
  autograd has produced it, and released there, so no second weight-sized copy waits for the
  end of the backward pass. A plain Linear layer outside the checkpointed blocks does not even make
  it whole: its gradient goes into the sum a block of rows at a time (``grft.direct_sums``).
- under torch.distributed the sum over ranks is one ``all_reduce`` per buffer, not one per matrix.

The sum is taken in the weight's dtype promoted to at least float32. For float32 and float64
weights that is exactly autograd's own accumulation (``grad += new``, the same additions in the
same order), so ``H`` equals the plain probe's bit for bit; half-precision weights, whose plain
``.grad`` would be summed in half precision, are summed in float32 here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class GradientTakers:
    """A context manager that hands each weight's gradient, once autograd has made it, to its
    taker (``_taker(name)``, a post-accumulate-grad hook) for the weights in ``self._weights``."""

    _weights: dict[str, nn.Parameter]

    def _taker(self, name: str):
        raise NotImplementedError

    def __enter__(self):
        self._handles = [w.register_post_accumulate_grad_hook(self._taker(n)) for n, w in self._weights.items()]
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False


class FlatAccumulator(GradientTakers):
    """Sums each weight's gradient into a view of a flat buffer; use as a context manager."""

    def __init__(self, weights: dict[str, nn.Parameter]):
        # A weight shared by several layers gets one sum (and one hook), as it has one ``.grad``.
        first = {}
        for name, w in weights.items():
            first.setdefault(id(w), name)
        groups: dict[tuple[torch.device, torch.dtype], list[str]] = {}
        for name in first.values():
            w = weights[name]
            groups.setdefault((w.device, torch.promote_types(w.dtype, torch.float32)), []).append(name)
        self.buffers: list[torch.Tensor] = []
        self.sums: dict[str, torch.Tensor] = {}
        for (device, dtype), names in groups.items():
            flat = torch.zeros(sum(weights[n].numel() for n in names), dtype=dtype, device=device)
            offset = 0
            for n in names:
                size = weights[n].numel()
                self.sums[n] = flat[offset : offset + size].view(weights[n].shape)
                offset += size
            self.buffers.append(flat)
        self.sums = {n: self.sums[first[id(w)]] for n, w in weights.items()}  # the caller's order
        self._weights = {name: weights[name] for name in first.values()}
        self._handles = []

    def _taker(self, name: str):
        total = self.sums[name]

        def add(weight: torch.Tensor) -> None:
            total.add_(weight.grad)
            weight.grad = None

        return add

    def all_reduce(self) -> None:
        """Sum every buffer over the ranks of the default process group."""
        for flat in self.buffers:
            dist.all_reduce(flat)

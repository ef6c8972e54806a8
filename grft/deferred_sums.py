"""A weight whose gradient sum is larger than the probe's budget, summed after its pass a block of rows at a time.

Why: a probe pass holds the weight-sized sum ``H`` of every weight in its group (``grft.passes``);
one weight per pass is the least it can hold that way. Where a single sum is larger than the room
the budget leaves (the 2-layer Llama-3.2-1B shape's MLP: 64 MiB in float32, against about the
activations of one block that LoRA's training holds besides the weights), no number of passes fits.
Such a weight is *deferred*: its pass sums nothing. Each batch's factors of its gradient go to disk
(``g`` at the layer's output and the layer's input ``x`` where ``grft.direct_sums`` applies, else
autograd's whole per-batch gradient), and after the pass, with the pass's activations freed, ``H``
is summed and ranked a block of rows at a time (``RowParts``, ``grft.selection.Ranking``): the
probe then holds one block of ``H``, never the whole sum.

Exact: a block of ``H`` is the same additions as in the whole sum (zeros, then each batch in
order), each batch's block the same products (``grft.direct_sums.add_weight_gradient`` over the
same row blocks) or the same slice of autograd's gradient; block boundaries fall on the row blocks
of ``grft.direct_sums`` and on the ranking's chunks (``part_bounds``), so the ranking is the same
bits too. Only Linear and Conv2d weights (whose rows are the matrix's rows) are deferred;
transformers' ``Conv1D`` stores its matrix transposed, and stays whole.

A deferred weight ends its pass's group (``grft.passes``), so it sits in the top block the pass
runs plainly and a plain Linear's gradient reaches the disk as ``(g, x)``, never whole. Where it
comes whole anyway (a Conv2d; a layer called twice; a pass from the loss whose group lies below the
last block, where the blocks do not form a chain and the weight's block is checkpointed), the pass
holds that one gradient while it is written, as the probe without deferral would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .accumulation import GradientTakers
from .direct_sums import row_blocks
from .layers import is_conv1d
from .selection import LayerSelection, Ranking, chunk_rows


def deferrable(layer: nn.Module) -> bool:
    """Whether ``layer``'s weight rows are its matrix rows (Linear, Conv2d; not a transposed Conv1D)."""
    return not (is_conv1d(layer) or getattr(layer, "grft_transposed", False))


def part_bounds(shape: torch.Size | tuple[int, ...], part_bytes: float, itemsize: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row blocks of a weight's ``H``, each about ``part_bytes`` at most.

    Every boundary is both a start of ``grft.direct_sums.row_blocks`` (so a block's products are
    the whole sum's) and a multiple of the ranking's chunk (``grft.selection.chunk_rows``). A block
    is wider than ``part_bytes`` only where no such boundary lies within reach (at worst the one
    block is the whole weight).
    """
    rows, width = shape[0], math.prod(shape[1:])
    step = chunk_rows(width)
    allowed = [start for start, _ in row_blocks(rows, width) if start > 0 and start % step == 0]
    per_part = max(1, int(part_bytes // max(1, width * itemsize)))
    bounds, last = [0], None
    for s in allowed:
        if s - bounds[-1] > per_part and last is not None:
            bounds.append(last)
        if s - bounds[-1] > per_part:  # no boundary within reach: this block is wider
            bounds.append(s)
            last = None
        else:
            last = s
    if rows - bounds[-1] > per_part and last is not None and last > bounds[-1]:
        bounds.append(last)
    return list(zip(bounds, [*bounds[1:], rows], strict=True))


class DeferredSums(GradientTakers):
    """The per-batch gradient factors of a pass's deferred weights, kept on disk; use as a context
    manager around the pass. Set ``position`` before each batch. ``sink(name)`` is where
    ``grft.direct_sums`` sends ``(g, x)``; a batch that goes through autograd instead leaves its
    whole gradient, taken by a post-accumulate-grad hook. ``parts(name)`` gives ``H`` afterwards."""

    def __init__(self, layers: dict[str, nn.Module], bounds: dict[str, list[tuple[int, int]]], folder: Path):
        first: dict[int, str] = {}
        for name, layer in layers.items():
            first.setdefault(id(layer.weight), name)
        self.names = {
            name: first[id(layer.weight)] for name, layer in layers.items()
        }  # name -> its weight's first name
        self._weights = {name: layers[name].weight for name in first.values()}
        self.bounds = bounds
        self.folder = folder
        self.position = 0
        self._folders = {name: folder / str(i) for i, name in enumerate(self._weights)}
        for path in self._folders.values():
            path.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self._folders[self.names[name]] / f"{self.position}.pt"

    def _taker(self, name: str):
        def keep(weight: torch.Tensor) -> None:
            self._save(name, {"grad": weight.grad})
            weight.grad = None

        return keep

    def sink(self, name: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        """Where a directly summed layer sends a batch's ``(g, x)``: to disk, for after the pass."""
        return lambda g, x: self._save(name, {"g": g, "x": x})

    def _save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        path = self._path(name)
        if path.exists():
            raise ValueError(f"the probe's deferred weight {name!r} got a second gradient in one batch")
        # A view would save its whole storage; a contiguous copy of just the tensor is written.
        try:
            _write({k: _own_storage(v.detach()) for k, v in tensors.items()}, path)
        except OSError as err:
            raise OSError(
                f"the probe could not keep the gradient factors of {name!r} in {self.folder} ({err}): free disk "
                "space there or point TMPDIR at a larger disk, or raise probe.memory so that no sum is deferred"
            ) from err

    def parts(self, name: str) -> RowParts:
        """``H`` of ``name``'s weight, a block of rows at a time (read from the kept factors)."""
        first = self.names[name]
        return RowParts(self._weights[first], self.bounds[first], self._folders[first])


def _write(tensors: dict[str, torch.Tensor], path: Path) -> None:
    torch.save(tensors, path)


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t.cpu()


class RowParts:
    """``H`` of one deferred weight, made block by block from its kept per-batch factors.

    Iterating yields ``(start, block)`` top to bottom, each block weight-shaped ``[rows, ...]`` in
    the weight's store dtype (at least float32), summed over every rank under torch.distributed.
    """

    def __init__(self, weight: torch.Tensor, bounds: list[tuple[int, int]], folder: Path):
        self.shape = tuple(weight.shape)
        self.dtype = torch.promote_types(weight.dtype, torch.float32)
        self.device = weight.device
        self.bounds = bounds
        self.folder = folder
        self.nonzero = False  # whether any block seen so far had a nonzero entry

    def _batches(self) -> list[Path]:
        return sorted(self.folder.glob("*.pt"), key=lambda p: int(p.stem))

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        batches = self._batches()
        for start, stop in self.bounds:
            block = torch.zeros((stop - start, *self.shape[1:]), dtype=self.dtype, device=self.device)
            for path in batches:
                kept = torch.load(path, map_location=self.device, weights_only=True)
                if "grad" in kept:
                    block.add_(kept["grad"][start:stop])
                else:
                    _add_rows(block, start, stop, kept["g"], kept["x"])
                del kept
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(block)
            self.nonzero = self.nonzero or bool(block.any())
            yield start, block
            del block

    def whole(self) -> torch.Tensor:
        """The whole ``H`` (for tests and callers that need it: the point of deferring is not to)."""
        return torch.cat([block for _, block in self], dim=0)

    def select(self, kind: str, k: int) -> LayerSelection:
        """Eq. 4-5 on this ``H``, block by block (``grft.selection.Ranking``)."""
        matrix = (self.shape[0], math.prod(self.shape[1:]))
        ranking = Ranking(kind, k, matrix)
        for _, block in self:
            ranking.add(block)
        return LayerSelection(ranking.indices().cpu(), matrix)


def _add_rows(block: torch.Tensor, start: int, stop: int, g: torch.Tensor, x: torch.Tensor) -> None:
    """``block += (g^T x)[start:stop]``, by the row blocks ``grft.direct_sums`` uses for the whole product."""
    g = g.reshape(-1, g.shape[-1])
    x = x.reshape(-1, x.shape[-1])
    for a, b in row_blocks(g.shape[1], x.shape[1]):
        if a >= start and b <= stop:
            block[a - start : b - start].add_(g[:, a:b].t().mm(x))

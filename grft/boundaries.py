"""Probe passes that start from a kept gradient at a block boundary instead of from the loss.

Why: a probe in passes (``grft.passes``) sums the gradients of one group of layers per pass. Run
from the loss, every pass back-propagates through all the blocks above its group, and that, not its
own group, is most of its time (Llama-3.2-1B in 16 one-layer passes: each costs about one training
step). The gradient that reaches a group from above is the same in every pass: the loss's
gradient with respect to the hidden state leaving the group's highest block. So the passes run
from the top group down, each pass keeps that gradient for the next one (one tensor per batch, in a
temporary folder: a dataset's worth would not fit in the memory the passes save), and the next pass
runs the network only up to its group's highest block and back-propagates the kept gradient from
there. The gradients are the same operations on the same values, bit for bit.

That is only exact when the blocks form a chain: everything a block computes reaches the loss
through the next block's input (or, for the last block, through the head). A model that also
hands an earlier block's output or an inner tensor to a later block or to the head (an
encoder-decoder's cross-attention, a head pooling several layers, a weight shared between
blocks) is not a chain; there every pass starts from the loss. ``chain_segments`` decides it from
autograd's graph of one forward pass, no guess about the architecture: every block's output is cut
into a leaf of its own, and the graph must show each block reading only its predecessor's leaf and
the eligible weights that it alone reads.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .checkpointing import _hidden_state


class NoLoss(Exception):
    """The batch given to ``chain_segments`` has no probe loss (nothing to contrast)."""


class StopForward(Exception):
    """Raised after the block a pass starts from: the rest of the network is not needed."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__("stop after the pass's start block")
        self.hidden = hidden


def _with_hidden(out: object, hidden: torch.Tensor) -> object:
    """``out`` with its hidden state (the tensor, or a tuple's first element) replaced."""
    if torch.is_tensor(out):
        return hidden
    return type(out)((hidden, *out[1:])) if isinstance(out, tuple) else [hidden, *out[1:]]


def _references(root) -> set[int]:
    """ids of the tensors whose gradient accumulates at the leaves autograd reaches from ``root``."""
    found: set[int] = set()
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            found.add(id(variable))
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


@contextlib.contextmanager
def eligible_weights_only(model: nn.Module, layers: dict[str, nn.Module]) -> Iterator[None]:
    """Inside the block the eligible weights, and no other parameter, require grad (as in the
    one-pass probe); every parameter's flag is restored after."""
    saved = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in layers.values():
            layer.weight.requires_grad_(True)
        yield
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)


def chain_segments(
    model: nn.Module, blocks: list[nn.Module], layers: dict[str, nn.Module], forward
) -> dict[str, int] | None:
    """Which segment each eligible layer lies in, or ``None`` if the blocks do not form a chain.

    Segment ``b`` (0 .. n-1) is block ``b`` (segment 0 also holds the layers before the first
    block); segment ``n`` is what comes after the last block. ``forward()`` runs the model once
    (the caller's probe loss on one batch) and returns the loss. Nothing is kept for backward: the
    graph's shape is all this reads. The layers must also come in segment order in ``layers``
    (module order), since a pass's group is a contiguous run of them.
    """
    n = len(blocks)
    leaves: list[torch.Tensor | None] = [None] * n
    outputs: list[torch.Tensor | None] = [None] * n
    calls = [0] * n

    def cutter(i: int):
        def cut(_module, _args, out):
            calls[i] += 1
            hidden = _hidden_state(out)
            if hidden is None or not hidden.is_floating_point():
                return None
            outputs[i] = hidden
            leaves[i] = hidden.detach().requires_grad_(True)
            return _with_hidden(out, leaves[i])

        return cut

    weights = {id(layer.weight): name for name, layer in layers.items()}
    handles = [block.register_forward_hook(cutter(i)) for i, block in enumerate(blocks)]
    try:
        # The graph without its saved tensors: its shape is all that is read.
        with (
            eligible_weights_only(model, layers),
            torch.enable_grad(),
            torch.autograd.graph.saved_tensors_hooks(lambda _t: None, lambda _t: None),
        ):
            try:
                loss = forward()
            except RuntimeError:  # e.g. an in-place operation on a block's output, now a leaf: not cut here
                return None
            if loss is None:
                raise NoLoss()
            if not loss.requires_grad or calls != [1] * n or any(v is None for v in leaves):
                return None
            segments = [_references(out.grad_fn if out is not None else None) for out in outputs]
            segments.append(_references(loss.grad_fn))
            del loss
    finally:
        for h in handles:
            h.remove()
    leaf_ids = {id(leaf): i for i, leaf in enumerate(leaves)}
    owner: dict[str, int] = {}
    for segment, refs in enumerate(segments):
        for ref in refs:
            if ref in leaf_ids:
                if leaf_ids[ref] != segment - 1:  # a block (or the head) reads more than its predecessor
                    return None
            elif ref in weights:
                if owner.setdefault(weights[ref], segment) != segment:  # a weight read in two segments
                    return None
    # A weight no segment reads (an unused head, a pooler the classifier skips) gets no gradient in
    # any pass; it joins the segment of the layer before it in module order.
    segments_of: dict[str, int] = {}
    previous = 0
    for name, layer in layers.items():
        previous = owner.get(weights[id(layer.weight)], previous)
        segments_of[name] = previous
    order = list(segments_of.values())
    return segments_of if order == sorted(order) else None


class BoundaryGradients:
    """The loss's gradient at one block's output, one tensor per probe batch, kept on disk."""

    def __init__(self, block: int, folder: Path):
        self.block = block
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, position: int, grad: torch.Tensor) -> None:
        torch.save(grad.detach().to("cpu", copy=True), self.folder / f"{position}.pt")

    def get(self, position: int, device: torch.device) -> torch.Tensor:
        return torch.load(self.folder / f"{position}.pt", map_location=device, weights_only=True)

    def drop(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def kept_gradients_folder() -> Iterator[Path]:
    """A temporary folder (under ``$TMPDIR``) for the boundary gradients, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="grft-probe-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def stop_after(block: nn.Module) -> Iterator[None]:
    """The model's forward pass ends (``StopForward``) once ``block`` has run."""

    def stop(_module, _args, out):
        hidden = _hidden_state(out)
        raise StopForward(hidden)

    handle = block.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def capture_gradient(block: nn.Module, sink: dict) -> Iterator[None]:
    """Puts in ``sink`` the hidden state leaving ``block`` (``"hidden"``) and a dict that receives
    the gradient reaching it in backward (``"received"``, whose ``"grad"`` is absent if none does).

    Where nothing below the output needs a gradient in this pass, the output is made a leaf that
    requires one, so backward reaches it (through the blocks between it and the pass's group).
    The hook writes to a dict of its own, not to ``sink``: ``sink`` holds the hidden state, which
    holds the hook, and a cycle through a tensor's hooks is one Python's garbage collector cannot
    see; it would keep the batch's hidden state and its autograd graph alive after the probe.
    """

    def hook(_module, _args, out):
        hidden = _hidden_state(out)
        if hidden is None:
            return None
        if not hidden.requires_grad:
            hidden = hidden.detach().requires_grad_(True)
            out = _with_hidden(out, hidden)
        received: dict[str, torch.Tensor] = {}
        sink["hidden"], sink["received"] = hidden, received
        hidden.register_hook(lambda grad: received.__setitem__("grad", grad.detach().clone()))
        return out

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def checksum(hidden: torch.Tensor) -> float:
    """A float64 sum of a hidden state: a later pass that starts from a boundary must see the first
    pass's value there (else the batches or their random draws changed between passes)."""
    return float(hidden.detach().to(torch.float64).sum())


@contextlib.contextmanager
def cut_inputs(blocks: list[nn.Module]) -> Iterator[None]:
    """Each of ``blocks`` reads its input as a new leaf (the same values, needing a gradient where
    the input did): backward stops there, so the layers below it, whose weights require grad only so
    that every operation runs as in the one-pass probe, get no backward pass."""

    def cut(_module, args):
        if args and torch.is_tensor(args[0]) and args[0].requires_grad:
            return (args[0].detach().requires_grad_(True), *args[1:])
        return None

    handles = [block.register_forward_pre_hook(cut) for block in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()

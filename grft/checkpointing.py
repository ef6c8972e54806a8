"""Activation checkpointing of a model's blocks, switched on for the gradient probe only.

Why: the probe back-propagates the SCL loss through the whole network (two views per image), so
without checkpointing it holds every block's activations for twice the training batch at once, and
that, not training, was a GRFT run's memory peak. Each block here keeps only its input during the
forward pass and recomputes its inside during backward (``torch.utils.checkpoint``, the
non-reentrant form: it also back-propagates into the weights of a block whose input needs no
gradient, e.g. a language model's first layer after the frozen token embedding). The recomputation
runs the same operations on the same values with the random state of the first pass restored, so
the gradients are the plain probe's, bit for bit; it costs one more forward pass of the blocks.

The last block is the exception: backward starts with it, so recomputing it would rebuild at once
what its forward pass just freed, and the probe's peak (every block's input plus one block's
inside) is the same either way; keeping its activations saves that block's second forward pass.

On CPU the heap's free pages are handed back to the system after each block's forward pass and
before each block's backward (``grft.heap``): the probe's mix of tensor sizes otherwise leaves
hundreds of MB of freed but resident heap, more than the live tensors the checkpointing saves.

It wraps the block list ``Architecture.blocks`` names rather than switching on timm's or
transformers' own checkpointing flags: those act only in training mode (transformers) or differ in
how they are turned off again, and the probe must behave the same in either mode on any model the
framework accepts. Hugging Face models run with ``use_cache=False`` meanwhile (what their own
checkpointing does), since a key/value cache would be extended again on recomputation.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .heap import release_free_pages
from .targets import Architecture, block_names


def _hidden_state(out: object) -> torch.Tensor | None:
    """A block's output tensor, or the first element of the tuple a transformers layer returns."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    return None


def _release_on_backward(grad: torch.Tensor) -> None:
    release_free_pages()  # returns None: the gradient passes on unchanged


def _release_around(out: object) -> None:
    """Free heap pages now (the block's forward is done) and again when backward reaches the block."""
    hidden = _hidden_state(out)
    if hidden is None or hidden.device.type != "cpu" or not torch.is_grad_enabled():
        return
    release_free_pages()
    if hidden.requires_grad:
        hidden.register_hook(_release_on_backward)


def _probe_forward(forward, recompute: bool):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        out = checkpoint(forward, *args, use_reentrant=False, **kwargs) if recompute else forward(*args, **kwargs)
        _release_around(out)
        return out

    return run


@contextlib.contextmanager
def checkpointed_blocks(model: nn.Module, arch: Architecture) -> Iterator[int]:
    """Inside the block, every block of ``arch.blocks`` but the last recomputes its activations in backward.

    Yields the number of blocks checkpointed; the model is exactly as before on exit.
    """
    blocks = [model.get_submodule(name) for name in block_names(model, arch)]  # one list, or a staged model's
    config = getattr(model, "config", None)
    cache = getattr(config, "use_cache", None)
    patched = []
    try:
        if cache:
            config.use_cache = False
        for i, block in enumerate(blocks):
            had_own = "forward" in vars(block)
            patched.append((block, had_own, vars(block).get("forward")))
            block.forward = _probe_forward(block.forward, recompute=i < len(blocks) - 1)
        yield max(len(blocks) - 1, 0)
    finally:
        for block, had_own, own in patched:
            if had_own:
                block.forward = own
            else:
                del block.forward
        if cache:
            config.use_cache = cache

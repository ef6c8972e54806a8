"""Activation checkpointing of a model's blocks, switched on for the gradient probe only.

Why: the probe back-propagates the SCL loss through the whole network (two views per image), so
without checkpointing it holds every block's activations for twice the training batch at once, and
that, not training, was a GRFT run's memory peak. Each block here keeps only its input during the
forward pass and recomputes its inside during backward (``torch.utils.checkpoint``, the
non-reentrant form: it also back-propagates into the weights of a block whose input needs no
gradient, e.g. a language model's first layer after the frozen token embedding). The recomputation
runs the same operations on the same values with the random state of the first pass restored, so
the gradients are the plain probe's, bit for bit; it costs one more forward pass of the blocks.

It wraps the block list ``Architecture.blocks`` names rather than switching on timm's or
transformers' own checkpointing flags: those act only in training mode (transformers) or differ in
how they are turned off again, and the probe must behave the same in either mode on any model the
framework accepts. Hugging Face models run with ``use_cache=False`` meanwhile (what their own
checkpointing does), since a key/value cache would be extended again on recomputation.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

from torch import nn
from torch.utils.checkpoint import checkpoint

from .targets import Architecture, block_names


def _checkpointed(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


@contextlib.contextmanager
def checkpointed_blocks(model: nn.Module, arch: Architecture) -> Iterator[int]:
    """Inside the block, every block of ``arch.blocks`` recomputes its activations in backward.

    Yields the number of blocks wrapped; the model is exactly as before on exit.
    """
    blocks = [model.get_submodule(name) for name in block_names(model, arch)]  # one list, or a staged model's
    config = getattr(model, "config", None)
    cache = getattr(config, "use_cache", None)
    patched = []
    try:
        if cache:
            config.use_cache = False
        for block in blocks:
            had_own = "forward" in vars(block)
            patched.append((block, had_own, vars(block).get("forward")))
            block.forward = _checkpointed(block.forward)
        yield len(blocks)
    finally:
        for block, had_own, own in patched:
            if had_own:
                block.forward = own
            else:
                del block.forward
        if cache:
            config.use_cache = cache

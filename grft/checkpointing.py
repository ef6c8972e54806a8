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
The same holds for the block a probe pass stops after (``last``), whose backward starts from a
kept gradient.

On CPU the heap's free pages are handed back to the system after each block's forward pass and
before each block's backward (``grft.heap``): the probe's mix of tensor sizes otherwise leaves
hundreds of MB of freed but resident heap, more than the live tensors the checkpointing saves.

A block is replayed only when everything it is called with is a tensor or an immutable value
(numbers, strings, None, tuples of these). A block handed a list, a dict or an object such as a
key/value cache may change it during its forward pass (RDNet's dense blocks read the list of
features the stage then extends; XLM's and FlauBERT's attention layers extend the cache they are
given), so its replay would not see what the first pass saw: such a block runs plainly, keeping
its activations, which gives the same gradients. ``model.grft_probe_blocks`` records, block by
block, which way the last probe ran it (``grft.param_report`` shows it).

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

from .architecture import Architecture, block_names
from .heap import release_free_pages


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


CHECKPOINTED = "checkpointed"
LAST = "plain: the last block (backward starts with it)"
IMMUTABLE = (torch.Tensor, bool, int, float, complex, str, bytes, torch.dtype, torch.device, type(None))


def _changeable_argument(args: tuple, kwargs: dict) -> str | None:
    """The first argument a block could change during its forward pass (None: all are immutable)."""
    for where, value in [*((f"argument {i}", a) for i, a in enumerate(args)), *kwargs.items()]:
        if not _immutable(value):
            return f"{where} ({type(value).__name__})"
    return None


def _immutable(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_immutable(v) for v in value)
    return isinstance(value, IMMUTABLE)


def _probe_forward(forward, recompute: bool, name: str, record: dict[str, str]):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        changeable = _changeable_argument(args, kwargs) if recompute else None
        if recompute and changeable is None:
            out = checkpoint(forward, *args, use_reentrant=False, **kwargs)
            record.setdefault(name, CHECKPOINTED)
        else:
            out = forward(*args, **kwargs)
            way = LAST if not recompute else f"plain: called with {changeable}, which checkpointing cannot replay"
            if record.get(name, CHECKPOINTED) == CHECKPOINTED:
                record[name] = way
        _release_around(out)
        return out

    return run


@contextlib.contextmanager
def replaced_forwards(replacements: list[tuple[nn.Module, object]]) -> Iterator[None]:
    """Each ``(module, forward)``: the module's ``forward`` is ``forward`` inside the block; its
    own (an instance attribute it had, or its class's) is back on exit."""
    patched = []
    try:
        for module, forward in replacements:
            patched.append((module, "forward" in vars(module), vars(module).get("forward")))
            module.forward = forward
        yield
    finally:
        for module, had_own, own in reversed(patched):
            if had_own:
                module.forward = own
            else:
                del module.forward


@contextlib.contextmanager
def checkpointed_blocks(model: nn.Module, arch: Architecture, last: int | None = None) -> Iterator[int]:
    """Inside the block, every block of ``arch.blocks`` but the last recomputes its activations in backward.

    ``last``: the index of the last block the forward pass runs, where a probe pass stops early
    (``grft.boundaries``); it and the blocks after it run plainly. Yields the number of blocks
    checkpointed; the model is exactly as before on exit, but for ``model.grft_probe_blocks``:
    block name -> how the probe ran it (checkpointed, or plain and why).
    """
    names = block_names(model, arch)  # one list, or a staged model's
    blocks = [model.get_submodule(name) for name in names]
    last = len(blocks) - 1 if last is None else last
    config = getattr(model, "config", None)
    cache = getattr(config, "use_cache", None)
    record: dict[str, str] = {}
    model.grft_probe_blocks = record
    wrapped = [
        (block, _probe_forward(block.forward, i < last, name, record))
        for i, (name, block) in enumerate(zip(names, blocks, strict=True))
    ]
    try:
        if cache:
            config.use_cache = False
        with replaced_forwards(wrapped):
            yield max(min(last, len(blocks) - 1), 0)
    finally:
        if cache:
            config.use_cache = cache

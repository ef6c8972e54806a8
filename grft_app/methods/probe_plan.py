"""How many passes the probe makes: from ``probe.passes``, or from the memory budget ``probe.memory``.

The probe's peak is the model, its activations, and the gradient store (one weight-sized sum per
matrix of the pass's group, ``grft.passes``). Training's peak is the model, the trainable state
(gradient and Adam's two moments of every trainable parameter) and training's activations. The
default budget, ``probe.memory=train``, is "no more than the training peak of this run": the
store may take what training adds over the model minus what the probe itself adds besides its
store. Both activations are measured, not guessed, on the first probe batch before the probe
starts: the bytes autograd saves for backward in one training forward (the first view of an image
pair: the training batch) and in one probe forward (every block but the last checkpointed, whose
kept block inputs are added). The measurement runs with the random generators saved and restored,
so the probe's own draws are as without it. A number of GB is the probe's whole budget instead.

Under torch.distributed every rank takes the largest count any rank found (the passes must match
for the per-pass all-reduce).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from grft.architecture import Architecture, block_names
from grft.boundaries import eligible_weights_only
from grft.checkpointing import checkpointed_blocks
from grft.config import GRFTConfig
from grft.direct_sums import BLOCK_ELEMENTS, plain_linear
from grft.heap import release_free_pages
from grft.passes import largest_weight_bytes, max_passes, passes_within, store_bytes, store_dtype
from grft.probe import RandomState, call_model, scl_probe_loss, split_batch, to_device
from grft.selection import RANK_CHUNK_ELEMENTS
from grft.targets import eligible_layers

log = logging.getLogger(__name__)
GB = 1024**3
TRAIN = "train"


@dataclass(frozen=True)
class ProbeSettings:
    """``probe.memory``: ``"train"`` (no more than this run's training peak, estimated) or a
    number of GB for the whole probe; ``probe.passes``: a forced number of passes (None: from the
    budget); ``train_batch_size``: training's batch, where the probe's differs (scales the
    training activations measured on a probe batch)."""

    memory: str | float = TRAIN
    passes: int | None = None
    train_batch_size: int | None = None

    def __post_init__(self) -> None:
        memory = self.memory
        if isinstance(memory, str) and memory.strip().lower() == TRAIN:
            object.__setattr__(self, "memory", TRAIN)
        else:
            try:
                value = float(memory)
            except (TypeError, ValueError):
                value = math.nan
            if not (math.isfinite(value) and value > 0) or isinstance(memory, bool):
                raise ValueError(
                    f"probe.memory must be 'train' (no more than the training peak) or a number of GB > 0, "
                    f"got {memory!r}"
                )
            object.__setattr__(self, "memory", value)
        passes = self.passes
        if passes is not None and (isinstance(passes, bool) or not isinstance(passes, int) or passes < 1):
            raise ValueError(f"probe.passes must be a whole number >= 1 or null (from probe.memory), got {passes!r}")
        size = self.train_batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"the training batch size must be a whole number >= 1, got {size!r}")


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


@contextlib.contextmanager
def saved_bytes(model: nn.Module) -> Iterator[list[int]]:
    """Counts the bytes autograd saves for backward inside the block (parameters and buffers left
    out: they exist anyway); the total is ``result[0]`` after the block."""
    existing = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in existing:
            seen[storage.data_ptr()] = storage.nbytes()
        # Detached: the same storage, kept as long as autograd would keep it, but no link back to
        # the node that saves it. Returned as is, a tensor an operation saves as its own output
        # would hold that node and the node it (a cycle through autograd's C++ graph, which
        # Python's garbage collector cannot see): the whole measured graph would stay alive.
        return t.detach()

    result = [0]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result
    result[0] = sum(seen.values())


def _batch_size(labels: torch.Tensor) -> int:
    return int(labels.shape[0])


def training_activation_bytes(model: nn.Module, batch: object) -> int:
    """Bytes one training forward saves for backward, on the training-sized part of a probe batch
    (the first view of a ``[view1, view2]`` pair), with the parameters that train requiring grad."""
    inputs, _ = split_batch(batch)
    if isinstance(inputs, (list, tuple)):
        inputs = inputs[0]
    with torch.enable_grad(), saved_bytes(model) as counted:
        out = call_model(model, inputs)
        del out
    return counted[0]


def probe_activation_bytes(model: nn.Module, batch: object, layers: dict[str, nn.Module], arch: Architecture, config):
    """Bytes the low-memory probe holds for backward on one batch, its store and the gradients on
    their way into it left out (``transient_bytes``): the saved tensors of one forward (the last
    block's inside, the head, the loss) and the block inputs the checkpointed blocks keep. A block
    recomputed in backward replaces the last block's inside, freed by then."""
    blocks = [model.get_submodule(n) for n in block_names(model, arch)]
    kept: list[torch.Tensor] = []
    handles = [
        b.register_forward_pre_hook(lambda _m, args: kept.extend(a for a in args if torch.is_tensor(a)))
        for b in blocks[1:]
    ]
    try:
        for layer in layers.values():
            if hasattr(layer, "grft_probing"):
                layer.grft_probing = True
        with (
            eligible_weights_only(model, layers),
            torch.enable_grad(),
            checkpointed_blocks(model, arch),
            saved_bytes(model) as counted,
        ):
            loss = scl_probe_loss(arch, config.temperature)(model, batch)
            inputs = tensor_bytes(kept)
            del loss
    finally:
        for h in handles:
            h.remove()
        for layer in layers.values():
            if hasattr(layer, "grft_probing"):
                layer.grft_probing = False
    return counted[0] + inputs


def transient_bytes(layers: dict[str, nn.Module]) -> int:
    """What a pass with whole sums holds besides its store and activations, at most: the largest
    weight's whole gradient before it is summed (autograd's; a plain Linear outside the checkpointed
    blocks adds its gradient in blocks of rows, ``grft.direct_sums``, so this overstates what those
    need), and the ranking's float64 chunk (``grft.selection``). With deferred sums a plain Linear's
    gradient is at most the part size instead (``deferred_transient_bytes``)."""
    return largest_weight_bytes(layers) + RANK_CHUNK_ELEMENTS * 8


def deferred_transient_bytes(layers: dict[str, nn.Module]) -> int:
    """With deferred sums, the transient that does not shrink with ``part_bytes``: the largest
    gradient of a layer that is not a plain Linear (autograd's, whole), a block of rows of a plain
    Linear's, or the ranking's float64 chunk."""
    others = [layer.weight for layer in layers.values() if not plain_linear(layer, probing=True)]
    whole = max((w.numel() * store_dtype(w).itemsize for w in others), default=0)
    return max(whole, BLOCK_ELEMENTS * 8, RANK_CHUNK_ELEMENTS * 8)


@dataclass
class Plan:
    """The passes chosen and the numbers behind them (bytes; recorded in the run's probe facts,
    which stay the same on every run of the same config: the plan's time is not among them)."""

    passes: int
    reason: str
    store_bytes: int
    budget_bytes: float | None = None
    seconds: float = 0.0
    model_bytes: int | None = None
    trainable_state_bytes: int | None = None
    training_activation_bytes: int | None = None
    probe_activation_bytes: int | None = None
    part_bytes: float | None = None  # weights with a larger sum are summed after their pass (grft.deferred_sums)

    def facts(self) -> dict:
        mb = lambda v: None if v is None else round(v / 2**20, 1)  # noqa: E731
        return {
            "passes": self.passes,
            "passes_from": self.reason,
            "store_mb": mb(self.store_bytes),
            "budget_mb": mb(self.budget_bytes),
            "estimated_training_activations_mb": mb(self.training_activation_bytes),
            "estimated_probe_activations_mb": mb(self.probe_activation_bytes),
            "deferred_over_mb": mb(self.part_bytes),
        }


def plan_passes(
    model: nn.Module, batches: Iterable, config: GRFTConfig, arch: Architecture, settings: ProbeSettings
) -> Plan:
    """The probe's passes for ``settings`` (model as it will train: its trainable parameters
    require grad)."""
    layers = eligible_layers(model, arch, config)
    store = store_bytes(layers)
    if settings.passes is not None:
        return Plan(settings.passes, "probe.passes", store)
    started = time.perf_counter()
    device = next(model.parameters()).device
    model_bytes = tensor_bytes([*model.parameters(), *model.buffers()])
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = 3 * tensor_bytes(trainable)  # gradient + Adam's exp_avg and exp_avg_sq
    start = RandomState(device)  # the measurement draws (loader, dropout); the probe must not see it
    try:
        batch = to_device(next(iter(batches)), device)
        train_act = training_activation_bytes(model, batch)
        if device.type == "cpu":
            release_free_pages()  # its freed activations would stay resident under the next forward's
        _, labels = split_batch(batch)
        if settings.train_batch_size is not None:
            train_act = train_act * settings.train_batch_size // max(1, _batch_size(labels))
        probe_act = probe_activation_bytes(model, batch, layers, arch, config)
        del batch, labels
    except StopIteration:
        raise ValueError("the probe got no batches: the data loader is empty") from None
    finally:
        start.restore()
        if device.type == "cpu":
            release_free_pages()  # the measuring forwards' freed heap pages: the probe must not start above them
    if settings.memory == TRAIN:
        budget = model_bytes + state + train_act
        reason = "probe.memory=train"
    else:
        budget = settings.memory * GB
        reason = f"probe.memory={settings.memory:g} GB"
    room = budget - model_bytes - probe_act
    part_bytes = None
    passes = passes_within(layers, room - transient_bytes(layers))
    if passes is None:
        # No group fits with whole sums, not even one weight: the weights over part_bytes are summed
        # after their pass (grft.deferred_sums). A group's store and a batch's gradient are then
        # each at most part_bytes: half of what the other transients leave.
        part_bytes = (room - deferred_transient_bytes(layers)) / 2
        passes = passes_within(layers, part_bytes, part_bytes) if part_bytes >= 1 else None
        part_bytes = part_bytes if passes is not None else None
    if passes is None:
        if settings.memory != TRAIN:
            raise ValueError(
                f"probe.memory={settings.memory:g} GB is too small: the model ({model_bytes / GB:.2f} GB), the "
                f"probe's activations ({probe_act / GB:.2f} GB) and the largest weight's gradient sum "
                f"({largest_weight_bytes(layers) / GB:.2f} GB) need more; raise probe.memory or set probe.passes"
            )
        passes = max_passes(layers)
        log.warning(
            "the probe cannot stay within the estimated training peak (%.2f GB) even with one weight per pass; "
            "it makes %d passes (one per weight); set probe.passes to choose fewer",
            budget / GB,
            passes,
        )
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # Every rank must split the same way: the smallest part any rank needs, the most passes.
        least = torch.tensor([math.inf if part_bytes is None else part_bytes], device=device, dtype=torch.float64)
        dist.all_reduce(least, op=dist.ReduceOp.MIN)
        if math.isfinite(float(least)) and part_bytes != float(least):
            part_bytes = float(least)
            passes = passes_within(layers, part_bytes, part_bytes) or max_passes(layers)
        most = torch.tensor([passes], device=device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        passes = int(most)
    seconds = time.perf_counter() - started
    return Plan(passes, reason, store, budget, seconds, model_bytes, state, train_act, probe_act, part_bytes)

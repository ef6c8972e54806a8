"""The gradient probe (Algorithm 1, lines 1-5): accumulate ``H = dL/dW`` and rank its slices.

The default probe loss is supervised contrastive (SCL, Khosla et al. 2020) on the L2-normalised
input of the head, so the randomly initialised head does not steer the choice (paper §3.1).
With ``subsets=n`` the batches are split into n random parts, each part's loss is measured, and
the gradient is taken on the part with the smallest loss (§4.4.6). Under torch.distributed the
per-part losses and the gradients are summed over ranks before ranking, so every rank selects the
same slices from the whole data.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .accumulation import FlatAccumulator
from .architecture import Architecture, block_names, detect_architecture, pool_like_the_head
from .boundaries import (
    BoundaryGradients,
    NoLoss,
    StopForward,
    capture_gradient,
    chain_segments,
    checksum,
    cut_inputs,
    kept_gradients_folder,
    stop_after,
)
from .checkpointing import _hidden_state, checkpointed_blocks
from .config import GRFTConfig
from .deferred_sums import DeferredSums, RowParts
from .direct_sums import DirectSums, plain_linear
from .heap import release_free_pages
from .kept_inputs import InputRecorder, KeptInputs, best_entry, standing_in
from .layers import SlicedLayer
from .matrices import layer_matrix, weight_matrix
from .passes import deferred_bounds, weight_groups
from .selection import LayerSelection, Selection, as_matrix, check_k, rank
from .targets import eligible_layers, nothing_to_slice

try:  # numpy comes with torch's usual installs; its generator is replayed where it exists
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

# loss_fn(model, batch) -> scalar, or None to skip a batch that carries no signal for the probe.
LossFn = Callable[[nn.Module, object], torch.Tensor | None]
NO_SIGNAL = (
    "no probe batch gave the SCL loss a positive pair: give two augmented views per image "
    "(inputs as a [view1, view2] pair) or batches with repeated labels"
)
NO_GRADIENT_PATH = (
    "the probe loss of {model} does not depend on any eligible weight through autograd: its blocks run inside "
    "a custom autograd function (e.g. reversible layers) that autograd cannot see through, so GRFT can neither "
    "rank nor train their slices; give a model without such blocks"
)
Progress = Callable[[Iterable, str, int | None], Iterable]


def supervised_contrastive_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Khosla et al. (2020), Eq. 2, averaged over anchors that have a positive.

    features ``[n, d]`` (normalised here), labels ``[n]``. Each anchor's positives are the other
    samples with its label; its denominator runs over every other sample.
    """
    dtype = torch.promote_types(features.dtype, torch.float32)
    z = F.normalize(features.to(dtype), dim=1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    has_positive = counts > 0
    if not bool(has_positive.any()):
        raise ValueError(
            "the SCL probe found no positive pair in a batch: give two augmented views per image "
            "(inputs as a [view1, view2] pair) or batches with repeated labels"
        )
    mean_log_prob_pos = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has_positive] / counts[has_positive]
    return -mean_log_prob_pos.mean()


def split_batch(batch: object) -> tuple[object, torch.Tensor]:
    """``(inputs, labels)`` from a ``(inputs, labels, ...)`` sequence or a dict with ``labels``."""
    if isinstance(batch, dict):
        if "labels" not in batch:
            raise ValueError("a dict batch must carry its targets under 'labels'")
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError("a batch must be (inputs, labels) or a dict with 'labels'")


def to_device(obj: object, device: torch.device) -> object:
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def call_model(model: nn.Module, inputs: object) -> object:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def scl_probe_loss(arch: Architecture, temperature: float) -> LossFn:
    """SCL on the head's (pooled) input; a ``[view1, view2]`` input pair gives two views per image."""

    def loss(model: nn.Module, batch: object) -> torch.Tensor:
        inputs, labels = split_batch(batch)
        captured: list[tuple[torch.Tensor, object]] = []  # (input, output) of each head module, in run order
        handles = [
            model.get_submodule(name).register_forward_hook(lambda _m, args, out: captured.append((args[0], out)))
            for name in arch.heads
        ]
        try:
            if isinstance(inputs, (list, tuple)):
                views = list(inputs)
                call_model(model, torch.cat(views))
                labels = labels.repeat(len(views))
            else:
                call_model(model, inputs)
        finally:
            for handle in handles:
                handle.remove()
        if len(captured) != len(arch.heads):
            raise ValueError(f"the head {arch.head!r} ran {len(captured)} times in one forward; expected once")
        features, head_output = captured[0]  # the input of the first head module: the pre-head features
        if arch.pool is not None:
            features = arch.pool(features, inputs)
        else:
            features = pool_like_the_head(features, head_output, inputs)
        if not has_positive_pair(labels):
            return None  # e.g. a short last batch of distinct labels: nothing to contrast
        return supervised_contrastive_loss(features.flatten(1), labels, temperature)

    return loss


def has_positive_pair(labels: torch.Tensor) -> bool:
    return labels.numel() > labels.unique().numel()


@contextlib.contextmanager
def _probing(model: nn.Module, layers: dict[str, nn.Module]) -> Iterator[None]:
    """No parameter requires grad and sliced layers compute with their plain weight while probing;
    each pass turns on the gradients of its own group (``_gradients_of``). Everything is restored after."""
    saved = {p: p.requires_grad for p in model.parameters()}
    grads = {p: p.grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for layer in layers.values():
            if isinstance(layer, SlicedLayer):
                layer.grft_probing = True
        yield
    finally:
        for layer in layers.values():
            layer.weight.grad = None
            if isinstance(layer, SlicedLayer):
                layer.grft_probing = False
        for p, flag in saved.items():
            p.requires_grad_(flag)
            p.grad = grads[p]


@contextlib.contextmanager
def _gradients_of(group: dict[str, nn.Module], others: dict[str, nn.Module] | None = None) -> Iterator[None]:
    """This group's weights require grad, and so do the weights of ``others`` (the pass's other
    eligible layers), so that every operation runs by the same kernel as in the one-pass probe (a
    frozen weight's layer may compute its input's gradient by another route, whose last bits
    differ: CaiT; a forward may branch on ``requires_grad``: Doge). A pass's backward asks for the
    group's gradients only (``_targets``): the others' are never computed."""
    weights = [layer.weight for layer in [*group.values(), *(others or {}).values()]]
    try:
        for weight in weights:
            weight.requires_grad_(True)
        yield
    finally:
        for weight in weights:
            weight.requires_grad_(False)
            weight.grad = None


@contextlib.contextmanager
def _gradients_on(model: nn.Module, layers: dict[str, nn.Module]) -> Iterator[None]:
    """The one-pass probe's state: every eligible weight requires grad (and nothing else)."""
    with _probing(model, layers), _gradients_of(layers):
        yield


class RandomState:
    """The random generators a probe pass draws from (torch's CPU and the model's device, Python's,
    numpy's), captured once and restored before every later pass so it replays the first one's
    draws: a DataLoader's shuffle and worker seeds, augmentation, dropout and drop-path."""

    def __init__(self, device: torch.device):
        self.device = device
        self.torch = torch.get_rng_state()
        self.accelerator = self._module().get_rng_state(device) if self._module() is not None else None
        self.python = random.getstate()
        self.numpy = np.random.get_state() if np is not None else None

    def _module(self):
        if self.device.type == "cpu":
            return None
        module = torch.get_device_module(self.device.type)
        return module if hasattr(module, "get_rng_state") else None

    def same_as(self, other: RandomState | None) -> bool:
        """Whether both captured the same states (nothing drew in between)."""
        if other is None or not torch.equal(self.torch, other.torch) or self.python != other.python:
            return False
        if (self.accelerator is None) != (other.accelerator is None):
            return False
        if self.accelerator is not None and not torch.equal(self.accelerator, other.accelerator):
            return False
        if self.numpy is None or other.numpy is None:
            return self.numpy is None and other.numpy is None
        return all(
            bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else a == b
            for a, b in zip(self.numpy, other.numpy, strict=True)
        )

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.accelerator is not None:
            self._module().set_rng_state(self.accelerator, self.device)
        random.setstate(self.python)
        if self.numpy is not None:
            np.random.set_state(self.numpy)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _walk(batches: Iterable, progress: Progress | None, desc: str, total: int | None) -> Iterable:
    return progress(batches, desc, total) if progress is not None else batches


def _choose_part(model, batches, loss_fn, device, subsets, seed, progress) -> tuple[set[int] | None, int]:
    """Measure every batch's loss, split positions into random parts, return the lowest-loss part.

    Returns the local positions of the chosen part's batches and the local batch count. Under
    torch.distributed, rank r must hold batches r, r+W, r+2W, ... of one global sequence (W ranks;
    grft_app.lit's probe loader shards that way): the losses are gathered in that global order, so
    every rank picks the same part as a single process walking all batches would.
    """
    if iter(batches) is batches:
        raise ValueError("subsets > 1 walks the batches twice: pass a list or a DataLoader, not an iterator")
    local = []
    with torch.no_grad():
        for batch in _walk(batches, progress, "probe: subset losses", None):
            loss = loss_fn(model, to_device(batch, device))
            local.append(None if loss is None else float(loss))
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    per_rank = [local]
    if world > 1:
        per_rank = [None] * world
        dist.all_gather_object(per_rank, local)
    losses = {r + j * world: loss for r, rank_losses in enumerate(per_rank) for j, loss in enumerate(rank_losses)}
    n = len(losses)
    if n == 0:
        raise ValueError("the probe got no batches: the data loader is empty")
    if n < subsets:
        raise ValueError(f"subsets={subsets} needs at least that many probe batches, got {n}")
    if sorted(losses) != list(range(n)):
        raise ValueError("probe batches are not sharded round-robin across ranks (rank r: batches r, r+W, ...)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [order[i::subsets].tolist() for i in range(subsets)]
    part_loss = [_mean([losses[j] for j in part if losses[j] is not None]) for part in parts]
    if all(math.isinf(v) for v in part_loss):
        raise ValueError(NO_SIGNAL)
    chosen = set(parts[min(range(subsets), key=part_loss.__getitem__)])
    return {j for j in range(len(local)) if rank + j * world in chosen}, len(local)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.inf


def gradient_groups(
    model: nn.Module,
    batches: Iterable,
    config: GRFTConfig,
    loss_fn: LossFn | None = None,
    arch: Architecture | None = None,
    progress: Progress | None = None,
    low_memory: bool = True,
    passes: int = 1,
    part_bytes: float | None = None,
) -> Iterator[dict[str, torch.Tensor | RowParts]]:
    """``H`` of the eligible matrices, one group of layers per pass over ``batches`` (a generator).

    Each pass yields its group's ``H`` (name -> summed gradient) and drops it before the next
    pass starts, so the probe holds one group's sums at a time (``grft.passes``). The passes run
    from the top group down. Every pass replays the first one: the random generators are put back
    to where the first pass started and, after each batch, to where the first pass left them (the
    loader's shuffle and worker seeds, augmentation, dropout draws); the subset choice
    (``subsets > 1``) is made once, before the first pass. Backward computes the group's gradients
    only, and stops at its lowest layer (the blocks below are cut off at their input).
    Where the blocks form a chain (``grft.boundaries``), a pass below the top one runs the
    network only up to its group's highest block and back-propagates from there the gradient the
    pass above kept, and the blocks below its group stand in with the hidden state the first pass
    kept where they enter it (``grft.kept_inputs``); elsewhere it starts from the loss. Either
    way each batch must reproduce the first pass exactly (the loss's bits, or the hidden state's
    where a pass starts at a block; else the batches changed between passes: an error). For
    float32/float64 weights each ``H`` is the one-pass probe's bit for bit.
    ``model.grft_probe_passes`` records where each pass started, ``model.grft_probe_skipped`` how
    many blocks stood in for each. See ``accumulate_gradients`` for ``low_memory``.
    ``part_bytes`` (with ``low_memory``): a weight whose sum is larger is deferred
    (``grft.deferred_sums``): its ``H`` comes as ``RowParts``, made a block of rows at a time after
    its pass, each block about ``part_bytes`` at most.
    """
    arch = arch or detect_architecture(model)
    layers = eligible_layers(model, arch, config)
    if not layers:
        raise ValueError(nothing_to_slice(model, arch, config))
    for name, layer in layers.items():
        check_k(config.selection, config.k, tuple(weight_matrix(layer).shape), name)
    part_bytes = part_bytes if low_memory else None
    groups = weight_groups(layers, passes, part_bytes)
    deferred = deferred_bounds(layers, part_bytes)
    if len(groups) > 1 and isinstance(batches, Iterator):  # (iter() of a DataLoader would draw a seed)
        raise ValueError("passes > 1 walks the batches once per pass: pass a list or a DataLoader, not an iterator")
    loss_fn = loss_fn or scl_probe_loss(arch, config.temperature)
    device = next(model.parameters()).device
    nonzero = False
    with _probing(model, layers), contextlib.ExitStack() as stack:
        keep, total = None, None
        kept_inputs: dict[int, KeptInputs] = {}
        if config.subsets > 1:
            keep, total = _choose_part(model, batches, loss_fn, device, config.subsets, config.seed, progress)
        plan = [_PassPlan(group) for group in reversed(groups)]  # top group first
        if deferred:
            deferred_folder = stack.enter_context(kept_gradients_folder())
            for i, step in enumerate(plan):
                step.deferred = {name: deferred[name] for name in step.group if name in deferred}
                step.deferred_folder = deferred_folder / f"pass{i}"
        blocks = [model.get_submodule(n) for n in block_names(model, arch)] if len(groups) > 1 else []
        if len(groups) > 1:
            segments = _first_batch(
                lambda m, ls, f: chain_segments(m, blocks, ls, f) if len(blocks) > 1 else None,
                model,
                layers,
                batches,
                loss_fn,
                device,
                keep,
            )
            if segments is not None:
                folder = stack.enter_context(kept_gradients_folder())
                _plan_starts(plan, segments, len(blocks), folder)
                kept_inputs = _plan_entries(plan, segments, folder)
        model.grft_probe_passes = [p.describe(block_names(model, arch) if blocks else []) for p in plan]
        first = _FirstPass(
            RandomState(device) if len(groups) > 1 else None,
            sorted({p.start for p in plan if p.start is not None}),
        )
        if kept_inputs:
            count = len(keep) if keep is not None else (len(batches) if hasattr(batches, "__len__") else None)
            free = shutil.disk_usage(folder).free
            first.inputs = InputRecorder(blocks, kept_inputs, lambda: RandomState(device), count, free)
        for i, step in enumerate(plan):
            if i > 0:
                first.start.restore()
            desc = "probe: gradients" + (f", pass {i + 1} of {len(plan)}" if len(plan) > 1 else "")
            # Every eligible weight requires grad, as in the one-pass probe (a kernel may be chosen by
            # requires_grad: CaiT's backward, Doge's forward); only the group's gradients are computed,
            # and the blocks from the group's lowest (or the kept boundary, if lower) down are cut off.
            cut = blocks[: _lowest_block(step, segments if blocks else None) + 1]
            with _gradients_of(step.group, layers), cut_inputs(cut):
                grads = _one_pass(
                    model, batches, step, blocks, loss_fn, arch, device, keep, total, progress, desc, low_memory, first
                )
            model.grft_probe_skipped = [p.skipped for p in plan[: i + 1]]
            if i == 0:
                ways = getattr(model, "grft_probe_blocks", None)
            elif ways is not None:  # the first pass ran every block (from the loss): its record says how
                model.grft_probe_blocks = ways
            later = plan[i + 1].kept_in if i + 1 < len(plan) else None
            if step.kept_in is not None and step.kept_in is not later:
                step.kept_in.drop()  # no later pass starts there
            for entry, kept_input in list(first.kept_inputs.items()):
                if i == 0 and first.inputs is not None and not first.inputs.usable:
                    kept_input.drop()  # a block a stand-in cannot replace: every pass starts at the first block
                    del first.kept_inputs[entry]
                elif all(best_entry(p.entry, first.kept_inputs) != entry for p in plan[i + 1 :]):
                    kept_input.drop()  # no later pass enters there
                    del first.kept_inputs[entry]
            yield grads
            nonzero = nonzero or any(bool(g.nonzero if isinstance(g, RowParts) else g.any()) for g in grads.values())
            del grads
            if step.deferred:
                shutil.rmtree(step.deferred_folder, ignore_errors=True)
            if device.type == "cpu":
                release_free_pages()  # the pass's and the ranking's freed heap pages, before the next group's sums
    if len(plan) > 1 and first.with_path == 0:
        raise ValueError(NO_GRADIENT_PATH.format(model=type(model).__name__))
    if not nonzero:
        raise ValueError("the probe produced an all-zero gradient; check that the loss depends on the model")


def _plan_entries(plan: list[_PassPlan], segments: dict[str, int], folder) -> dict[int, KeptInputs]:
    """Each pass that starts from a kept gradient enters at the block above the ones it cuts off,
    from the hidden state the first pass keeps there (``grft.kept_inputs``): one store per entry."""
    stores: dict[int, KeptInputs] = {}
    for step in plan[1:]:
        entry = _lowest_block(step, segments) + 1
        if step.start is not None and entry >= 1:
            step.entry = entry
            if entry not in stores:
                stores[entry] = KeptInputs(folder / f"input{entry}")
    return stores


def _lowest_block(step: _PassPlan, segments: dict[str, int] | None) -> int:
    """The last block to cut off in this pass: the group's lowest block, or the kept boundary's block
    if lower (its output must stay in the graph); -1: none (the group reaches below the first block)."""
    if segments is None:
        return -1
    lowest = min(segments[name] for name in step.group) - 1  # segment b's layers sit in block b
    return min(lowest, step.capture) if step.capture is not None else lowest


class _PassPlan:
    """One pass: its group, the block whose output it starts from (None: the loss), the kept
    gradients it reads there and the ones it writes for the next pass (None: none)."""

    def __init__(self, group: dict[str, nn.Module]):
        self.group = group
        self.start: int | None = None
        self.capture: int | None = None
        self.kept_in: BoundaryGradients | None = None
        self.kept_out: BoundaryGradients | None = None
        self.entry = 0  # the first block this pass runs (those below stand in with a kept input)
        self.deferred: dict[str, list[tuple[int, int]]] = {}  # the group's deferred weights: their row blocks
        self.deferred_folder = None  # where their per-batch factors are kept
        self.skipped = 0  # the blocks that stood in when it ran (0: it ran from the first block)

    def describe(self, names: list[str]) -> str:
        return "loss" if self.start is None else f"gradient kept at {names[self.start]}"


def _plan_starts(plan: list[_PassPlan], segments: dict[str, int], n_blocks: int, folder) -> None:
    """Each pass below the top starts at its group's highest block (unless its group reaches past
    the last block); the pass before it keeps the gradient there, or already started there."""
    for above, below in zip(plan, plan[1:], strict=False):
        top = max(segments[name] for name in below.group)
        if top >= n_blocks:  # the group holds a layer after the last block: from the loss
            continue
        below.start = top
        if above.start == top:
            below.kept_in = above.kept_in  # the same boundary: its gradients serve again
        else:
            above.capture = top
            above.kept_out = BoundaryGradients(top, folder / f"block{top}")
            below.kept_in = above.kept_out


class _FirstPass:
    """What the first pass leaves for the others to replay: each used batch's loss, the random
    state after each batch, and the hidden state's checksum at every block a later pass starts from."""

    def __init__(self, start: RandomState | None, boundaries: list[int]):
        self.start = start
        self.boundaries = boundaries
        self.losses: list[float] = []
        self.used: list[int] = []
        self.after: dict[int, RandomState] = {}
        self.checksums: dict[tuple[int, int], float] = {}
        self.done = False
        self.with_path = 0  # batches whose loss reached the pass's group, over every pass
        self.inputs: InputRecorder | None = None  # records the kept inputs during the first pass

    @property
    def kept_inputs(self) -> dict[int, KeptInputs]:
        """Entry block -> its kept inputs (those the disk holds and later passes still need)."""
        return self.inputs.kept if self.inputs is not None else {}


def _first_batch(check, model, layers, batches, loss_fn, device, keep):
    """``check(model, layers, forward)`` on the first probe batch with a loss, its random draws undone after."""
    state = RandomState(device)
    try:
        for position, batch in enumerate(batches):
            if keep is not None and position not in keep:
                continue
            batch = to_device(batch, device)
            try:
                return check(model, layers, lambda b=batch: _needs_loss(loss_fn(model, b)))
            except NoLoss:
                continue  # a batch with nothing to contrast: try the next
        return None
    finally:
        state.restore()


def _needs_loss(loss):
    if loss is None:
        raise NoLoss()
    return loss


def _one_pass(
    model, batches, step, blocks, loss_fn, arch, device, keep, total, progress, desc, low_memory, first
) -> dict[str, torch.Tensor]:
    """One walk over the batches summing the gradients of ``step.group``'s weights; summed over ranks.

    The first pass records what the later ones must reproduce (``_FirstPass``); a later pass checks it.
    """
    recording = not first.done
    used = skipped = 0
    position = -1
    group = step.group
    deferred = {id(group[name].weight) for name in step.deferred}
    summed = {n: layer.weight for n, layer in group.items() if id(layer.weight) not in deferred}
    sums = FlatAccumulator(summed) if low_memory else None
    later_layers = {n: layer for n, layer in group.items() if id(layer.weight) in deferred}
    later = DeferredSums(later_layers, step.deferred, step.deferred_folder) if later_layers else None
    direct = None
    with contextlib.ExitStack() as memory_savers:
        if low_memory:
            memory_savers.enter_context(sums)
            if later is not None:
                memory_savers.enter_context(later)
            memory_savers.enter_context(checkpointed_blocks(model, arch, last=step.start))
            summed_directly = _outside_checkpointed_blocks(model, arch, group, step.start)
            if summed_directly:
                sinks = {
                    name: later.sink(name) if name in later_layers else sums.sums[name] for name in summed_directly
                }
                direct = memory_savers.enter_context(DirectSums(summed_directly, sinks))
        kept: dict = {}
        if step.capture is not None:
            memory_savers.enter_context(capture_gradient(blocks[step.capture], kept))
        seen: list = []
        if recording:
            for block in first.boundaries:
                memory_savers.enter_context(_recording(blocks[block], block, seen))
            if first.inputs is not None:
                memory_savers.enter_context(first.inputs.recording())
        stand_in = None
        entry = best_entry(step.entry, first.kept_inputs) if not recording and step.entry > 0 else None
        if entry is not None:
            stand_in = memory_savers.enter_context(standing_in(blocks, entry, first.inputs.forms))
        step.skipped = entry or 0
        for position, batch in enumerate(_walk(batches, progress, desc, total)):
            if keep is not None and position not in keep:
                _after_batch(first, position, recording)
                continue
            if not recording and step.start is not None and (used >= len(first.used) or first.used[used] != position):
                _after_batch(first, position, recording)  # the first pass found no loss here
                continue
            kept.clear()
            seen.clear()
            if direct is not None:
                direct.done()
            if recording and first.inputs is not None:
                first.inputs.position = position
            if later is not None:
                later.position = position
            if step.start is None:
                loss = loss_fn(model, to_device(batch, device))
                if loss is None:
                    skipped += 1
                    _after_batch(first, position, recording)
                    continue
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"the probe loss is {float(loss)} on batch {position}; check the data and the model"
                    )
                if not loss.requires_grad and first.start is None:
                    raise ValueError(NO_GRADIENT_PATH.format(model=type(model).__name__))
                _check_replay(first, float(loss.detach()), used, position, recording)
                for block, value in seen:
                    first.checksums[(block, position)] = value
                if loss.requires_grad:  # else none of this group's weights reaches the loss: their H is zero
                    torch.autograd.backward(loss, inputs=_targets(group, kept, direct, loss))
                    first.with_path += 1
                del loss
            else:
                if stand_in is not None:
                    stand_in["hidden"], stand_in["random"] = first.kept_inputs[entry].get(position, device)
                hidden = _forward_to(model, blocks[step.start], loss_fn, to_device(batch, device))
                if stand_in is not None:
                    stand_in.clear()
                expected = first.checksums.get((step.start, position))
                if expected is None or checksum(hidden) != expected:
                    raise ValueError(_NOT_REPLAYED.format(what=f"batch {used + 1}'s hidden state at the pass's start"))
                if hidden.requires_grad:  # else none of this group's weights reaches it: their H is zero
                    kept_grad = step.kept_in.get(position, hidden.device)
                    torch.autograd.backward(hidden, kept_grad, inputs=_targets(group, kept, direct, hidden))
                del hidden
            if device.type == "cpu":
                release_free_pages()  # the batch's freed activations, before the next batch's forward
            if step.capture is not None:
                # No gradient reached the boundary: the loss does not depend on it (a zero gradient).
                received = kept["received"]
                grad = received["grad"] if "grad" in received else torch.zeros_like(kept["hidden"])
                step.kept_out.put(position, grad)
            used += 1
            _after_batch(first, position, recording)
    if recording:
        first.done = True
        if first.inputs is not None:
            first.inputs.check(first.used)
    elif used != len(first.used):
        raise ValueError(_NOT_REPLAYED.format(what=f"{used} batches with a loss instead of {len(first.used)}"))
    if _distributed():  # a rank may hold none of the chosen part's batches; the whole job may not
        count = torch.tensor([used], device=device)
        dist.all_reduce(count)
        used = int(count)
    if used == 0:
        raise ValueError(NO_SIGNAL if skipped else "the probe got no batches: the data loader is empty")
    if total is not None and position + 1 != total:
        raise ValueError("the batches changed length between the two probe passes; pass a fixed list or loader")
    if sums is not None:
        grads = dict(sums.sums)
        if _distributed():
            sums.all_reduce()
        if later is not None:
            grads.update({name: later.parts(name) for name in group if name not in grads})
        grads = {name: grads[name] for name in group}
    else:
        grads = {}
        for name, layer in group.items():
            g = layer.weight.grad
            grads[name] = torch.zeros_like(layer.weight) if g is None else g.detach()
        for layer in group.values():
            layer.weight.grad = None
        if _distributed():
            for g in {id(g): g for g in grads.values()}.values():
                dist.all_reduce(g)
    return grads


def _targets(group: dict[str, nn.Module], kept: dict, direct: DirectSums | None, root: torch.Tensor) -> list:
    """What a pass's backward computes gradients for: the group's weights (or, for the layers that
    sum their weight's gradient directly, ``grft.direct_sums``, their outputs), and the boundary
    whose gradient it keeps for the next pass. Autograd then runs only the nodes on a path to them:
    the other eligible weights require grad (so every kernel is the one-pass probe's) but their
    gradients are never computed, and each node's input gradient is the same operation as before."""
    weights = list({id(layer.weight): layer.weight for layer in group.values()}.values())
    if direct is not None:
        others = [w for w in weights if all(w is not layer.weight for layer in direct.layers.values())]
        weights = direct.targets([root.grad_fn], others)
    return weights + ([kept["hidden"]] if "hidden" in kept else [])


def _outside_checkpointed_blocks(
    model: nn.Module, arch: Architecture, group: dict[str, nn.Module], start: int | None
) -> dict[str, nn.Module]:
    """The group's plain Linear layers outside the blocks this pass checkpoints (the blocks before
    its start block, or before the last block where it starts from the loss): those may sum their
    weight's gradient directly (``grft.direct_sums``)."""
    blocks = [model.get_submodule(n) for n in block_names(model, arch)]
    last = len(blocks) - 1 if start is None else start
    checkpointed = {id(m) for block in blocks[:last] for m in block.modules()}
    return {n: layer for n, layer in group.items() if plain_linear(layer) and id(layer) not in checkpointed}


def _forward_to(model: nn.Module, block: nn.Module, loss_fn: LossFn, batch) -> torch.Tensor:
    """The hidden state leaving ``block``: the model runs up to it and no further."""
    try:
        with stop_after(block):
            loss_fn(model, batch)
    except StopForward as stop:
        if stop.hidden is None:
            raise ValueError(_NOT_REPLAYED.format(what="no hidden state leaving the pass's start block")) from None
        return stop.hidden
    raise ValueError(_NOT_REPLAYED.format(what="the model did not run the pass's start block"))


@contextlib.contextmanager
def _recording(block: nn.Module, index: int, seen: list) -> Iterator[None]:
    """The first pass notes the hidden state's checksum leaving each block a later pass starts at."""

    def note(_module, _args, out):
        hidden = _hidden_state(out)
        if hidden is not None:
            seen.append((index, checksum(hidden)))

    handle = block.register_forward_hook(note)
    try:
        yield
    finally:
        handle.remove()


def _after_batch(first: _FirstPass, position: int, recording: bool) -> None:
    """Random state after each batch: the first pass notes it, later passes (whose forward may stop
    early and draw less) are put back to it, so the next batch is drawn as in the first pass."""
    if first.start is None:
        return
    if recording:
        first.after[position] = RandomState(first.start.device)
    elif position in first.after:
        first.after[position].restore()


_NOT_REPLAYED = (
    "probe pass 2 did not replay pass 1 ({what}): the probe batches or their random draws changed between "
    "passes, or the model computes other bits when fewer of its tensors need gradients (a kernel chosen by "
    "requires_grad); give a fixed list or a DataLoader whose randomness comes from torch's, numpy's or Python's global "
    "generator (or a seeded one), or set probe passes to 1"
)


def _check_replay(first: _FirstPass, loss: float, j: int, position: int, recording: bool) -> None:
    if recording:
        first.losses.append(loss)
        first.used.append(position)
    elif j >= len(first.losses) or loss != first.losses[j]:
        what = f"batch {j + 1}'s loss {loss!r} is not pass 1's" + (
            f" {first.losses[j]!r}" if j < len(first.losses) else ""
        )
        raise ValueError(_NOT_REPLAYED.format(what=what))


def accumulate_gradients(
    model: nn.Module,
    batches: Iterable,
    config: GRFTConfig,
    loss_fn: LossFn | None = None,
    arch: Architecture | None = None,
    progress: Progress | None = None,
    low_memory: bool = True,
    passes: int = 1,
    part_bytes: float | None = None,
) -> dict[str, torch.Tensor]:
    """``H`` per eligible matrix: the probe loss's gradient summed over the chosen batches.

    Returns full-size gradients of every eligible matrix at once (``passes > 1`` still computes
    them group by group, ``gradient_groups``, but keeps them all: for tests and for callers that
    need ``H`` itself; ``select`` ranks each group as it comes and keeps only indices).
    low_memory: checkpoint every block but the last while taking gradients
    (``grft.checkpointing``), so the probe holds one block's activations instead of all of them,
    hand the C heap's free pages back between blocks on CPU (``grft.heap``), and sum the
    gradients into one flat buffer as soon as each exists (``grft.accumulation``). For
    float32/float64 weights the gradients are the same bits as with ``False`` (the plain probe:
    autograd's ``.grad``), at the price of one more forward pass of all blocks but the last per
    batch; half-precision weights are summed in float32.
    """
    grads: dict[str, torch.Tensor] = {}
    for group in gradient_groups(model, batches, config, loss_fn, arch, progress, low_memory, passes, part_bytes):
        grads.update({name: g.whole() if isinstance(g, RowParts) else g for name, g in group.items()})
    arch = arch or detect_architecture(model)
    return {name: grads[name] for name in eligible_layers(model, arch, config)}


def rank_gradients(grads: dict[str, torch.Tensor], config: GRFTConfig) -> Selection:
    """Eq. 4-5 for every matrix."""
    layers = {
        name: LayerSelection(rank(g, config.selection, config.k).cpu(), tuple(as_matrix(g).shape))
        for name, g in grads.items()
    }
    return Selection(config.selection, config.k, layers)


def select(
    model: nn.Module,
    batches: Iterable,
    config: GRFTConfig,
    loss_fn: LossFn | None = None,
    arch: Architecture | None = None,
    progress: Progress | None = None,
    low_memory: bool = True,
    passes: int = 1,
    part_bytes: float | None = None,
) -> Selection:
    """Probe ``model`` on ``batches`` and return the slices to train.

    batches: any iterable of ``(inputs, labels)`` or dicts with ``labels`` (a DataLoader or a list);
    with ``subsets > 1`` or ``passes > 1`` it is walked more than once and must yield the same
    batches in the same order (a DataLoader drawing from the global generators does: they are
    replayed, see ``gradient_groups``).
    loss_fn: ``loss_fn(model, batch) -> scalar``; ``None`` is the paper's SCL probe.
    progress: optional ``progress(iterable, description, total) -> iterable`` (a progress bar).
    low_memory: see ``accumulate_gradients``; the selection is the same either way.
    passes: walk the data this many times, summing the gradients of one group of layers per pass
        (``grft.passes``): the gradient store holds one group instead of every matrix; the
        selection is the same bits (``grft.passes.passes_within`` picks a count for a budget).
    part_bytes: a weight whose gradient sum is larger is summed and ranked after its pass, a block
        of rows of about this many bytes at a time (``grft.deferred_sums``); the same bits again.
    Works on a plain model or on one already attached with placeholder slices.
    """
    arch = arch or detect_architecture(model)
    layers = eligible_layers(model, arch, config)
    chosen: dict[str, LayerSelection] = {}
    for grads in gradient_groups(model, batches, config, loss_fn, arch, progress, low_memory, passes, part_bytes):
        # A Conv1D's gradient is stored [in, out] like its weight; rank its output neurons as rows.
        whole = {name: layer_matrix(layers[name], g) for name, g in grads.items() if not isinstance(g, RowParts)}
        group = rank_gradients(whole, config)
        chosen.update(group.layers)
        parts = {name: g for name, g in grads.items() if isinstance(g, RowParts)}
        ranked: dict[Path, LayerSelection] = {}  # a weight shared by several layers is ranked once
        for name, g in parts.items():
            if g.folder not in ranked:
                ranked[g.folder] = g.select(config.selection, config.k)
            chosen[name] = ranked[g.folder]
        del grads, group
    return Selection(config.selection, config.k, {name: chosen[name] for name in layers})

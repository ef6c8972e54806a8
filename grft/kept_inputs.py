"""Probe passes that skip the blocks below their group: the hidden state entering it, kept from the first pass.

Why: a pass below the top one runs the network only up to its group's highest block and
back-propagates the gradient the pass above kept there (``grft.boundaries``). Its forward still
starts at the first block, so over all the passes the forward work grows with the square of the
depth (Llama-3.2-1B, 16 layers in 24 passes: about 200 block forwards per probe batch against 16
for one training step), and that is most of the probe's time. The blocks below a pass's group
compute the same values in every pass. So the first pass, which runs every block, keeps the
hidden state leaving the block below each later pass's entry block (one tensor per batch, on
disk beside the kept gradients), and the random state there where the blocks below drew from it
(dropout, drop-path). A later pass then runs the model's own forward with those blocks standing
in: each returns the kept hidden state without computing, the entry block starts from exactly the
first pass's value and random state, and everything outside the blocks (embeddings, masks,
position tables) runs as before. The pass computes the same operations on the same values, bit
for bit; the start block's checksum (``grft.boundaries.checksum``) still checks every batch.

Only where the blocks form a chain (``grft.boundaries.chain_segments``: each block reads only its
predecessor's output) and every block returns a hidden state of one shape and dtype, as a tensor
or a tuple whose other items are None (what a stand-in can return in its place); otherwise a pass
starts at the first block, as before.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .checkpointing import _hidden_state, replaced_forwards

log = logging.getLogger(__name__)


def _shape_of(out: object) -> tuple | None:
    """What a stand-in must return for a block that returned ``out``: ``("tensor",)``, or
    ``(type, length)`` for a tuple or list whose items after the hidden state are None; None if
    a stand-in cannot take its place."""
    hidden = _hidden_state(out)
    if hidden is None or not hidden.is_floating_point():
        return None
    if torch.is_tensor(out):
        return ("tensor",)
    if all(item is None for item in out[1:]):
        return (type(out), len(out))
    return None


def _stand_in_output(form: tuple, hidden: torch.Tensor) -> object:
    if form == ("tensor",):
        return hidden
    kind, length = form
    items = [hidden, *([None] * (length - 1))]
    return tuple(items) if kind is tuple else kind(items)


class KeptInputs:
    """The hidden state entering block ``entry`` (the output of block ``entry - 1``) per probe
    batch, and the random state there where the blocks below drew from it; kept on disk."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, position: int, hidden: torch.Tensor) -> None:
        # A copy at once: the next block may change its input in place.
        record = {"hidden": hidden.detach().to("cpu", copy=True), "requires_grad": hidden.requires_grad}
        torch.save(record, self.folder / f"{position}.pt")

    def put_random_state(self, position: int, random_state: object) -> None:
        torch.save(random_state, self.folder / f"{position}.random.pt")

    def has(self, position: int) -> bool:
        return (self.folder / f"{position}.pt").exists()

    def get(self, position: int, device: torch.device) -> tuple[torch.Tensor, object | None]:
        record = torch.load(self.folder / f"{position}.pt", map_location=device, weights_only=True)
        hidden = record["hidden"].requires_grad_(record["requires_grad"])
        random_file = self.folder / f"{position}.random.pt"
        # Our own file, written above: the random state is a plain Python object (generators' states).
        random_state = torch.load(random_file, weights_only=False) if random_file.exists() else None
        return hidden, random_state

    def drop(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def spread(entries: list[int], count: int) -> list[int]:
    """``count`` of the sorted ``entries``, evenly spaced, the highest among them."""
    n = len(entries)
    return entries if count >= n else [entries[round((i + 1) * n / count) - 1] for i in range(count)]


def best_entry(entry: int, kept: dict[int, KeptInputs]) -> int | None:
    """The highest kept entry at or below ``entry`` (the blocks from there up to ``entry`` run, cut
    off from backward), or None."""
    below = [e for e in kept if e <= entry]
    return max(below) if below else None


class InputRecorder:
    """In the first pass: what every block returns (can a stand-in replace it?), and per batch the
    hidden state and random state entering each block of ``kept`` (entry block -> its store).

    The disk: each entry keeps one hidden state per batch, so ``batches`` of them (None: unknown,
    nothing is kept). On the first batch the entries are thinned, evenly, to as many as fit in
    ``free_bytes`` (the folder's free space, less ``reserve`` sets of hidden states for the boundary
    gradients and a tenth for everything else), its hidden state's size taken for every batch's; a
    pass then enters at the highest kept entry at or below its own, running the blocks between
    (``best_entry``).
    """

    def __init__(
        self,
        blocks: list[nn.Module],
        kept: dict[int, KeptInputs],
        capture_random_state,
        batches: int | None,
        free_bytes: int,
        reserve: int = 2,
    ):
        self.blocks = blocks
        self.kept = kept
        self.capture_random_state = capture_random_state
        self.batches = batches
        self.free_bytes = free_bytes
        self.reserve = reserve
        self.dropped: list[int] = []  # entries thinned out for the disk
        self._sized = False  # the entries were fitted to the disk (on the first hidden state seen)
        self.forms: list[tuple | None] = [None] * len(blocks)
        self.usable = bool(kept)
        self.signature: tuple | None = None  # the batch's hidden states' (shape, dtype): one for all blocks
        self.position = -1  # the batch being recorded; set before its forward
        self._at_first_block: object | None = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[InputRecorder]:
        handles = [self.blocks[0].register_forward_pre_hook(self._first_block_entered)]
        handles += [block.register_forward_hook(self._returned(i)) for i, block in enumerate(self.blocks)]
        handles += [self.blocks[e].register_forward_pre_hook(self._entered(e)) for e in list(self.kept)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _first_block_entered(self, _module, _args) -> None:
        self._at_first_block = self.capture_random_state()
        self.signature = None  # batches may differ in shape (padding to each batch's longest text)

    def _returned(self, index: int):
        def note(_module, _args, out):
            form = _shape_of(out)
            hidden = _hidden_state(out)
            signature = None if hidden is None else (tuple(hidden.shape), hidden.dtype)
            if form is None or (self.forms[index] is not None and self.forms[index] != form):
                self.usable = False
            if self.signature is None:
                self.signature = signature
            elif signature != self.signature:
                self.usable = False
            self.forms[index] = form
            if self.usable and not self._sized and hidden is not None:
                self._sized = True
                self._fit_the_disk(hidden)
            if self.usable and index + 1 in self.kept:
                self.kept[index + 1].put(self.position, hidden)

        return note

    def _fit_the_disk(self, hidden: torch.Tensor) -> None:
        """Thins the entries to what the disk holds: one hidden state per batch and entry."""
        if self.batches is None:
            self.usable = False
            return
        per_entry = hidden.element_size() * hidden.numel() * self.batches
        room = self.free_bytes * 0.9 - self.reserve * per_entry
        fits = max(0, int(room // per_entry)) if per_entry else len(self.kept)
        entries = sorted(self.kept)
        chosen = set(spread(entries, fits)) if fits else set()
        for entry in entries:
            if entry not in chosen:
                self.kept.pop(entry).drop()
                self.dropped.append(entry)
        if not self.kept:
            self.usable = False
        elif self.dropped:
            log.info(
                "probe: kept inputs at %d of %d blocks (the disk holds %.1f GB of them); the other passes run the "
                "blocks between",
                len(self.kept),
                len(entries),
                max(room, 0) / 2**30,
            )

    def _entered(self, entry: int):
        def note(_module, _args):
            if not self.usable or entry not in self.kept:
                return
            state = self.capture_random_state()
            if not state.same_as(self._at_first_block):  # the blocks below drew: the entry block starts from here
                self.kept[entry].put_random_state(self.position, state)

        return note

    def check(self, positions: list[int]) -> None:
        """After the first pass: every counted batch has its kept inputs (else no pass uses them)."""
        if self.usable and not all(store.has(p) for store in self.kept.values() for p in positions):
            self.usable = False


@contextlib.contextmanager
def standing_in(blocks: list[nn.Module], entry: int, forms: list[tuple]) -> Iterator[dict]:
    """Blocks ``0 .. entry - 1`` return ``slot["hidden"]`` without computing; the random state in
    ``slot["random"]`` (if any) is restored as block ``entry`` starts. Fill ``slot`` per batch."""
    slot: dict = {}

    def stand_in(index: int):
        def forward(*_args, **_kwargs):
            return _stand_in_output(forms[index], slot["hidden"])

        return forward

    def enter(_module, _args) -> None:
        if slot.get("random") is not None:
            slot["random"].restore()

    handle = blocks[entry].register_forward_pre_hook(enter)
    try:
        with replaced_forwards([(blocks[i], stand_in(i)) for i in range(entry)]):
            yield slot
    finally:
        handle.remove()
        slot.clear()

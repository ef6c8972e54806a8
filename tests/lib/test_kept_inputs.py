"""A probe pass above the first block skips the blocks below its group (``grft.kept_inputs``).

- On the tiny ViT (dropout and drop-path on: the entry block must start from the first pass's
  random state) and the tiny Llama, for subsets 1 and 2: some passes skip, a pass that skips
  computes none of the blocks below its entry, and every ``H`` is the one-pass probe's bit for bit.
- Blocks a stand-in cannot replace (hidden states of different shapes) run in every pass, and the
  sums are the same bits; the same stack with one width does skip (the control).
- Batches of different lengths keep their inputs (one shape within a batch is what counts).
- The kept inputs fit the disk: with room for fewer entries, they are thinned evenly and a pass
  enters at the highest kept one below its own; with none, every pass starts at the first block.
"""

from __future__ import annotations

import collections

import pytest
import torch
from test_probe_memory import workload
from torch import nn

import grft
import grft.probe
from grft.passes import weight_groups

Usage = collections.namedtuple("Usage", "total used free")


def probe(model, batches, passes: int, subsets: int = 1, seed: int = 7, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the same dropout draws for every probe compared
    return grft.accumulate_gradients(model, batches, grft.GRFTConfig(k=2, subsets=subsets), passes=passes, **kwargs)


def inner_modules(model, name: str) -> list[nn.Module]:
    """A module inside each block: its forward runs only when the block really computes."""
    return [block.mlp for block in (model.blocks if name == "vit" else model.model.layers)]


@pytest.mark.parametrize("subsets", [1, 2])
@pytest.mark.parametrize("name", ["vit", "llama"])
def test_passes_above_the_first_block_skip_the_blocks_below_and_sum_the_one_pass_gradients(name, subsets):
    model, batches = workload(name)
    one = probe(model, batches, passes=1, subsets=subsets)
    computed: list[set[int]] = []  # per pass: the blocks that computed
    hooks = [
        inner.register_forward_hook(lambda *_a, i=i: computed[-1].add(i) if computed else None)
        for i, inner in enumerate(inner_modules(model, name))
    ]

    def progress(iterable, description, total=None):
        if description.startswith("probe: gradients"):
            computed.append(set())
        yield from iterable

    try:
        several = probe(model, batches, passes=6, subsets=subsets, progress=progress)
    finally:
        for h in hooks:
            h.remove()
    skipped = model.grft_probe_skipped
    assert len(skipped) == len(computed) == 6
    assert skipped[0] == 0 and any(s > 0 for s in skipped), skipped
    for p, (s, blocks) in enumerate(zip(skipped, computed, strict=True)):
        assert blocks and min(blocks) >= s, (p, s, sorted(blocks))
    for n in one:
        assert torch.equal(one[n], several[n]), n
    # A control: other dropout draws change H, so the equality is not vacuous.
    other = probe(model, batches, passes=6, subsets=subsets, seed=8)
    assert name == "llama" or any(not torch.equal(one[n], other[n]) for n in one)


def groups_of(model, passes: int) -> list[dict]:
    return weight_groups(grft.eligible_layers(model, grft.detect_architecture(model)), passes)


class Block(nn.Module):
    def __init__(self, width_in: int, width_out: int):
        super().__init__()
        self.fc = nn.Linear(width_in, width_out)
        self.drop = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.tanh(self.fc(x)))


class Stack(nn.Module):
    def __init__(self, widths: list[int]):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(a, b) for a, b in zip(widths, widths[1:], strict=False)])
        self.head = nn.Linear(widths[-1], 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


@pytest.mark.parametrize(("widths", "skips"), [([8, 8, 6, 6, 6], False), ([8, 8, 8, 8, 8], True)])
def test_blocks_a_stand_in_cannot_replace_run_in_every_pass(widths, skips):
    torch.manual_seed(0)
    model = Stack(widths).train()
    batches = [(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])) for _ in range(3)]
    one = probe(model, batches, passes=1)
    four = probe(model, batches, passes=4)
    assert any(s > 0 for s in model.grft_probe_skipped) is skips, model.grft_probe_skipped
    for n in one:
        assert torch.equal(one[n], four[n]), n


@pytest.mark.parametrize(
    ("entries_that_fit", "skipped"),
    [(None, [0, 4, 3, 2, 1, 0]), (0, [0] * 6), (1, [0, 4, 0, 0, 0, 0]), (2, [0, 4, 2, 2, 0, 0])],
)
def test_the_kept_inputs_are_thinned_to_what_the_disk_holds(monkeypatch, entries_that_fit, skipped):
    """Each kept entry holds one hidden state per batch (6 x 8 float32 = 192 bytes, 3 batches); room
    is left for two sets of boundary gradients and a tenth of the disk. A pass whose entry was
    thinned out enters at the highest kept one below it and runs the blocks between."""
    torch.manual_seed(0)
    model = Stack([8] * 7).train()
    batches = [(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])) for _ in range(3)]
    one = probe(model, batches, passes=1)
    if entries_that_fit is not None:
        per_entry = 6 * 8 * 4 * 3
        free = int((2 + entries_that_fit + 0.5) * per_entry / 0.9)
        monkeypatch.setattr(grft.probe.shutil, "disk_usage", lambda _path: Usage(10**12, 0, free))
    six = probe(model, batches, passes=6)
    if entries_that_fit is None:
        # One weight per pass, top down: each pass below the top enters at its own weight's block.
        assert skipped == [0] + [int(next(iter(g)).split(".")[1]) for g in reversed(groups_of(model, 6))][1:]
    assert model.grft_probe_skipped == skipped
    for n in one:
        assert torch.equal(one[n], six[n]), n


def test_batches_of_different_lengths_keep_their_inputs_too():
    """Texts padded to each batch's longest: the hidden states differ in shape between batches (one
    shape within a batch is all a stand-in needs)."""
    model, batches = workload("llama")
    for i, batch in enumerate(batches):
        cut = 5 + i  # 5, 6, 7, 8 tokens
        batches[i] = {
            **batch,
            "input_ids": batch["input_ids"][:, :cut],
            "attention_mask": batch["attention_mask"][:, :cut],
        }
    one = probe(model, batches, passes=1)
    six = probe(model, batches, passes=6)
    assert any(s > 0 for s in model.grft_probe_skipped), model.grft_probe_skipped
    for n in one:
        assert torch.equal(one[n], six[n]), n

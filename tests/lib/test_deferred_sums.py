"""A weight whose sum is larger than the probe's budget, summed and ranked after its pass a block
of rows at a time (``grft.deferred_sums``), gives the one-pass probe's ``H`` and selection bit for bit.

- ``part_bounds``: every boundary is a start of the direct sums' row blocks and a multiple of the
  ranking's chunk; the blocks cover the rows once, and are no larger than asked where a boundary
  lies within reach.
- ``Ranking`` fed block by block equals a float64 dense brute force (rows, columns, sparse), and
  a block that does not start on a chunk boundary is refused.
- The probe with deferred weights: ``H`` equal to the plain (autograd) probe's bit for bit and
  every index equal, on a chain of blocks whose MLP weights split into several blocks of rows
  (both ways a batch's gradient reaches the disk: ``(g, x)`` of a direct sum, autograd's whole
  gradient for the Conv2d stem), on the tiny Llama and the tiny ViT with dropout and drop-path
  (every weight deferred; subsets 1 and 2), and under 2-rank CPU DDP; a pass holds no sum of its
  deferred weight.
- The split: a deferred weight ends its group; too few passes for that is an error naming the fix,
  and so is a disk too full to keep the factors.
- The app's plan defers where no group fits with whole sums, and its selection is the one-pass one.
"""

from __future__ import annotations

import pytest
import torch
from test_probe_memory import workload
from torch import nn

import grft
import grft.accumulation as accumulation
import grft.deferred_sums as deferred_sums
import grft.direct_sums as direct_sums
import grft.selection as selection
from grft.deferred_sums import part_bounds
from grft.passes import deferred_bounds, passes_within, weight_groups
from helpers.two_ranks import on_two_ranks

KINDS = ("row", "column", "sparse")


def brute_force(h: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """Eq. 4-5 on the whole matrix in float64, without chunks."""
    h = h.reshape(h.shape[0], -1).double()
    if kind == "row":
        return h.square().sum(dim=1).topk(k).indices.sort().values
    if kind == "column":
        return h.square().sum(dim=0).topk(k).indices.sort().values
    return h.abs().topk(k, dim=1).indices.sort(dim=1).values


@pytest.fixture
def small_blocks(monkeypatch):
    """Row blocks of 64 rows and ranking chunks of 32 rows on 128-wide matrices, so small weights split."""
    from grft_app.methods import probe_plan

    for module in (direct_sums, probe_plan):
        monkeypatch.setattr(module, "BLOCK_ELEMENTS", 64 * 64)
    for module in (selection, probe_plan):
        monkeypatch.setattr(module, "RANK_CHUNK_ELEMENTS", 64 * 64)


@pytest.mark.parametrize(
    "shape,part_bytes",
    [
        ((8192, 2048), 9e6),
        ((2048, 8192), 9e6),
        ((2048, 8192), 40e6),
        ((4096, 3000), 2e7),
        ((100, 30), 10),
        ((256, 64), 1),
    ],
)
def test_part_bounds_fall_on_row_blocks_and_chunks_and_cover_every_row_once(shape, part_bytes):
    bounds = part_bounds(shape, part_bytes, 4)
    rows, width = shape
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    starts = {start for start, _ in direct_sums.row_blocks(rows, width)}
    step = selection.chunk_rows(width)
    allowed = sorted(s for s in starts if s > 0 and s % step == 0)
    for start, stop in bounds:
        assert start in starts and start % step == 0
        if (stop - start) * width * 4 > part_bytes:  # wider than asked: no boundary lay within reach
            reach = [s for s in allowed if start < s <= start + max(1, int(part_bytes // (width * 4)))]
            assert not reach or stop == rows and reach[-1] == start, (start, stop)
    if shape == (8192, 2048):
        assert len(bounds) > 1 and max(b - a for a, b in bounds) * width * 4 <= part_bytes


@pytest.mark.parametrize("kind", KINDS)
def test_ranking_block_by_block_equals_a_dense_float64_brute_force(kind, small_blocks):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(320, 64, generator=g)
    ranking = selection.Ranking(kind, 3, (320, 64))
    for start, stop in [(0, 128), (128, 192), (192, 320)]:
        ranking.add(h[start:stop])
    assert torch.equal(ranking.indices(), brute_force(h, kind, 3))
    assert torch.equal(ranking.indices(), selection.rank(h, kind, 3))
    late = selection.Ranking(kind, 3, (320, 64))
    late.add(h[:32])
    with pytest.raises(ValueError, match="chunk boundary"):
        late.add(h[32:96])
    with pytest.raises(ValueError, match="rows"):
        late.indices()


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Chain(nn.Module):
    """A Conv2d stem (its gradient comes whole from autograd) and a chain of MLP blocks."""

    def __init__(self, d: int = 128, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, d, 4, stride=4)
        self.blocks = nn.ModuleList([Block(d) for _ in range(3)])
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=1))


def chain_workload():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.arange(8) % 3) for _ in range(3)]
    return Chain(), batches


def gradients(model, batches, **kwargs) -> dict[str, torch.Tensor]:
    return grft.accumulate_gradients(model, batches, grft.GRFTConfig(k=2, selection="row"), **kwargs)


def test_deferred_weights_give_the_plain_probes_gradients_and_indices(small_blocks, monkeypatch):
    model, batches = chain_workload()
    plain = gradients(model, batches, low_memory=False)
    layers = grft.eligible_layers(model, grft.detect_architecture(model), grft.GRFTConfig(k=2))
    part = 20000  # bytes: every fc1 (512 x 128) splits into 8 blocks of 64 rows; the stem's rows cannot split
    bounds = deferred_bounds(layers, part)
    assert bounds["blocks.0.fc1"] == [(i, i + 64) for i in range(0, 512, 64)] and bounds["stem"] == [(0, 128)]
    kept: list[str] = []
    save = deferred_sums.DeferredSums._save
    monkeypatch.setattr(
        deferred_sums.DeferredSums,
        "_save",
        lambda self, name, t: (kept.append("".join(sorted(t))), save(self, name, t)),
    )
    fewest = passes_within(layers, 10**9, part)
    coarse = 100_000  # the stem is not deferred; fc1 splits into blocks of 192 rows
    for passes, size in [(fewest, part), (passes_within(layers, 10**9, coarse) + 1, coarse)]:
        deferred = gradients(model, batches, passes=passes, part_bytes=size)
        assert deferred.keys() == plain.keys()
        for n in plain:
            assert torch.equal(plain[n], deferred[n]), (passes, n)
    assert {"gx", "grad"} <= set(kept)  # both ways a batch's gradient is kept were taken
    for kind in KINDS:
        cfg = grft.GRFTConfig(k=2, selection=kind)
        one = grft.select(model, batches, cfg)
        assert grft.select(model, batches, cfg, passes=fewest, part_bytes=part) == one
        assert one == grft.rank_gradients(plain, cfg)


@pytest.mark.parametrize("subsets", [1, 2])
@pytest.mark.parametrize("name", ["vit", "llama"])
def test_every_weight_deferred_on_the_tiny_models_gives_the_one_pass_selection(name, subsets):
    model, batches = workload(name)
    layers = grft.eligible_layers(model, grft.detect_architecture(model), grft.GRFTConfig(k=2))
    passes = passes_within(layers, 10**9, 1)  # every weight deferred: each ends its own group
    assert passes == len({id(layer.weight) for layer in layers.values()})
    for kind in KINDS:
        cfg = grft.GRFTConfig(k=2, selection=kind, subsets=subsets)
        torch.manual_seed(3)
        one = grft.select(model, batches, cfg)
        torch.manual_seed(3)
        assert grft.select(model, batches, cfg, passes=passes, part_bytes=1) == one, kind


def test_a_pass_holds_no_sum_of_its_deferred_weight(small_blocks, monkeypatch):
    model, batches = chain_workload()
    held: list[set[str]] = []
    original = accumulation.FlatAccumulator.__init__

    def spy(self, weights):
        original(self, weights)
        held.append(set(weights))

    monkeypatch.setattr(accumulation.FlatAccumulator, "__init__", spy)
    layers = grft.eligible_layers(model, grft.detect_architecture(model), grft.GRFTConfig(k=2))
    part = 200_000  # the MLP weights (262,144 bytes each) are deferred, the stem is not
    deferred = deferred_bounds(layers, part)
    assert len(deferred) == 6 and "stem" not in deferred
    passes = passes_within(layers, 10**9, part)
    grft.select(model, batches, grft.GRFTConfig(k=2, selection="row"), passes=passes, part_bytes=part)
    assert len(held) == passes and not set().union(*held) & set(deferred) and "stem" in set().union(*held)


def test_a_deferred_weight_ends_its_group_and_too_few_passes_is_an_error(small_blocks):
    model, _ = chain_workload()
    layers = grft.eligible_layers(model, grft.detect_architecture(model), grft.GRFTConfig(k=2))
    part = 20000
    deferred = deferred_bounds(layers, part)
    fewest = passes_within(layers, 10**9, part)
    assert fewest == len(deferred) == 7  # every weight here is larger than part: one group each
    for group in weight_groups(layers, fewest, part):
        assert list(group)[-1] in deferred
    with pytest.raises(ValueError, match="use at least"):
        weight_groups(layers, fewest - 1, part)


# --- 2-rank CPU DDP -------------------------------------------------------------------------------


def _deferred_on_my_shard(rank: int, world: int) -> dict:
    direct_sums.BLOCK_ELEMENTS = selection.RANK_CHUNK_ELEMENTS = 64 * 64
    model, batches = chain_workload()
    mine = batches[rank::world]
    layers = grft.eligible_layers(model, grft.detect_architecture(model), grft.GRFTConfig(k=2))
    passes = passes_within(layers, 10**9, 20000)
    return {"one": gradients(model, mine), "deferred": gradients(model, mine, passes=passes, part_bytes=20000)}


@pytest.mark.process
def test_two_rank_ddp_probe_with_deferred_weights_gives_the_one_pass_gradients(tmp_path):
    ddp = on_two_ranks(_deferred_on_my_shard, tmp_path)
    for n in ddp["one"]:
        assert torch.equal(ddp["one"][n], ddp["deferred"][n]), n


# --- the app's plan -------------------------------------------------------------------------------


def test_the_plan_defers_where_no_group_fits_with_whole_sums(small_blocks):
    from grft_app.methods.probe_plan import GB, ProbeSettings, deferred_transient_bytes, plan_passes, transient_bytes

    model, batches = chain_workload()
    cfg = grft.GRFTConfig(k=2, selection="column")
    arch = grft.detect_architecture(model)
    layers = grft.eligible_layers(model, arch, cfg)
    default = plan_passes(model, batches, cfg, arch, ProbeSettings())
    fixed = default.model_bytes + default.probe_activation_bytes  # what the probe needs besides store and transients
    part = 131072  # half an MLP weight: fc1 in 2 blocks of 256 rows, fc2 in 2 of 64
    room = deferred_transient_bytes(layers) + 2 * part
    assert room < transient_bytes(layers) + 262144  # whole sums: not one MLP weight fits
    plan = plan_passes(model, batches, cfg, arch, ProbeSettings(memory=(fixed + room) / GB))
    assert plan.part_bytes == pytest.approx(part, abs=1)
    assert plan.passes == passes_within(layers, plan.part_bytes, plan.part_bytes) == 7
    assert plan.facts()["deferred_over_mb"] == round(plan.part_bytes / 2**20, 1)
    assert deferred_bounds(layers, plan.part_bytes)["blocks.0.fc1"] == [(0, 256), (256, 512)]
    roomy = plan_passes(model, batches, cfg, arch, ProbeSettings(memory=(fixed + transient_bytes(layers) + 10**6) / GB))
    assert roomy.part_bytes is None
    torch.manual_seed(5)
    one = grft.select(model, batches, cfg)
    assert grft.select(model, batches, cfg, passes=plan.passes, part_bytes=plan.part_bytes) == one
    with pytest.raises(ValueError, match="raise probe.memory or set probe.passes"):
        plan_passes(model, batches, cfg, arch, ProbeSettings(memory=(fixed + deferred_transient_bytes(layers)) / GB))


def test_a_full_disk_while_keeping_factors_is_an_error_naming_the_fix(small_blocks, monkeypatch):
    model, batches = chain_workload()

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deferred_sums, "_write", full)
    layers = grft.eligible_layers(model, grft.detect_architecture(model), grft.GRFTConfig(k=2))
    with pytest.raises(OSError, match="TMPDIR"):
        grft.select(model, batches, grft.GRFTConfig(k=2), passes=passes_within(layers, 10**9, 20000), part_bytes=20000)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), True, "64MB"])
def test_a_part_size_that_is_not_a_positive_number_is_an_error(bad):
    model, _ = chain_workload()
    layers = grft.eligible_layers(model, grft.detect_architecture(model), grft.GRFTConfig(k=2))
    with pytest.raises(ValueError, match="part_bytes must be a number of bytes > 0"):
        deferred_bounds(layers, bad)

"""The probe in several passes (one group of layers per pass) selects exactly what one pass selects.

- ``H`` of every eligible matrix is the one-pass probe's bit for bit with passes=2 and 3, hence
  every index of rows, columns and sparse, for subsets 1 and 2, on the tiny ViT with dropout and
  drop-path on (each pass must replay the same random draws) and on the tiny Llama; and under
  2-rank CPU DDP (gloo), against the 2-rank one-pass probe.
- A shuffled DataLoader with a random augmentation replays too (its draws come from the global
  generator, put back before each pass); batches that change between passes are an error.
- Each pass's backward stops at its group: the blocks below it run without a graph; it computes
  the gradients of its group's weights and of no other (they require grad all the same); the
  start block of a pass from a kept gradient is not recomputed (the record of how each block ran
  is the one-pass probe's); nothing of a pass's graph outlives the probe.
- The split: contiguous groups in module order, exactly ``passes`` of them, the largest as small
  as any contiguous split can make it (brute force), a shared weight in one group.
- The app: ``probe.passes`` forces the count, ``probe.memory`` sets it from a budget (a budget
  too small for one weight is an error naming the fix), the probe's facts record the passes, and
  the progress bar says "pass i of n".
"""

from __future__ import annotations

import itertools

import pytest
import torch
from test_probe_memory import token_batches, workload
from torch.utils.data import DataLoader, Dataset

import grft
from grft.passes import passes_within, store_bytes, weight_groups
from helpers.models import make_tiny_vit
from helpers.two_ranks import on_two_ranks

KINDS = ("row", "column", "sparse")


def probe(model, batches, passes: int, subsets: int = 1, seed: int = 7, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the same dropout draws for every probe compared
    cfg = grft.GRFTConfig(k=2, selection="row", subsets=subsets)
    return grft.accumulate_gradients(model, batches, cfg, passes=passes, **kwargs)


def selections(grads: dict[str, torch.Tensor], subsets: int = 1) -> dict[str, grft.Selection]:
    return {kind: grft.rank_gradients(grads, grft.GRFTConfig(k=2, selection=kind, subsets=subsets)) for kind in KINDS}


@pytest.mark.parametrize("subsets", [1, 2])
@pytest.mark.parametrize("name", ["vit", "llama"])
def test_two_and_three_passes_give_the_one_pass_gradients_and_indices(name, subsets):
    model, batches = workload(name)
    one = probe(model, batches, passes=1, subsets=subsets)
    for passes in (2, 3):
        several = probe(model, batches, passes=passes, subsets=subsets)
        assert several.keys() == one.keys()
        for n in one:
            assert torch.equal(one[n], several[n]), (passes, n)
        assert selections(several, subsets) == selections(one, subsets)
    # A control: other dropout draws change H, so the equality is not vacuous.
    other = probe(model, batches, passes=2, subsets=subsets, seed=8)
    assert name == "llama" or any(not torch.equal(one[n], other[n]) for n in one)


def test_select_with_passes_equals_select_in_one_pass_for_every_kind():
    model, batches = workload("vit")
    for kind in KINDS:
        cfg = grft.GRFTConfig(k=2, selection=kind)
        torch.manual_seed(3)
        one = grft.select(model, batches, cfg)
        torch.manual_seed(3)
        assert grft.select(model, batches, cfg, passes=3) == one


class Augmented(Dataset):
    """Random crops and noise drawn from torch's global generator (as a transform does)."""

    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 20, 20, generator=g)
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.images)

    def view(self, i: int) -> torch.Tensor:
        top, left = torch.randint(0, 5, (2,)).tolist()
        return self.images[i, :, top : top + 16, left : left + 16] + 0.1 * torch.randn(3, 16, 16)

    def __getitem__(self, i: int):
        return [self.view(i), self.view(i)], self.labels[i]


def test_a_shuffled_loader_with_random_augmentation_is_replayed_in_every_pass():
    model = make_tiny_vit(drop_rate=0.1, drop_path_rate=0.2).train()
    loader = DataLoader(Augmented(), batch_size=6, shuffle=True)
    one = probe(model, loader, passes=1)
    three = probe(model, loader, passes=3)
    for n in one:
        assert torch.equal(one[n], three[n]), n
    # The loader's draws really are random: without the same seed the gradients differ.
    assert any(not torch.equal(one[n], probe(model, loader, passes=1, seed=9)[n]) for n in one)


class Drifting:
    """Batches that change on every walk (randomness from outside the global generators)."""

    def __init__(self, batches):
        self.batches, self.walks = batches, itertools.count()

    def __iter__(self):
        shift = next(self.walks)
        for x, y in self.batches:
            yield [v + 0.01 * shift for v in x], y


def test_batches_that_change_between_passes_are_an_error():
    model, batches = workload("vit")
    with pytest.raises(ValueError, match="did not replay pass 1"):
        probe(model, Drifting(batches), passes=2)
    with pytest.raises(ValueError, match="not an iterator"):
        probe(model, iter(batches), passes=2)


def _block_of(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blocks.") else -1  # the patch embedding: below block 0


def test_passes_run_top_down_and_each_below_the_top_runs_only_up_to_its_group():
    model, batches = workload("vit")  # patch embedding + 3 blocks of 4 weights: 13 weights
    runs: list[list[tuple[int, bool]]] = []  # per pass and batch: (block, its input needs grad)
    hooks = [
        block.register_forward_pre_hook(
            lambda _m, args, i=i: runs[-1].append((i, bool(args[0].requires_grad))) if runs else None
        )
        for i, block in enumerate(model.blocks)
    ]
    passes_seen = []

    def progress(iterable, description, total=None):
        passes_seen.append(description)
        for item in iterable:
            runs.append([])
            yield item

    try:
        grft.accumulate_gradients(model, batches[:1], grft.GRFTConfig(k=2), progress=progress, passes=3)
    finally:
        for h in hooks:
            h.remove()
    assert passes_seen == [f"probe: gradients, pass {i} of 3" for i in (1, 2, 3)]
    groups = list(reversed(weight_groups(grft.eligible_layers(model, grft.detect_architecture(model)), 3)))
    tops = [max(max(_block_of(n) for n in g), 0) for g in groups]
    assert model.grft_probe_passes == ["loss"] + [f"gradient kept at blocks.{t}" for t in tops[1:]]
    for p, (group, ran) in enumerate(zip(groups, runs, strict=True)):
        last = len(model.blocks) - 1 if p == 0 else tops[p]  # a pass below the top stops at its group's top block
        # Every eligible weight requires grad, as in the one-pass probe: every block's input needs a
        # gradient (the patch embedding is eligible); the blocks below the group are cut off instead.
        assert ran == [(b, True) for b in range(last + 1)], (p, list(group), ran)


def test_a_network_whose_head_reads_an_earlier_block_is_probed_from_the_loss_in_every_pass():
    model, batches = workload("vit")
    stash = {}
    model.blocks[0].register_forward_hook(lambda _m, _a, out: stash.update(first=out))
    model.norm.register_forward_hook(lambda _m, _a, out: out + 0.5 * stash["first"])  # a skip past the chain
    one = probe(model, batches, passes=1)
    three = probe(model, batches, passes=3)
    assert model.grft_probe_passes == ["loss"] * 3
    for n in one:
        assert torch.equal(one[n], three[n]), n


@pytest.mark.parametrize("name", ["vit", "llama"])
def test_the_passes_below_the_top_start_from_a_kept_gradient(name):
    model, batches = workload(name)
    probe(model, batches, passes=3)
    assert model.grft_probe_passes[0] == "loss"
    assert all(where.startswith("gradient kept at ") for where in model.grft_probe_passes[1:])


# --- the split ------------------------------------------------------------------------------------


def linear_stack(widths: list[int]) -> dict[str, torch.nn.Module]:
    return {f"l{i}": torch.nn.Linear(w, 1, bias=False) for i, w in enumerate(widths)}


def best_contiguous_max(sizes: list[int], groups: int) -> int:
    """Brute force over every way to cut ``sizes`` into ``groups`` contiguous runs."""
    best = None
    for cuts in itertools.combinations(range(1, len(sizes)), groups - 1):
        bounds = (0, *cuts, len(sizes))
        worst = max(sum(sizes[a:b]) for a, b in itertools.pairwise(bounds))
        best = worst if best is None else min(best, worst)
    return best


@pytest.mark.parametrize("widths", [[5, 1, 1, 1, 7, 2, 2], [3, 3, 3, 3], [1, 9, 1, 1, 1, 1, 8, 1]])
def test_the_split_is_contiguous_exact_in_count_and_as_even_as_brute_force(widths):
    layers = linear_stack(widths)
    sizes = [4 * w for w in widths]  # float32 sums
    for passes in range(1, len(widths) + 1):
        groups = weight_groups(layers, passes)
        assert len(groups) == passes
        assert [n for g in groups for n in g] == list(layers)  # contiguous, in order, every layer once
        assert max(store_bytes(g) for g in groups) == best_contiguous_max(sizes, passes)
    for budget in range(1, sum(sizes) + 2):
        fewest = next((p for p in range(1, len(widths) + 1) if best_contiguous_max(sizes, p) <= budget), None)
        assert passes_within(layers, budget) == fewest, budget


def test_a_shared_weight_is_one_unit_and_too_many_passes_is_an_error():
    layers = linear_stack([2, 3, 4])
    layers["l2"].weight = layers["l0"].weight
    groups = weight_groups(layers, 2)
    assert any({"l0", "l2"} <= set(g) for g in groups)
    with pytest.raises(ValueError, match="only 2 eligible weight"):
        weight_groups(layers, 3)


# --- 2-rank CPU DDP -------------------------------------------------------------------------------


def _passes_on_my_shard(rank: int, world: int) -> dict:
    model, batches = workload("vit")
    mine = batches[rank::world]  # round-robin shards, as grft_app.lit's probe loader gives them
    return {passes: probe(model.eval(), mine, passes=passes, subsets=2) for passes in (1, 3)}


@pytest.mark.process
def test_two_rank_ddp_probe_in_three_passes_gives_the_one_pass_gradients(tmp_path):
    ddp = on_two_ranks(_passes_on_my_shard, tmp_path)
    for n in ddp[1]:
        assert torch.equal(ddp[1][n], ddp[3][n]), n
    model, batches = workload("vit")
    single = probe(model.eval(), batches, passes=1, subsets=2)
    assert selections(ddp[3], 2) == selections(single, 2)


# --- the app: probe.passes, probe.memory, the facts -----------------------------------------------


def grft_method(probe_settings):
    from grft_app.data.splits import InputSpec
    from grft_app.methods import MethodSettings, make_method
    from grft_app.models import ModelBundle

    model = make_tiny_llama_for_app()
    settings = MethodSettings(name="grft", grft=grft.GRFTConfig(k=2), probe=probe_settings)
    method = make_method(settings)
    bundle = ModelBundle(model, grft.detect_architecture(model), InputSpec(kind="text", max_length=9))
    return method, method.prepare(bundle)


def make_tiny_llama_for_app():
    from helpers.models import make_tiny_llama

    return make_tiny_llama().train()


def test_the_app_records_the_passes_and_selects_the_same_with_any_count():
    from grft.tuner import current_selection
    from grft_app.methods.probe_plan import ProbeSettings

    chosen = {}
    for passes in (1, 3):
        method, model = grft_method(ProbeSettings(passes=passes))
        torch.manual_seed(0)
        facts = method.probe(model, token_batches())
        assert facts["passes"] == passes and facts["passes_from"] == "probe.passes"
        chosen[passes] = current_selection(model)
    assert chosen[1] == chosen[3]


def test_a_memory_budget_sets_the_passes_and_one_too_small_is_an_error():
    from grft_app.methods.probe_plan import GB, ProbeSettings, plan_passes, transient_bytes

    method, model = grft_method(ProbeSettings())
    default = plan_passes(model, token_batches(), method.settings.grft, method.arch, method.settings.probe)
    assert default.passes >= 1 and default.reason == "probe.memory=train"
    layers = grft.eligible_layers(model, method.arch, method.settings.grft)
    bare = default.model_bytes + default.probe_activation_bytes
    fixed = bare + transient_bytes(layers)  # what the probe needs besides its store
    for store in (store_bytes(layers), store_bytes(layers) // 2, 4 * 32 * 64):
        plan = plan_passes(
            model, token_batches(), method.settings.grft, method.arch, ProbeSettings(memory=(fixed + store) / GB)
        )
        assert plan.passes == passes_within(layers, store) and plan.part_bytes is None
    with pytest.raises(ValueError, match="raise probe.memory or set probe.passes"):
        plan_passes(model, token_batches(), method.settings.grft, method.arch, ProbeSettings(memory=bare / GB))


def live_tensors() -> dict[int, int]:
    import gc

    gc.collect()
    return {id(t): t.numel() for t in gc.get_objects() if torch.is_tensor(t)}


def test_the_memory_plan_leaves_no_tensor_of_its_measuring_forwards_alive():
    # Its forwards count what autograd saves; a saved tensor that links back to its graph would keep
    # that graph (every activation) alive through training, where it counts as training memory.
    from grft_app.methods.probe_plan import ProbeSettings, plan_passes

    method, model = grft_method(ProbeSettings())
    batches = token_batches()
    before = live_tensors()
    plan = plan_passes(model, batches, method.settings.grft, method.arch, method.settings.probe)
    assert plan.training_activation_bytes > 0 and plan.probe_activation_bytes > 0
    left = {i: n for i, n in live_tensors().items() if i not in before}
    assert not left, f"{len(left)} tensors ({sum(left.values())} elements) outlived the plan"


@pytest.mark.parametrize(
    "settings,match",
    [
        (dict(memory="lots"), "probe.memory must be 'train'"),
        (dict(memory=0), "probe.memory must be 'train'"),
        (dict(passes=0), "probe.passes must be a whole number"),
        (dict(passes=1.5), "probe.passes must be a whole number"),
    ],
)
def test_bad_probe_settings_are_one_line_errors(settings, match):
    from grft_app.methods.probe_plan import ProbeSettings

    with pytest.raises(ValueError, match=match):
        ProbeSettings(**settings)


def test_the_kept_gradients_live_in_a_temporary_folder_removed_after_the_probe_or_an_error(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, batches = workload("vit")
    during = []

    def progress(iterable, description, total=None):
        during.append(sorted(p.name for p in tmp_path.glob("grft-probe-*/*/*.pt")))
        yield from iterable

    grft.accumulate_gradients(model, batches, grft.GRFTConfig(k=2), progress=progress, passes=3)
    assert during[0] == [] and during[1] == [f"{i}.pt" for i in range(len(batches))]  # one per batch
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="did not replay pass 1"):
        probe(model, Drifting(batches), passes=3)
    assert list(tmp_path.iterdir()) == []


def test_a_pass_whose_group_never_reaches_the_loss_sums_zeros_as_the_one_pass_probe_does():
    model, batches = workload("vit")
    model.unused = torch.nn.Linear(24, 24)  # eligible, registered last (the top group), read by nothing
    assert "unused" in grft.eligible_layers(model, grft.detect_architecture(model))
    one = probe(model, batches, passes=1)
    three = probe(model, batches, passes=3)
    assert not one["unused"].any()
    for n in one:
        assert torch.equal(one[n], three[n]), n


def test_a_pass_back_propagates_no_further_than_one_block_below_its_group():
    """The weights below the group require grad (so every kernel runs as in the one-pass probe), but
    the blocks below are cut off: their layers get no backward pass."""
    model, batches = workload("vit")
    backward_reached: list[set[int]] = []
    for i, block in enumerate(model.blocks):
        block.register_full_backward_pre_hook(
            lambda _m, _g, i=i: backward_reached[-1].add(i) if backward_reached else None
        )

    def progress(iterable, description, total=None):
        for item in iterable:
            backward_reached.append(set())
            yield item

    grft.accumulate_gradients(model, batches[:1], grft.GRFTConfig(k=2), progress=progress, passes=6)
    groups = list(reversed(weight_groups(grft.eligible_layers(model, grft.detect_architecture(model)), 6)))
    for group, reached in zip(groups, backward_reached, strict=True):
        lowest = max(min(_block_of(n) for n in group), 0)
        # (A pass's start block ends the forward in its forward hook, before its backward hook is set.)
        assert min(reached, default=lowest) >= lowest - 1, (list(group), reached)
    assert 0 not in backward_reached[0]  # the top group lies in the last block: the first block is cut off


def test_a_pass_computes_the_gradients_of_its_group_and_of_no_other_weight():
    model, batches = workload("vit")
    layers = grft.eligible_layers(model, grft.detect_architecture(model))
    computed: list[set[str]] = []
    for name, layer in layers.items():
        layer.weight.register_post_accumulate_grad_hook(
            lambda _w, name=name: computed[-1].add(name) if computed else None
        )

    def progress(iterable, description, total=None):
        computed.append(set())
        yield from iterable

    grft.accumulate_gradients(model, batches[:1], grft.GRFTConfig(k=2), progress=progress, passes=6)
    groups = list(reversed(weight_groups(layers, 6)))
    # Autograd accumulates a gradient only for a group's own weights (and not even for those a pass
    # sums directly, grft.direct_sums: the patch embedding, a convolution, always goes through it).
    assert all(seen <= set(group) for seen, group in zip(computed, groups, strict=True)), computed
    assert any(seen for seen in computed)


def test_the_probe_in_passes_leaves_no_graph_alive_and_records_the_blocks_as_one_pass_does():
    # A hook on a kept boundary that referred back to its own hidden state once kept the last
    # batch's graph (a block's activations) alive through training.
    import gc

    model, batches = workload("llama")
    grft.select(model, batches, grft.GRFTConfig(k=2), passes=1)
    one_pass_record = dict(model.grft_probe_blocks)
    grft.select(model, batches, grft.GRFTConfig(k=2), passes=4)
    assert all(where.startswith("gradient kept") for where in model.grft_probe_passes[1:])
    gc.collect()
    alive = [t for t in gc.get_objects() if torch.is_tensor(t) and t.grad_fn is not None]
    assert not alive, [tuple(t.shape) for t in alive]
    assert model.grft_probe_blocks == one_pass_record

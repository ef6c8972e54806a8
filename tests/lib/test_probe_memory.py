"""The low-memory probe selects exactly what the plain probe selects.

The low-memory probe: every block but the last checkpointed, heap pages released between blocks.

- Single process: the accumulated gradients H are bit-identical, hence every index of rows,
  columns and sparse, for subsets=1 and 2, on ViT (two views, dropout and stochastic depth on, so
  the recomputation must replay the random state) and Llama shapes, in train and eval mode.
- 2-rank CPU DDP (gloo): the low-memory probe on each rank's round-robin shard gives the plain
  2-rank probe's H bit for bit, and the single-process plain probe's indices.
- It holds less: the bytes autograd keeps for backward during the forward pass, counted with
  ``saved_tensors_hooks``, fall to a fraction of the plain probe's; on CPU the heap's free pages
  are handed back after each block's forward and before its backward, and ``malloc_trim`` does
  lower the resident set (glibc only).
- The model is left as it was (no wrapped forward, the key/value cache switch restored).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import grft
from helpers.models import image_batches, make_tiny_llama, make_tiny_vit

KINDS = ("row", "column", "sparse")


def dropout_vit(seed: int = 0):
    """The tiny test ViT with every random layer timm offers switched on (train mode)."""
    options = dict(drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.2)
    return make_tiny_vit(seed=seed, **options).train()


def token_batches(n_batches: int = 4, batch: int = 6, seed: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(1, 64, (batch, 9), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0  # one padded sequence: the last-token pooling must follow the mask
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.arange(batch) % 3})
    return out


def workload(name: str):
    if name == "vit":
        return dropout_vit(), image_batches(n_batches=4, batch=6, views=2)
    return make_tiny_llama().train(), token_batches()


def gradients(model, batches, low_memory: bool, subsets: int = 1, seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the same dropout draws for both probes
    cfg = grft.GRFTConfig(k=2, selection="row", subsets=subsets)
    return grft.accumulate_gradients(model, batches, cfg, low_memory=low_memory)


def selections(grads: dict[str, torch.Tensor], subsets: int = 1) -> dict[str, grft.Selection]:
    return {kind: grft.rank_gradients(grads, grft.GRFTConfig(k=2, selection=kind, subsets=subsets)) for kind in KINDS}


@pytest.mark.parametrize("subsets", [1, 2])
@pytest.mark.parametrize("name", ["vit", "llama"])
def test_low_memory_probe_gives_the_plain_probes_gradients_and_indices(name, subsets):
    model, batches = workload(name)
    plain = gradients(model, batches, low_memory=False, subsets=subsets)
    low = gradients(model, batches, low_memory=True, subsets=subsets)
    assert plain.keys() == low.keys()
    for n in plain:
        assert torch.equal(plain[n], low[n]), n
    assert selections(plain) == selections(low)
    # A control: other dropout draws do change H, so the equality above is not vacuous.
    other = gradients(model, batches, low_memory=True, subsets=subsets, seed=8)
    assert name == "llama" or any(not torch.equal(plain[n], other[n]) for n in plain)


def test_low_memory_probe_selects_the_same_in_eval_mode_through_select():
    model, batches = workload("vit")
    model.eval()
    for kind in KINDS:
        cfg = grft.GRFTConfig(k=2, selection=kind)
        assert grft.select(model, batches, cfg, low_memory=True) == grft.select(model, batches, cfg, low_memory=False)


def saved_bytes_during_forward(model, batch, low_memory: bool) -> int:
    """Bytes of the tensors autograd keeps for backward in one probe forward (weights excluded)."""
    weights = {p.data_ptr() for p in model.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        if t.data_ptr() not in weights:
            total += t.numel() * t.element_size()
        return t

    arch = grft.detect_architecture(model)
    layers = grft.eligible_layers(model, arch)
    loss_fn = grft.probe.scl_probe_loss(arch, 0.07)
    from grft.checkpointing import checkpointed_blocks
    from grft.probe import _gradients_on

    with _gradients_on(model, layers), checkpointed_blocks(model, arch) if low_memory else _null():
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model, batch)
        loss.backward()
    return total


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_low_memory_probe_keeps_a_fraction_of_the_activations():
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=6,
        num_heads=2,
        num_classes=5,
    )
    g = torch.Generator().manual_seed(0)
    batch = ([torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)], torch.arange(4))
    plain = saved_bytes_during_forward(model, batch, low_memory=False)
    low = saved_bytes_during_forward(model, batch, low_memory=True)
    # 6 blocks: the low-memory probe keeps 5 blocks' inputs and the inside of the last one (backward
    # needs it first), not the ~10 tensors inside each block: about 1/6 of the plain probe's plus the inputs.
    assert low < 0.3 * plain, (low, plain)


def test_heap_pages_are_released_after_each_block_forward_and_before_its_backward(monkeypatch):
    import grft.checkpointing

    calls = []
    monkeypatch.setattr(grft.checkpointing, "release_free_pages", lambda: calls.append(1) or True)
    model, batches = workload("vit")  # 3 blocks
    gradients(model, batches[:1], low_memory=True)
    assert len(calls) == 2 * len(model.blocks)  # one forward and one backward per block, one batch
    calls.clear()
    gradients(model, batches[:1], low_memory=False)
    assert calls == []


def test_release_free_pages_hands_freed_heap_memory_back():
    import ctypes

    from grft.heap import _malloc_trim, release_free_pages

    if _malloc_trim() is None:
        pytest.skip("not glibc: no malloc_trim")
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    chunk, count = 64 * 1024, 320  # 20 MB in heap-sized chunks (below glibc's smallest mmap threshold)
    blocks = [libc.malloc(chunk) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, chunk)  # resident
    for b in blocks[:-1]:
        libc.free(b)  # freed, but the last chunk keeps them off the heap's top: glibc keeps them resident
    try:
        before = resident_bytes()
        assert release_free_pages()
        after = resident_bytes()
    finally:
        libc.free(blocks[-1])
    assert before - after > 0.5 * chunk * count, (before, after)


def resident_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_model_is_left_as_it_was():
    model = make_tiny_llama()
    assert model.config.use_cache
    before = {n: copy.copy(vars(m).get("forward")) for n, m in model.named_modules()}
    gradients(model, token_batches(2), low_memory=True)
    assert {n: vars(m).get("forward") for n, m in model.named_modules()} == before
    assert model.config.use_cache is True


# --- 2-rank CPU DDP -------------------------------------------------------------------------------


def _rank_main(rank: int, world: int, init: str, name: str, subsets: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model, batches = workload(name)
        mine = batches[rank::world]  # round-robin shards, as grft_app.lit's probe loader gives them
        results = {}
        for low in (False, True):
            cfg = grft.GRFTConfig(k=2, selection="row", subsets=subsets)
            torch.manual_seed(7)
            results[low] = grft.accumulate_gradients(model.eval(), mine, cfg, low_memory=low)
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.process
@pytest.mark.parametrize("subsets", [1, 2])
@pytest.mark.parametrize("name", ["vit", "llama"])
def test_two_rank_ddp_low_memory_probe_selects_what_the_plain_probe_selects(tmp_path, name, subsets):
    out = tmp_path / "grads.pt"
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank_main, args=(2, init, name, subsets, str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    for n in ddp[False]:
        assert torch.equal(ddp[False][n], ddp[True][n]), n  # DDP: low-memory == plain, bit for bit
    model, batches = workload(name)
    torch.manual_seed(7)
    single = grft.accumulate_gradients(model.eval(), batches, grft.GRFTConfig(k=2, subsets=subsets), low_memory=False)
    # One process sums the batches in another order than two ranks do: the indices must agree.
    assert selections(ddp[True], subsets) == selections(single, subsets)


def test_half_precision_weights_are_summed_in_float32():
    """bf16 weights: H is the float32 sum of the per-batch bf16 gradients (the plain probe would sum in bf16)."""
    model = make_tiny_llama().to(torch.bfloat16).eval()
    batches = token_batches(3)
    low = gradients(model, batches, low_memory=True)
    per_batch = [gradients(model, [b], low_memory=False) for b in batches]
    for n, h in low.items():
        assert h.dtype == torch.float32
        want = torch.zeros_like(h)
        for g in per_batch:
            want += g[n].float()
        assert torch.equal(h, want), n


def test_a_weight_shared_by_two_layers_is_summed_once():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.blocks = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6))
            self.blocks[2].weight = self.blocks[0].weight
            self.head = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.blocks(x))

    model = Tied()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 6, generator=g), torch.arange(8) % 3) for _ in range(2)]
    arch = grft.Architecture(head="head", blocks="blocks")
    cfg = grft.GRFTConfig(k=2)
    plain = grft.accumulate_gradients(model, batches, cfg, arch=arch, low_memory=False)
    low = grft.accumulate_gradients(model, batches, cfg, arch=arch, low_memory=True)
    for n in plain:
        assert torch.equal(plain[n], low[n]), n

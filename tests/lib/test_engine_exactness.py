"""GRFT against independent float64 references of the paper's equations.

- Eq. 4-5: the selected indices equal a brute-force ranking of per-row/column sums of squared
  gradients of a hand-written SCL loss.
- Algorithm 1: N Adam steps through the API equal N steps of a dense reference that trains full
  weights with Adam on the 0/1-masked gradient and the penalty written out on full matrices.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import grft
from helpers.models import image_batches, make_tiny_vit

DEPTH = 3  # blocks of the tiny ViT


def loop_scl(features: torch.Tensor, labels: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Khosla et al. (2020) Eq. 2, written as loops over anchors, positives and the denominator."""
    z = features / features.norm(dim=1, keepdim=True)
    n = z.shape[0]
    losses = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / tau) for a in range(n) if a != i)
        losses.append(-sum(torch.log(torch.exp(z[i] @ z[p] / tau) / denom) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def eligible_names(depth: int = DEPTH) -> list[str]:
    names = ["patch_embed.proj"]
    for b in range(depth):
        names += [f"blocks.{b}.attn.qkv", f"blocks.{b}.attn.proj", f"blocks.{b}.mlp.fc1", f"blocks.{b}.mlp.fc2"]
    return names


def vit_features(model, x):
    return model.forward_head(model.forward_features(x), pre_logits=True)


def brute_force_gradients(model, batches) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(model)
    weights = {n: ref.get_submodule(n).weight for n in eligible_names()}
    for w in weights.values():
        w.requires_grad_(True)
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    for x, y in batches:
        if isinstance(x, list):
            feats, labels = vit_features(ref, torch.cat(x)), y.repeat(len(x))
        else:
            feats, labels = vit_features(ref, x), y
        grads = torch.autograd.grad(loop_scl(feats, labels), list(weights.values()))
        for n, g in zip(weights, grads, strict=True):
            total[n] += g
    return total


def brute_force_rank(h: torch.Tensor, kind: str, k: int) -> list:
    m = h.reshape(h.shape[0], -1).tolist()
    if kind == "row":
        scores = [sum(v * v for v in row) for row in m]
        return sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])
    if kind == "column":
        scores = [sum(row[j] ** 2 for row in m) for j in range(len(m[0]))]
        return sorted(sorted(range(len(scores)), key=lambda j: -scores[j])[:k])
    return [sorted(sorted(range(len(row)), key=lambda j: -abs(row[j]))[:k]) for row in m]


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
@pytest.mark.parametrize("views", [1, 2])
def test_selection_equals_brute_force_ranking_of_eq4(kind, views):
    model = make_tiny_vit(dtype=torch.float64)
    batches = image_batches(n_batches=2, batch=6, dtype=torch.float64, views=views)
    cfg = grft.GRFTConfig(k=2, selection=kind)
    sel = grft.select(model, batches, cfg)
    grads = brute_force_gradients(model, batches)
    assert set(sel.layers) == set(eligible_names())
    for name, h in grads.items():
        assert sel[name].index.tolist() == brute_force_rank(h, kind, 2), name


def test_subsets_take_the_gradient_of_the_lowest_loss_part():
    model = make_tiny_vit(dtype=torch.float64)
    batches = image_batches(n_batches=3, batch=6, dtype=torch.float64)
    # One batch per part: the chosen part is the single batch with the smallest SCL loss.
    with torch.no_grad():
        losses = [float(loop_scl(vit_features(model, x), y)) for x, y in batches]
    best = batches[losses.index(min(losses))]
    grads = brute_force_gradients(model, [best])
    sel = grft.select(model, batches, grft.GRFTConfig(k=1, selection="row", subsets=3))
    for name, h in grads.items():
        assert sel[name].index.tolist() == brute_force_rank(h, "row", 1), name
    whole = grft.select(model, batches, grft.GRFTConfig(k=1, selection="row", subsets=1))
    assert whole != sel  # the probe data really changed the choice here


def regular_module_names(regular_layers) -> list[str]:
    blocks = range(DEPTH) if regular_layers == "all" else range(DEPTH - regular_layers, DEPTH)
    return [n for n in eligible_names() if n == "patch_embed.proj" or int(n.split(".")[1]) in blocks]


def dense_algorithm1(model, selection, cfg, batches, steps, lr, betas=(0.9, 0.999), eps=1e-8):
    """Algorithm 1 on full matrices: Adam on (grad * M), penalty over full W - W_0."""
    ref = copy.deepcopy(model)
    masks = {}
    for name in eligible_names():
        w = ref.get_submodule(name).weight
        mask = torch.zeros(w.shape[0], w[0].numel(), dtype=w.dtype)
        idx = selection[name].index.tolist()
        for r in range(mask.shape[0]):
            for c in range(mask.shape[1]):
                if cfg.selection == "row":
                    mask[r, c] = r in idx
                elif cfg.selection == "column":
                    mask[r, c] = c in idx
                else:
                    mask[r, c] = c in idx[r]
        masks[name] = mask.reshape(w.shape)
    params = {}
    for name in eligible_names():
        mod = ref.get_submodule(name)
        params[name + ".weight"] = mod.weight
        if mod.bias is not None:
            params[name + ".bias"] = mod.bias
    params["head.weight"], params["head.bias"] = ref.head.weight, ref.head.bias
    for p in ref.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    start = {n: p.detach().clone() for n, p in params.items()}
    regular = regular_module_names(cfg.regular_layers) + ["head"]
    in_r = [n for n in params if n.rsplit(".", 1)[0] in regular]
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    for t in range(1, steps + 1):
        x, y = batches[(t - 1) % len(batches)]
        loss = F.cross_entropy(ref(x), y)
        if cfg.norm == "l2":
            loss = loss + cfg.lam * sum(((params[n] - start[n]) ** 2).sum() for n in in_r)
        elif cfg.norm == "l1":
            loss = loss + cfg.lam * sum((params[n] - start[n]).abs().sum() for n in in_r)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for (n, p), g in zip(params.items(), grads, strict=True):
                module = n.rsplit(".", 1)[0]
                if n.endswith(".weight") and module in masks:
                    g = g * masks[module]
                m[n] = betas[0] * m[n] + (1 - betas[0]) * g
                v[n] = betas[1] * v[n] + (1 - betas[1]) * g * g
                m_hat = m[n] / (1 - betas[0] ** t)
                v_hat = v[n] / (1 - betas[1] ** t)
                p -= lr * m_hat / (v_hat.sqrt() + eps)
    return ref


def grft_training(model, selection, cfg, batches, steps, lr):
    tuned = copy.deepcopy(model)
    grft.attach(tuned, selection, cfg)
    trainable = [p for p in tuned.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=lr, eps=1e-8)
    for t in range(steps):
        x, y = batches[t % len(batches)]
        loss = F.cross_entropy(tuned(x), y) + grft.penalty(tuned)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return grft.merge(tuned)


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
@pytest.mark.parametrize("norm,regular_layers", [("l2", 1), ("l1", "all"), ("none", 0)])
def test_adam_steps_equal_dense_float64_algorithm1(kind, norm, regular_layers):
    # No qkv bias: its key part has an exactly-zero gradient (softmax ignores a shift), so Adam would
    # amplify the two implementations' different rounding noise there into a visible difference.
    model = make_tiny_vit(dtype=torch.float64, qkv_bias=False)
    batches = image_batches(n_batches=2, batch=6, dtype=torch.float64)
    cfg = grft.GRFTConfig(k=2, selection=kind, norm=norm, lam=0.05, regular_layers=regular_layers)
    selection = grft.select(model, batches, cfg)
    ref = dense_algorithm1(model, selection, cfg, batches, steps=4, lr=1e-2)
    ours = grft_training(model, selection, cfg, batches, steps=4, lr=1e-2)
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert ref_state.keys() == our_state.keys()
    moved = 0
    for key in ref_state:
        diff = (ref_state[key] - our_state[key]).abs().max().item()
        assert diff < 1e-9, f"{key}: {diff}"
        moved += int(not torch.equal(model.state_dict()[key], our_state[key]))
    assert moved > 0
    # Frozen entries stayed bit-identical, and exactly the masked ones moved.
    w0 = model.state_dict()["blocks.0.mlp.fc1.weight"]
    w1 = our_state["blocks.0.mlp.fc1.weight"]
    changed = (w0 != w1).reshape(w0.shape[0], -1)
    idx = selection["blocks.0.mlp.fc1"].index
    if kind == "row":
        assert changed.any(dim=1).nonzero().flatten().tolist() == idx.tolist()
    elif kind == "column":
        assert changed.any(dim=0).nonzero().flatten().tolist() == idx.tolist()
    else:
        assert int(changed.sum()) == idx.numel()


def test_sparse_gradient_blocks_give_the_same_result(monkeypatch):
    """The block-wise sparse slice gradient (no full [out, in] buffer) is independent of the block size."""
    import grft.layers as layers

    model = make_tiny_vit(dtype=torch.float64)
    batches = image_batches(n_batches=2, dtype=torch.float64)
    cfg = grft.GRFTConfig(k=3, selection="sparse")
    sel = grft.select(model, batches, cfg)
    monkeypatch.setattr(layers, "SPARSE_BLOCK_ROWS", 5)
    small = grft_training(model, sel, cfg, batches, steps=2, lr=1e-2)
    monkeypatch.setattr(layers, "SPARSE_BLOCK_ROWS", 4096)
    large = grft_training(model, sel, cfg, batches, steps=2, lr=1e-2)
    for key, value in small.state_dict().items():
        assert torch.allclose(value, large.state_dict()[key], atol=1e-12, rtol=0)


def test_scl_equals_loop_implementation_of_khosla_eq2():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(12, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (12,), generator=g)
    ours = grft.supervised_contrastive_loss(features, labels, temperature=0.07)
    ref = loop_scl(features, labels, 0.07)
    assert math.isclose(float(ours), float(ref), rel_tol=1e-12)
    # Temperature matters, and so does every label.
    assert not math.isclose(float(grft.supervised_contrastive_loss(features, labels, 0.5)), float(ref), rel_tol=1e-6)
    flipped = labels.clone()
    flipped[0] = (flipped[0] + 1) % 4
    assert not math.isclose(float(grft.supervised_contrastive_loss(features, flipped, 0.07)), float(ref), rel_tol=1e-6)


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
def test_ranking_a_matrix_of_many_chunks_equals_brute_force(kind, monkeypatch):
    """The ranking converts a fixed number of rows at a time; with chunks of a few rows (and one that
    ends short) it still picks what a plain Python sum of squares over each whole row/column picks."""
    import grft.selection as selection

    monkeypatch.setattr(selection, "RANK_CHUNK_ELEMENTS", 3 * 9)  # 3 rows of 9 per chunk: 4 chunks, the last of 2
    g = torch.Generator().manual_seed(5)
    h = torch.randn(11, 9, generator=g)
    assert selection.rank(h, kind, 3).tolist() == brute_force_rank(h, kind, 3)

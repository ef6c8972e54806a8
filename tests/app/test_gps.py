"""GPS, the reference behaviour: k entries per row, masks on every gradient, frozen entries untouched.

The masks are checked against a plain loop over rows; the training checks compare tensors
bit-for-bit, both with a hand-written Adam loop and through the LightningModule's hook.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import grft
from grft.architecture import detect_architecture
from grft_app.methods import MethodSettings, make_method
from grft_app.methods.gps import build_masks, load_gps, model_masks
from grft_app.models import ModelBundle
from helpers.models import image_batches, make_tiny_vit

K = 2
ELIGIBLE = ["patch_embed.proj"] + [
    f"blocks.{b}.{m}" for b in range(3) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
]


def gps(k: int = K, **grft_keys):
    return make_method(MethodSettings(name="gps", grft=grft.GRFTConfig(k=k, selection="row", **grft_keys)))


def probed(model, k: int = K):
    method = gps(k)
    tuned = method.prepare(ModelBundle(model, detect_architecture(model), None))
    assert method.needs_probe(tuned)
    tuned.train()
    method.probe(tuned, image_batches(n_batches=2, views=2))
    assert not method.needs_probe(tuned)
    return method, tuned


def test_probe_facts_count_k_entries_in_every_row_of_every_eligible_weight():
    model = make_tiny_vit()
    rows = sum(model.get_submodule(name).weight.shape[0] for name in ELIGIBLE)
    method = gps()
    tuned = method.prepare(ModelBundle(model, detect_architecture(model), None)).train()
    facts = method.probe(tuned, image_batches(n_batches=2, views=2))
    assert facts == {"layers": len(ELIGIBLE), "selected_entries": K * rows}  # JSON values, for the run record


def loop_top_k(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the k columns with the largest |value|, as a 0/1 matrix (a loop, no topk)."""
    out = torch.zeros(matrix.shape, dtype=torch.bool)
    for i in range(matrix.shape[0]):
        row = [abs(float(v)) for v in matrix[i]]
        for j in sorted(range(len(row)), key=lambda j: -row[j])[:k]:
            out[i, j] = True
    return out


def test_build_masks_keeps_the_k_largest_per_row_and_the_weight_shape():
    g = torch.Generator().manual_seed(0)
    grads = {
        "lin": torch.randn(7, 11, generator=g, dtype=torch.float64),
        "conv": torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64),
    }
    masks = build_masks(grads, 3)
    for name, grad in grads.items():
        assert masks[name].shape == grad.shape and masks[name].dtype == torch.bool
        flat = masks[name].reshape(grad.shape[0], -1)
        assert flat.sum(dim=1).tolist() == [3] * grad.shape[0]
        assert torch.equal(flat, loop_top_k(grad.reshape(grad.shape[0], -1), 3))


def test_probe_masks_have_k_entries_per_row_at_the_largest_probe_gradients():
    base = make_tiny_vit()
    _, model = probed(copy.deepcopy(base))
    masks = model_masks(model)
    assert sorted(masks) == sorted(ELIGIBLE)
    grads = grft.accumulate_gradients(
        copy.deepcopy(base).train(), image_batches(n_batches=2, views=2), grft.GRFTConfig(k=K, selection="sparse")
    )
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert mask.shape == weight.shape  # full size, as the GPS code stores it
        rows = mask.reshape(mask.shape[0], -1)
        assert rows.sum(dim=1).tolist() == [K] * mask.shape[0]
        assert torch.equal(rows, loop_top_k(grads[name].reshape(mask.shape[0], -1), K))


def test_masks_are_applied_to_every_gradient_before_the_step():
    _, model = probed(make_tiny_vit())
    method = gps()
    x, y = image_batches(n_batches=1, seed=4)[0]
    F.cross_entropy(model(x), y).backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    method.before_optimizer_step(model)
    masks = model_masks(model)
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = n.rsplit(".", 1)[0]
        if n.endswith(".weight") and layer in masks:
            expected = torch.where(masks[layer], raw[n], torch.zeros_like(raw[n]))
            assert torch.equal(p.grad, expected), n
            assert bool((raw[n][~masks[layer]] != 0).any())  # the full gradient did reach the frozen entries
        else:
            assert torch.equal(p.grad, raw[n]), n  # biases and head keep their whole gradient


def test_three_adam_steps_move_exactly_the_selected_entries():
    method, model = probed(make_tiny_vit())
    masks = {n: m.clone() for n, m in model_masks(model).items()}
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for x, y in image_batches(n_batches=3, seed=7):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step(model)
        opt.step()
    for n, p in model.named_parameters():
        layer = n.rsplit(".", 1)[0]
        if n.endswith(".weight") and layer in masks:
            mask = masks[layer]
            assert torch.equal(p[~mask], start[n][~mask]), f"{n}: a frozen entry moved"
            assert torch.equal(p != start[n], mask), f"{n}: the moved entries are not the selected ones"
        elif p.requires_grad:
            assert not torch.equal(p, start[n]), n
        else:
            assert torch.equal(p, start[n]), n


def test_weight_decay_is_refused_because_it_would_move_frozen_entries():
    from grft_app.lit.module import TrainSettings

    method = gps()
    with pytest.raises(ValueError, match="method gps needs weight_decay=0"):
        method.check_training(TrainSettings(weight_decay=1e-4))
    method.check_training(TrainSettings(weight_decay=0.0, optimizer="adamw"))


def test_masks_travel_in_the_state_dict_and_a_restored_model_skips_the_probe():
    method, model = probed(make_tiny_vit())
    keys = method.checkpoint_keys(model)
    assert {f"{n}.gps_mask" for n in ELIGIBLE} <= keys
    state = {k: v for k, v in model.state_dict().items() if k in keys}
    fresh_method = gps()
    fresh = fresh_method.prepare(ModelBundle(make_tiny_vit(seed=3), detect_architecture(model), None))
    assert fresh_method.needs_probe(fresh)
    fresh.load_state_dict(state, strict=False)
    assert not fresh_method.needs_probe(fresh)
    for n, m in model_masks(model).items():
        assert torch.equal(model_masks(fresh)[n], m)


def test_adapter_file_holds_selected_entries_and_rebuilds_the_model(tmp_path):
    base = make_tiny_vit()
    method, model = probed(copy.deepcopy(base))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = image_batches(n_batches=1, seed=2)[0]
    F.cross_entropy(model(x), y).backward()
    method.before_optimizer_step(model)
    opt.step()
    path = method.save_adapter(model, tmp_path / "adapter.safetensors")
    tensors = load_file(str(path))
    for name in ELIGIBLE:
        out = model.get_submodule(name).weight.shape[0]
        assert tensors[f"{name}.gps_index"].shape == (out, K)
        assert tensors[f"{name}.gps_values"].shape == (out, K)
        assert f"{name}.weight" not in tensors
    rebuilt = load_gps(copy.deepcopy(base), path)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.trains
def test_lightning_applies_the_masks_on_every_step():
    """Through FineTuneModule's on_before_optimizer_step: frozen entries bit-identical after 3 steps."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from grft_app.lit.module import FineTuneModule, TrainSettings

    model = make_tiny_vit()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = gps()
    bundle = ModelBundle(model, detect_architecture(model), None)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(18, 3, 16, 16, generator=g), torch.randint(0, 5, (18,), generator=g))
    module = FineTuneModule(
        bundle,
        method,
        5,
        TrainSettings(lr=1e-2, warmup_epochs=0),
        probe_loader=lambda: image_batches(n_batches=2, views=2),
    )
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=6))
    assert trainer.global_step == 3
    masks = model_masks(module.model)
    assert sorted(masks) == sorted(ELIGIBLE)
    for name, mask in masks.items():
        w = module.model.get_submodule(name).weight.detach()
        before = start[f"{name}.weight"]
        assert torch.equal(w[~mask], before[~mask]), name
        assert bool((w[mask] != before[mask]).any()), name
    report = method.param_report(module.model)
    assert report.trainable == sum(int(m.sum()) for m in masks.values()) + sum(
        p.numel()
        for n, p in module.model.named_parameters()
        if n.endswith(".bias") and "norm" not in n or n.startswith("head.")
    )


def test_ignored_grft_keys_are_announced(caplog):
    model = make_tiny_vit()
    with caplog.at_level("WARNING", logger="grft"):
        gps(subsets=2, lam=1e-3).prepare(ModelBundle(model, detect_architecture(model), None))
    assert "gps ignores" in caplog.text


def test_k_larger_than_a_row_is_refused_before_training():
    model = make_tiny_vit()
    with pytest.raises(ValueError, match=r"k=25 is larger than the 24 entries per row .* of blocks.0.attn.qkv"):
        gps(k=25).prepare(ModelBundle(model, detect_architecture(model), None))

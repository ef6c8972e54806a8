"""Slice-sized training state, late filling of the selection, merge and adapter round trips."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.utils._python_dispatch import TorchDispatchMode

import grft
from helpers.models import image_batches, make_tiny_vit


def train_steps(model, batches, steps=3, lr=1e-2):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for t in range(steps):
        x, y = batches[t % len(batches)]
        loss = F.cross_entropy(model(x), y) + grft.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
def test_only_slices_biases_and_head_train_and_adam_state_is_slice_sized(kind):
    model = make_tiny_vit()
    batches = image_batches()
    cfg = grft.GRFTConfig(k=2, selection=kind, lam=1e-3)
    grft.attach(model, grft.select(model, batches, cfg), cfg)
    eligible = grft.sliced_layers(model)
    assert all(not layer.weight.requires_grad for layer in eligible.values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"{n}.grft_delta" for n in eligible} | {f"{n}.bias" for n in eligible} | {"head.weight", "head.bias"}
    assert trainable == expected
    opt = train_steps(model, batches)
    assert all(layer.weight.grad is None for layer in eligible.values())
    state_numel = sum(s["exp_avg"].numel() for s in opt.state.values())
    assert state_numel == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert grft.param_report(model).trainable == state_numel
    for p in model.parameters():
        if not p.requires_grad:
            assert p.grad is None


class LargestTensor(TorchDispatchMode):
    """Records the largest new tensor any aten op allocates (views and in-place results excluded)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat_in = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if torch.is_tensor(a)]
        storages = {a.untyped_storage().data_ptr() for a in flat_in}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if torch.is_tensor(t) and t.untyped_storage().data_ptr() not in storages:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
@pytest.mark.parametrize("layer_type", ["linear", "conv"])
def test_no_op_builds_a_full_size_weight_or_weight_gradient(kind, layer_type, monkeypatch):
    import grft.layers

    # Sparse slice gradients are computed in blocks of rows; make this 48-row layer need three.
    monkeypatch.setattr(grft.layers, "SPARSE_BLOCK_ROWS", 16)
    torch.manual_seed(0)
    if layer_type == "linear":
        base, x = torch.nn.Linear(64, 48), torch.randn(4, 64, requires_grad=True)
    else:
        base, x = torch.nn.Conv2d(8, 48, kernel_size=4, stride=4), torch.randn(2, 8, 8, 8, requires_grad=True)
    weight_numel = base.weight.numel()
    layer = grft.SlicedLinear(base, kind, 2) if layer_type == "linear" else grft.SlicedConv2d(base, kind, 2)
    with LargestTensor() as probe:
        layer(x).square().sum().backward()
    assert probe.largest < weight_numel
    assert layer.weight.grad is None and layer.grft_delta.grad is not None


@pytest.mark.parametrize("layer_type", ["linear", "conv"])
def test_column_slices_save_only_the_chosen_input_features(layer_type):
    torch.manual_seed(0)
    if layer_type == "linear":
        base, x = torch.nn.Linear(64, 48), torch.randn(5, 7, 64, requires_grad=True)
        chosen_numel = 5 * 7 * 3
    else:
        base, x = torch.nn.Conv2d(8, 48, kernel_size=4, stride=4), torch.randn(2, 8, 8, 8, requires_grad=True)
        chosen_numel = 2 * 3 * 4  # [batch, k, positions]
    layer = grft.SlicedLinear(base, "column", 3) if layer_type == "linear" else grft.SlicedConv2d(base, "column", 3)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    activations = [t for t in saved if t.dtype.is_floating_point]
    assert [t.numel() for t in activations] == [chosen_numel]
    y.sum().backward()


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
def test_allocate_first_fill_later_changes_no_output_and_trains_identically(kind):
    model = make_tiny_vit()
    batches = image_batches()
    cfg = grft.GRFTConfig(k=2, selection=kind, lam=1e-2, regular_layers=1)
    x = batches[0][0]
    before = model(x)
    sel = grft.select(model, batches, cfg)

    late = copy.deepcopy(model)
    grft.attach(late, None, cfg)
    assert not grft.has_selection(late)
    torch.testing.assert_close(late(x), before, rtol=0, atol=0)
    # The probe runs on the attached model, as the Lightning app does in on_fit_start.
    assert grft.select(late, batches, cfg) == sel
    grft.apply_selection(late, sel)
    assert grft.has_selection(late) and grft.current_selection(late) == sel
    torch.testing.assert_close(late(x), before, rtol=0, atol=0)

    early = copy.deepcopy(model)
    grft.attach(early, sel, cfg)
    train_steps(late, batches)
    train_steps(early, batches)
    torch.testing.assert_close(late(x), early(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
def test_adapter_and_merge_round_trip(tmp_path, kind):
    base = make_tiny_vit()
    batches = image_batches()
    cfg = grft.GRFTConfig(k=2, selection=kind, lam=1e-3)
    tuned = copy.deepcopy(base)
    grft.attach(tuned, grft.select(tuned, batches, cfg), cfg)
    train_steps(tuned, batches)
    x = image_batches(n_batches=1, seed=9)[0][0]
    expected = tuned(x).detach()

    path = grft.save_adapter(tuned, tmp_path / "adapter.safetensors")
    eligible_shapes = {tuple(m.weight.shape) for m in grft.sliced_layers(tuned).values()}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            shape = tuple(f.get_slice(key).get_shape())
            assert shape not in eligible_shapes, key
            assert key.startswith("head.") or key.rsplit(".", 1)[-1] in {"grft_index", "grft_delta", "bias"}

    fresh = grft.load_adapter(copy.deepcopy(base), path)
    torch.testing.assert_close(fresh(x), expected, atol=1e-6, rtol=0)

    grft.merge(fresh)
    assert list(fresh.state_dict()) == list(base.state_dict())
    assert not any(isinstance(m, grft.SlicedLayer) for m in fresh.modules())
    assert type(fresh.blocks[0].attn.qkv) is torch.nn.Linear
    torch.testing.assert_close(fresh(x), expected, atol=1e-6, rtol=0)
    grft.merge(tuned)
    torch.testing.assert_close(tuned(x), expected, atol=1e-6, rtol=0)


def test_selection_round_trips_through_safetensors_and_json(tmp_path):
    model = make_tiny_vit()
    for kind in ("row", "sparse"):
        sel = grft.select(model, image_batches(), grft.GRFTConfig(k=2, selection=kind))
        for suffix in (".safetensors", ".json"):
            assert grft.Selection.load(sel.save(tmp_path / f"{kind}{suffix}")) == sel


def test_param_report_reproduces_table8_for_vit_b16():
    import timm

    with torch.device("meta"):
        cifar = timm.create_model("vit_base_patch16_224", num_classes=100)
        nabirds = timm.create_model("vit_base_patch16_224", num_classes=555)
    assert round(grft.param_report(cifar, grft.GRFTConfig(k=1, selection="row")).percent, 2) == 0.26
    assert round(grft.param_report(nabirds, grft.GRFTConfig(k=26, selection="row")).percent, 2) == 2.56
    grft.attach(cifar, None, grft.GRFTConfig(k=1))
    assert round(grft.param_report(cifar).percent, 2) == 0.26


def test_param_report_reproduces_table8_for_llama_3_2_1b():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
        num_labels=2,
    )
    with torch.device("meta"):
        model = LlamaForSequenceClassification(config)
    assert round(grft.param_report(model, grft.GRFTConfig(k=3, selection="row")).percent, 2) == 0.08

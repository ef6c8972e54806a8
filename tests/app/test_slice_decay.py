"""Weight decay on a GRFT slice is the optimizer's decay of the selected weights themselves
(grft/decay.py, docs/PROTOCOL.md): checked against torch's own Adam/AdamW run on those weights."""

from __future__ import annotations

import pytest
import torch

import grft
from grft_app.data.splits import InputSpec
from grft_app.lit.module import TrainSettings, make_optimizer
from grft_app.methods import MethodSettings, make_method
from grft_app.models import ModelBundle
from helpers.models import image_batches, make_tiny_vit


def tuned(seed: int = 0):
    config = grft.GRFTConfig(k=2, selection="row", norm="none", lam=0.0, regular_layers=0)
    method = make_method(MethodSettings(name="grft", grft=config))
    model = make_tiny_vit(num_classes=5, seed=seed)
    bundle = ModelBundle(model, grft.detect_architecture(model), InputSpec(img_size=16))
    return method, method.prepare(bundle)


@pytest.mark.parametrize("optimizer,reference", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_slice_decay_is_the_optimizers_decay_of_the_selected_weights(optimizer, reference):
    method, model = tuned()
    settings = TrainSettings(lr=1e-2, weight_decay=0.3, optimizer=optimizer)
    opt = make_optimizer(method, model, settings)
    layers = grft.sliced_layers(model)
    name = next(iter(layers))
    layer = layers[name]
    # The reference: torch's optimizer on the selected weights W[slice] as a plain tensor, fed the same gradients.
    weights = torch.nn.Parameter((layer.grft_base + layer.grft_delta).detach().clone())
    ref = reference([weights], lr=1e-2, weight_decay=0.3)
    for images, labels in image_batches(n_batches=3, classes=5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        weights.grad = layer.grft_delta.grad.detach().clone()
        method.decay(model, opt, settings.weight_decay, decoupled=optimizer == "adamw")
        opt.step()
        ref.step()
    assert torch.allclose(layer.grft_base + layer.grft_delta, weights, atol=1e-6, rtol=1e-5)
    # A decay of delta (towards W_pre) would differ: the pre-trained weights are far from zero.
    assert not torch.allclose(layer.grft_base + layer.grft_delta, layer.grft_base, atol=1e-4)


def test_without_weight_decay_nothing_changes_but_the_adam_step():
    method, model = tuned()
    opt = make_optimizer(method, model, TrainSettings(lr=1e-2, weight_decay=0.0, optimizer="adamw"))
    layer = next(iter(grft.sliced_layers(model).values()))
    before = layer.grft_delta.detach().clone()
    method.decay(model, opt, 0.0, decoupled=True)
    assert torch.equal(layer.grft_delta, before)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)

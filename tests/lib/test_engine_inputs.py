"""Bad input gets a ValueError naming the allowed values; dtypes, devices and Llama models work."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import grft
from helpers.models import image_batches, make_tiny_llama, make_tiny_vit


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"k": 0}, "k must be"),
        ({"k": 1.5}, "k must be"),
        ({"selection": "diagonal"}, "row, column, sparse"),
        ({"norm": "l3"}, "l2, l1, none"),
        ({"lam": -1e-3}, ">= 0"),
        ({"lam": float("nan")}, ">= 0"),
        ({"regular_layers": -1}, "'all'"),
        ({"regular_layers": "some"}, "'all'"),
        ({"subsets": 0}, "subsets must be"),
    ],
)
def test_bad_config_values_name_the_allowed_ones(kwargs, words):
    with pytest.raises(ValueError, match=words):
        grft.GRFTConfig(**kwargs)


def test_k_larger_than_the_matrix_side_is_refused():
    model = make_tiny_vit()  # embed 24: qkv has 72 rows, 24 columns
    with pytest.raises(ValueError, match=r"k=25 .* allowed: 1\.\.24"):
        grft.select(model, image_batches(), grft.GRFTConfig(k=25, selection="column"))
    with pytest.raises(ValueError, match=r"allowed: 1\.\.24"):
        grft.attach(model, None, grft.GRFTConfig(k=25, selection="row"))


def test_regular_layers_beyond_the_depth_is_refused():
    with pytest.raises(ValueError, match=r"regular_layers=4 exceeds the model's 3 blocks; allowed: 0\.\.3 or 'all'"):
        grft.attach(make_tiny_vit(), None, grft.GRFTConfig(regular_layers=4))


def test_a_model_without_eligible_layers_is_refused():
    class HeadOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.LayerNorm(4)])
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.blocks[0](x))

    with pytest.raises(ValueError, match="no eligible layer"):
        grft.attach(HeadOnly(), None, grft.GRFTConfig())
    with pytest.raises(ValueError, match="no eligible layer"):
        grft.select(HeadOnly(), [(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]))], grft.GRFTConfig())


def test_a_model_without_a_known_head_names_the_fix():
    with pytest.raises(ValueError, match="grft.Architecture"):
        grft.attach(torch.nn.Sequential(torch.nn.Linear(3, 3)), None, grft.GRFTConfig())


def test_an_empty_loader_is_refused():
    with pytest.raises(ValueError, match="no batches"):
        grft.select(make_tiny_vit(), [], grft.GRFTConfig())
    with pytest.raises(ValueError, match="no batches"):
        grft.select(make_tiny_vit(), torch.utils.data.DataLoader([]), grft.GRFTConfig(subsets=2))


def test_subsets_need_enough_batches_and_a_reiterable():
    with pytest.raises(ValueError, match="subsets=5 needs at least"):
        grft.select(make_tiny_vit(), image_batches(n_batches=3), grft.GRFTConfig(subsets=5))
    with pytest.raises(ValueError, match="walks the batches twice"):
        grft.select(make_tiny_vit(), iter(image_batches()), grft.GRFTConfig(subsets=2))


def test_scl_without_positive_pairs_says_how_to_get_them():
    batch = (torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="two augmented views"):
        grft.select(make_tiny_vit(), [batch], grft.GRFTConfig())


def test_penalty_and_merge_need_an_attached_model():
    with pytest.raises(ValueError, match="grft.attach"):
        grft.penalty(make_tiny_vit())
    with pytest.raises(ValueError, match="grft.attach"):
        grft.merge(make_tiny_vit())


def test_a_selection_for_another_config_is_refused():
    model = make_tiny_vit()
    sel = grft.select(model, image_batches(), grft.GRFTConfig(k=2))
    with pytest.raises(ValueError, match="config asks for row k=1"):
        grft.attach(model, sel, grft.GRFTConfig(k=1))


def devices():
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
@pytest.mark.parametrize("precision", ["float32", "float64", "bf16-autocast"])
@pytest.mark.parametrize("layer_type", ["linear", "conv"])
def test_slice_gradients_match_the_masked_full_gradient(device, kind, precision, layer_type):
    """Every dtype and device: the slice gets exactly the full weight gradient's entries at the slice."""
    torch.manual_seed(0)
    dtype = torch.float64 if precision == "float64" else torch.float32
    if layer_type == "linear":
        base = torch.nn.Linear(32, 20).to(device, dtype)
        x = torch.randn(3, 5, 32, device=device, dtype=dtype)
    else:
        base = torch.nn.Conv2d(4, 20, kernel_size=3, stride=2, padding=1).to(device, dtype)
        x = torch.randn(2, 4, 9, 9, device=device, dtype=dtype)
    reference = copy.deepcopy(base)
    layer = grft.SlicedLinear(base, kind, 3) if layer_type == "linear" else grft.SlicedConv2d(base, kind, 3)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-autocast")
    with autocast:
        ya, yb = layer(xa), reference(xb)
    assert ya.dtype == yb.dtype
    target = torch.randn_like(ya.float())
    (ya.float() * target).sum().backward()
    (yb.float() * target).sum().backward()
    tol = {"float64": 1e-12, "float32": 1e-5, "bf16-autocast": 3e-2}[precision]
    full = reference.weight.grad.reshape(20, -1)
    expected = grft.layers.read_slice(full, kind, layer.grft_index)
    scale = full.abs().max()
    assert layer.grft_delta.grad.dtype == dtype
    assert (layer.grft_delta.grad - expected).abs().max() <= tol * scale
    assert (xa.grad - xb.grad).abs().max() <= tol * xb.grad.abs().max()
    assert (layer.bias.grad - reference.bias.grad).abs().max() <= tol * reference.bias.grad.abs().max()


def llama_batches(n=3, batch=6, seq=7, labels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 64, (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[0, -2:] = 0  # one right-padded sequence
        ids[0, -2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.arange(batch) % labels})
    return out


@pytest.mark.parametrize("kind", ["row", "column"])
def test_llama_probe_train_adapter_merge(tmp_path, kind):
    base = make_tiny_llama()
    batches = llama_batches()
    cfg = grft.GRFTConfig(k=2, selection=kind, lam=1e-3, regular_layers=1)
    model = copy.deepcopy(base)
    sel = grft.select(model, batches, cfg)
    assert set(sel.layers) == {
        f"model.layers.{i}.{m}"
        for i in range(2)
        for m in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    }
    grft.attach(model, sel, cfg)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == (
        {f"{n}.grft_delta" for n in sel.layers} | {"score.weight"}
    )
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        loss = F.cross_entropy(model(**inputs).logits, batch["labels"]) + grft.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    inputs = {k: v for k, v in batches[0].items() if k != "labels"}
    expected = model(**inputs).logits.detach()
    fresh = grft.load_adapter(copy.deepcopy(base), grft.save_adapter(model, tmp_path / "a.safetensors"))
    torch.testing.assert_close(fresh(**inputs).logits, expected, atol=1e-6, rtol=0)
    grft.merge(fresh)
    assert list(fresh.state_dict()) == list(base.state_dict())
    torch.testing.assert_close(fresh(**inputs).logits, expected, atol=1e-6, rtol=0)


def test_llama_probe_pools_the_last_attended_token():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = grft.pool_last_token(hidden, {"attention_mask": mask})
    assert pooled.flatten().tolist() == [1.0, 7.0]


def test_a_batch_without_positive_pairs_is_skipped_not_fatal():
    model = make_tiny_vit()
    good = image_batches(n_batches=2)
    lonely = (torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))  # a short last batch of distinct labels
    cfg = grft.GRFTConfig(k=2)
    assert grft.select(model, [*good, lonely], cfg) == grft.select(model, good, cfg)
    subsets = grft.GRFTConfig(k=2, subsets=3)
    assert grft.select(model, [*good, lonely], subsets) is not None

"""load_adapter checks the file and the base before it touches the model (damaged files, wrong bases)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import grft
from grft.adapter import AdapterMismatch
from helpers.models import image_batches, make_tiny_vit


def tuned_adapter(tmp_path, kind="row", base=None):
    base = base if base is not None else make_tiny_vit()
    batches = image_batches()
    cfg = grft.GRFTConfig(k=2, selection=kind, lam=1e-3)
    tuned = copy.deepcopy(base)
    grft.attach(tuned, grft.select(tuned, batches, cfg), cfg)
    opt = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    for x, y in batches:
        loss = F.cross_entropy(tuned(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return base, grft.save_adapter(tuned, tmp_path / "adapter.safetensors")


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()]


def assert_refused_untouched(model, path, match: str) -> None:
    """``load_adapter`` raises ``AdapterMismatch`` matching ``match`` and leaves ``model`` as it was."""
    before = snapshot(model)
    with pytest.raises(AdapterMismatch, match=match):
        grft.load_adapter(model, path)
    assert_untouched(model, before)


def assert_untouched(model, before):
    state, types = before
    assert getattr(model, "grft_state", None) is None
    assert [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)


def rewrite(path, tensors=None, meta_update=None):
    """The adapter file with some tensors or metadata changed (as another tool or a bad copy would)."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["grft"])
        originals = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_update or {})
    save_file({**originals, **(tensors or {})}, str(path), metadata={"grft": json.dumps(meta)})


@pytest.mark.parametrize("kind", ["row", "column", "sparse"])
def test_the_base_fingerprint_is_of_the_pretrained_weights_not_the_tuned_ones(tmp_path, kind):
    base, path = tuned_adapter(tmp_path, kind)
    with safe_open(str(path), framework="pt") as f:
        samples = json.loads(f.metadata()["grft"])["base_samples"]
    for name, values in samples.items():
        matrix = (
            base.get_submodule(name).weight.detach().reshape(base.get_submodule(name).weight.shape[0], -1).reshape(-1)
        )
        positions = grft.adapter.sample_positions(matrix.numel())
        assert values == [float(v) for v in matrix[positions]]
    fresh = copy.deepcopy(base)
    grft.load_adapter(fresh, path)  # the right base loads
    assert fresh.grft_state is not None


def test_wrong_head_size_leaves_the_model_untouched_and_a_retry_works(tmp_path):
    base, path = tuned_adapter(tmp_path)
    other = make_tiny_vit(num_classes=7)  # the same backbone, another head
    other.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("head.")}, strict=False)
    assert_refused_untouched(other, path, r"head\.(weight|bias) .*has shape \(5.*\), the model.s is \(7")
    fresh = copy.deepcopy(base)
    grft.load_adapter(fresh, path)


def test_truncated_file_names_its_path(tmp_path):
    base, path = tuned_adapter(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    model = copy.deepcopy(base)
    assert_refused_untouched(model, path, f"{path}.*truncated or damaged")


def test_flipped_data_bytes_fail_the_checksum(tmp_path):
    base, path = tuned_adapter(tmp_path)
    data = bytearray(path.read_bytes())
    for i in range(1, 9):  # the last bytes are tensor data (the header comes first)
        data[-i] = 0xFF
    path.write_bytes(bytes(data))
    model = copy.deepcopy(base)
    assert_refused_untouched(model, path, "do not match the checksum")


def test_another_base_is_named(tmp_path):
    _, path = tuned_adapter(tmp_path)
    other_weights = make_tiny_vit(seed=1)  # same shapes, other pre-trained weights
    assert_refused_untouched(other_weights, path, "trained on another base model: the pre-trained weights of")
    import timm

    torch.manual_seed(0)
    deeper = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=8,
        embed_dim=24,
        depth=4,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=5,
    )
    assert_refused_untouched(deeper, path, "eligible layers differ")


def test_the_same_base_in_bfloat16_still_loads(tmp_path):
    base, path = tuned_adapter(tmp_path)
    grft.load_adapter(copy.deepcopy(base).to(torch.bfloat16), path)


def test_bad_index_and_older_files_with_nan_are_refused_untouched(tmp_path):
    base, path = tuned_adapter(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        name = next(k for k in f.keys() if k.endswith(".grft_index"))
        index = f.get_tensor(name).clone()
        delta_name = name.replace("grft_index", "grft_delta")
        delta = f.get_tensor(delta_name).clone()
    index[0] = 10_000
    rewrite(path, {name: index}, {"sha256": None})
    model = copy.deepcopy(base)
    assert_refused_untouched(model, path, "indices outside")
    _, path = tuned_adapter(tmp_path)
    delta[0, 0] = float("nan")
    rewrite(path, {delta_name: delta}, {"sha256": None})  # a file written before checksums existed
    assert_refused_untouched(model, path, "non-finite values")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values_are_refused_even_when_the_checksum_matches(tmp_path, value):
    """A diverged run saves NaN as faithfully as any number: a matching checksum does not make it loadable."""
    from grft.adapter import tensors_checksum

    base, path = tuned_adapter(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    delta_name = next(k for k in tensors if k.endswith(".grft_delta"))
    tensors[delta_name][0, 0] = value
    rewrite(path, tensors, {"sha256": tensors_checksum(tensors)})
    assert_refused_untouched(copy.deepcopy(base), path, "non-finite values")

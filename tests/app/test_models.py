"""The model families: timm ViTs from local checkpoints, Llama sequence classifiers, tiny variants."""

from __future__ import annotations

import pytest
import torch

import grft
from grft.targets import eligible_layers
from grft_app.models import ModelUnavailableError, build_model

# A ViT small enough for a test, in timm's architecture options.
VIT_KWARGS = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def vit_cfg(**extra):
    return {"family": "vit", "name": "vit_base_patch16_224", "img_size": 32, "kwargs": VIT_KWARGS, **extra}


def saved_vit(tmp_path, num_classes=7):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=32, num_classes=num_classes, **VIT_KWARGS
    )
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval(), path


def test_vit_checkpoint_file_loads_the_weights_and_a_new_head(tmp_path):
    source, path = saved_vit(tmp_path, num_classes=7)
    bundle = build_model(vit_cfg(checkpoint=str(path)), 5, pretrained=True)
    model = bundle.model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), source.forward_features(x), rtol=0, atol=0)
        random = build_model(vit_cfg(), 5, pretrained=False).model.eval()
        assert not torch.allclose(random.forward_features(x), source.forward_features(x))
    assert model.head.weight.shape == (5, 32)  # the task's head, not the checkpoint's 7 classes
    assert bundle.inputs.img_size == 32 and bundle.inputs.mean == (0.5, 0.5, 0.5)
    assert bundle.arch.head == "head" and bundle.arch.blocks == "blocks"


def test_vit_npz_checkpoint_goes_to_the_npz_loader(tmp_path, monkeypatch):
    from timm.models.vision_transformer import VisionTransformer

    path = tmp_path / "ViT-B_16.npz"
    path.write_bytes(b"placeholder")
    seen = []
    monkeypatch.setattr(VisionTransformer, "load_pretrained", lambda self, file, prefix="": seen.append(file))
    build_model(vit_cfg(checkpoint=str(path)), 5, pretrained=True)
    assert seen == [str(path.resolve())]


def test_vit_checkpoint_of_another_architecture_is_refused(tmp_path):
    _, path = saved_vit(tmp_path)
    with pytest.raises(ValueError, match="does not fit"):
        build_model(vit_cfg(checkpoint=str(path), kwargs={**VIT_KWARGS, "embed_dim": 64}), 5, pretrained=True)


def test_vit_missing_checkpoint_says_how_to_provide_it(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"does not exist.*\.npz.*\.safetensors"):
        build_model(vit_cfg(checkpoint=str(tmp_path / "absent.npz")), 5, pretrained=True)


def test_vit_hub_without_internet_says_how_to_provide_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached, and the hub is offline in tests
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError, match=r"model\.checkpoint=/path/to/file"):
        build_model({"family": "vit", "name": "vit_base_patch16_224.augreg_in21k"}, 5, pretrained=True)


def test_a_non_vit_timm_model_is_refused():
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        build_model({"family": "vit", "name": "resnet18"}, 5, pretrained=False)


def test_tiny_vit_is_the_same_family():
    from timm.models.vision_transformer import VisionTransformer

    bundle = build_model(vit_cfg(), 4, tiny=True)
    assert isinstance(bundle.model, VisionTransformer) and bundle.model.head.out_features == 4
    assert bundle.model(torch.randn(1, 3, bundle.inputs.img_size, bundle.inputs.img_size)).shape == (1, 4)


# --- Llama --------------------------------------------------------------------------------------
LLAMA_MATRICES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def test_tiny_llama_classifies_padded_batches_like_single_sentences():
    from transformers import LlamaForSequenceClassification

    bundle = build_model({"family": "llama", "name": "meta-llama/Llama-3.2-1B", "max_length": 32}, 3, tiny=True)
    model, tok = bundle.model.eval(), bundle.inputs.tokenizer
    assert isinstance(model, LlamaForSequenceClassification) and model.score.out_features == 3
    assert tok.pad_token_id == tok.eos_token_id == model.config.pad_token_id
    assert set(eligible_layers(model, bundle.arch)) == {
        f"model.layers.{i}.{m}" for i in range(2) for m in LLAMA_MATRICES
    }
    texts = ["a cat", "two sentences can say the same thing in other words"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # the first is padded
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_llama_loads_a_local_directory_with_a_new_score_head(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from grft_app.models.llama import tiny_tokenizer

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    causal = LlamaForCausalLM(config)  # what the hub holds: a language model, no classifier
    causal.save_pretrained(tmp_path / "llama")
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "llama")
    bundle = build_model({"family": "llama", "name": str(tmp_path / "llama"), "dtype": "float32"}, 2, pretrained=True)
    model = bundle.model
    torch.testing.assert_close(model.model.layers[1].mlp.down_proj.weight, causal.model.layers[1].mlp.down_proj.weight)
    torch.testing.assert_close(model.model.embed_tokens.weight, causal.model.embed_tokens.weight)
    assert model.score.weight.shape == (2, 16)
    tok2 = bundle.inputs.tokenizer
    assert tok2.pad_token == tok2.eos_token and model.config.pad_token_id == tok2.eos_token_id  # Llama has no pad token
    assert bundle.inputs.kind == "text" and bundle.arch.head == "score"


def test_llama_missing_local_directory_says_what_it_must_hold(tmp_path):
    with pytest.raises(ModelUnavailableError, match="config.json"):
        build_model({"family": "llama", "name": str(tmp_path / "nowhere")}, 2, pretrained=True)


def test_llama_from_the_hub_offline_says_how_to_get_the_gated_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        build_model({"family": "llama", "name": "meta-llama/Llama-3.2-1B"}, 2, pretrained=True)
    message = str(err.value)
    assert "licence" in message and "hf download meta-llama/Llama-3.2-1B" in message and "model.name=<dir>" in message


def test_llama_3_2_1b_on_the_meta_device_matches_its_size_and_table8():
    from grft_app.models.llama import LLAMA_ARCH, meta_model

    model = meta_model(num_labels=2)
    assert sum(p.numel() for p in model.model.parameters()) == 1_235_814_400  # the published 1.24B
    assert set(eligible_layers(model, LLAMA_ARCH)) == {
        f"model.layers.{i}.{m}" for i in range(16) for m in LLAMA_MATRICES
    }
    # Table 8: CoLA / MRPC / RTE with k = 3 rows train 0.08% of the model.
    report = grft.param_report(model, grft.GRFTConfig(k=3, selection="row"), LLAMA_ARCH)
    rows = 3 * 16 * (6 * 2048 + 8192)  # three rows of each matrix: q, k, v, o, gate, up read 2048 inputs, down 8192
    assert report.trainable == rows + 2 * 2048  # + the score head, no biases in Llama
    assert round(report.percent, 2) == 0.08


def test_every_model_yaml_names_the_module_that_builds_it():
    """conf/model's ``builder`` is the module ``build_model`` calls; a config with only ``family`` finds the same."""
    from omegaconf import OmegaConf

    from grft_app.models import model_module
    from grft_app.paths import CONF_DIR

    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        module = model_module(cfg)
        assert module.__name__ == cfg["builder"] and callable(module.build), path.name
        assert model_module({"family": cfg["family"]}) is module
    with pytest.raises(ValueError, match="model family 'nope' is unknown"):
        model_module({"family": "nope"})

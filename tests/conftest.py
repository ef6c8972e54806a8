"""Shared fixtures: tiny models of the paper's families, built from configs (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The tests' models are tiny: several intra-op threads only wait on each other (and on a shared
# machine they spin against other processes). GRFT_TEST_THREADS=N tests with N threads.
torch.set_num_threads(int(os.environ.get("GRFT_TEST_THREADS", "1")))


def make_tiny_vit(num_classes: int = 5, dtype=torch.float32, seed: int = 0, qkv_bias: bool = True):
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=16, patch_size=8, embed_dim=24, depth=3,
        num_heads=2, mlp_ratio=2.0, num_classes=num_classes, qkv_bias=qkv_bias,
    )
    # A pre-trained-looking head is not needed, but a non-zero one makes every test see its gradient.
    torch.nn.init.normal_(model.head.weight, std=0.2)
    return model.to(dtype)


def make_tiny_llama(num_labels: int = 3, dtype=torch.float32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32, num_labels=num_labels, pad_token_id=0,
    )
    return LlamaForSequenceClassification(config).to(dtype)


def image_batches(n_batches: int = 3, batch: int = 6, classes: int = 5, dtype=torch.float32, seed: int = 1, views: int = 1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        labels = torch.randint(0, classes, (batch,), generator=g)
        if views == 1:
            x = torch.randn(batch, 3, 16, 16, generator=g, dtype=dtype)
        else:
            x = [torch.randn(batch, 3, 16, 16, generator=g, dtype=dtype) for _ in range(views)]
        out.append((x, labels))
    return out


@pytest.fixture
def tiny_vit():
    return make_tiny_vit()

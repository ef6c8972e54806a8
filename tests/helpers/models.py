"""Tiny models of the paper's families, built from configs (no downloads), and batches of random images."""

from __future__ import annotations

import torch


def make_tiny_vit(num_classes: int = 5, dtype=torch.float32, seed: int = 0, qkv_bias: bool = True, **timm_options):
    """``timm_options``: more ``timm.create_model`` keywords (e.g. dropout rates)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=8,
        embed_dim=24,
        depth=3,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=num_classes,
        qkv_bias=qkv_bias,
        **timm_options,
    )
    # A pre-trained-looking head is not needed, but a non-zero one makes every test see its gradient.
    torch.nn.init.normal_(model.head.weight, std=0.2)
    return model.to(dtype)


def make_tiny_llama(num_labels: int = 3, dtype=torch.float32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        num_labels=num_labels,
        pad_token_id=0,
    )
    return LlamaForSequenceClassification(config).to(dtype)


def image_batches(
    n_batches: int = 3, batch: int = 6, classes: int = 5, dtype=torch.float32, seed: int = 1, views: int = 1
):
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

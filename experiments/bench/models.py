"""The benchmark's models, built from configs with random weights, and their fixed batches.

Random initialisation is enough for timing and memory: neither depends on the weights' values.
The shapes are the paper's: timm ViT-B/16 at 224² and a Llama-3.2-1B-shaped sequence classifier
(hidden 2048, MLP 8192, 32 heads, 8 key/value heads, vocabulary 128256), with fewer layers on CPU.
``tiny`` builds toy versions of both for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .names import LLAMA_LAYERS, MODELS  # noqa: F401  (re-exported)


@dataclass
class Workload:
    """A model and what one training step feeds it.

    inputs: a tensor (images ``[batch, 3, H, W]``) or a dict (``input_ids``/``attention_mask``
    ``[batch, tokens]``); labels ``[batch]``. probe_batches: ``(inputs, labels)`` pairs for the
    gradient probe, each label appearing twice so the contrastive loss has positive pairs; ViT
    probe inputs are ``[view1, view2]`` pairs (two views per image, what ``grft_app.lit``'s probe
    loader gives an image task), Llama's plain token batches (text has no views).
    floor: the module whose bias the ``floor`` arm trains besides the head: the first layer
    of the network (ViT: the patch embedding; Llama: layer 0's ``q_proj``, given a zero bias).
    name: ``vit`` or ``llama`` (which recipe the LoRA arm follows).
    """

    name: str
    model: nn.Module
    inputs: object
    labels: torch.Tensor
    probe_batches: list
    head: str
    floor: str
    describe: str


def call(model: nn.Module, inputs: object) -> torch.Tensor:
    """Logits ``[batch, classes]`` for either input form (Hugging Face models return an object)."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out if torch.is_tensor(out) else out.logits


def _probe_labels(batch: int, generator: torch.Generator) -> torch.Tensor:
    classes = max(1, batch // 2)
    return (torch.arange(batch) % classes)[torch.randperm(batch, generator=generator)]


def build_vit(batch: int, tiny: bool, probe_batches: int, num_classes: int = 100, seed: int = 0) -> Workload:
    import timm

    torch.manual_seed(seed)
    if tiny:
        num_classes = 10
        model = timm.create_model(
            "vit_base_patch16_224",
            pretrained=False,
            img_size=32,
            patch_size=8,
            embed_dim=64,
            depth=2,
            num_heads=2,
            num_classes=num_classes,
        )
        size = 32
    else:
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes)
        size = 224
    g = torch.Generator().manual_seed(seed + 1)
    images = lambda: torch.randn(batch, 3, size, size, generator=g)  # noqa: E731
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    probes = [([images(), images()], _probe_labels(batch, g)) for _ in range(probe_batches)]
    name = "ViT-B/16 (tiny)" if tiny else "ViT-B/16"
    return Workload(
        "vit", model, images(), labels, probes, "head", "patch_embed.proj", f"{name}, {size}x{size}, batch {batch}"
    )


def llama_config(layers: int, tiny: bool, num_labels: int):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            num_labels=num_labels,
            pad_token_id=0,
        )
    return LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=2048,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        num_labels=num_labels,
        pad_token_id=0,
    )


def build_llama(
    batch: int, tiny: bool, probe_batches: int, layers: int, seq_len: int, num_labels: int = 2, seed: int = 0
) -> Workload:
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = llama_config(layers, tiny, num_labels)
    model = LlamaForSequenceClassification(config)
    g = torch.Generator().manual_seed(seed + 1)

    def tokens() -> dict:
        ids = torch.randint(1, config.vocab_size, (batch, seq_len), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    labels = torch.randint(0, num_labels, (batch,), generator=g)
    probes = [({**tokens(), "labels": _probe_labels(batch, g)}) for _ in range(probe_batches)]
    name = "Llama (tiny)" if tiny else "Llama-3.2-1B shape"
    return Workload(
        "llama",
        model,
        tokens(),
        labels,
        probes,
        "score",
        "model.layers.0.self_attn.q_proj",
        f"{name}, {layers} layers, {seq_len} tokens, batch {batch}",
    )


def build(
    model: str, batch: int, tiny: bool, probe_batches: int, llama_layers: int, seq_len: int, seed: int = 0
) -> Workload:
    if model == "vit":
        return build_vit(batch, tiny, probe_batches, seed=seed)
    if model == "llama":
        return build_llama(batch, tiny, probe_batches, llama_layers, seq_len, seed=seed)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")

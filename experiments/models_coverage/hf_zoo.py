"""A tiny random model of every transformers ``*ForSequenceClassification`` / ``*ForImageClassification``.

Each class's config is its library default with the sizes shrunk by name (layers, heads, widths,
per-stage lists), so the model is small enough for a CPU; the batch is the model's main input
(token ids with right padding, images, or audio) with repeating labels.
"""

from __future__ import annotations

import warnings

import torch

NUM_LABELS = 3
LABELS = (0, 1, 2, 0, 1, 2)
TOKENS = 12
IMAGE_SIDE = 64
AUDIO_SAMPLES = 1600
SUFFIXES = ("ForSequenceClassification", "ForImageClassification")

# Sizes by config attribute name. Widths are multiples of every head count used.
LAYERS = 2
HEADS = 2
WIDTH = 32
FFN = 64
SIZES = {
    **dict.fromkeys(
        (
            "num_hidden_layers",
            "num_layers",
            "n_layer",
            "n_layers",
            "encoder_layers",
            "decoder_layers",
            "num_encoder_layers",
            "num_decoder_layers",
            "num_blocks",
            "num_self_attends_per_block",
        ),
        LAYERS,
    ),
    **dict.fromkeys(
        (
            "num_attention_heads",
            "n_head",
            "n_heads",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "num_heads",
            "num_cross_attention_heads",
            "num_self_attention_heads",
        ),
        HEADS,
    ),
    "num_key_value_heads": HEADS,
    # multi-head latent attention (DeepSeek-V2/V3, MiniCPM3): the rotary and latent parts of a head
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": WIDTH // HEADS,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    **dict.fromkeys(
        ("hidden_size", "d_model", "n_embd", "dim", "embed_dim", "d_latents", "word_embed_proj_dim"), WIDTH
    ),
    **dict.fromkeys(
        (
            "intermediate_size",
            "ffn_dim",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "d_ff",
            "n_inner",
            "hidden_dim",
            "decoder_hidden_size",
        ),
        FFN,
    ),
    "head_dim": WIDTH // HEADS,
    **dict.fromkeys(("pooler_hidden_size", "embedding_size", "projection_dim"), WIDTH),
    "num_latents": 8,
    # Reformer: chunked attention over a 12-token input, axial positions that add up to the width
    "attention_head_size": WIDTH // HEADS,
    "feed_forward_size": FFN,
    "local_attn_chunk_length": 4,
    "lsh_attn_chunk_length": 4,
    "num_buckets": 4,
    "image_size": IMAGE_SIDE,
    "window_size": 4,  # divides every stage's grid of a 64-pixel Swin
    "rotary_dim": 8,
    "max_position_embeddings": 128,
    "vocab_size": 1000,
}
# Per-stage lists of hierarchical vision models: depths shrink to 1, widths and heads to small values.
STAGE_LISTS = {
    "depths": 1,
    "num_heads": 1,
    "hidden_sizes": 16,
    "embed_dims": 16,
    "embedding_dims": 16,
    "hidden_dims": 16,
    "num_attention_heads": 1,
    "depth": 1,
}
# Per-position sizes that must add up (or multiply) to the shrunk width and positions.
FIXED = {"axial_pos_embds_dim": [WIDTH // 2, WIDTH // 2], "axial_pos_shape": [8, 16]}


def class_names() -> list[str]:
    import transformers

    return sorted(
        n
        for n in dir(transformers)
        if n.endswith(SUFFIXES) and not n.startswith(("Auto", "TF", "Flax")) and n[0].isupper()
    )


# Mixture-of-experts sizes, shrunk in every tier.
EXPERTS = {
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": FFN,
    "n_shared_experts": 1,
}
MAX_PARAMETERS = 150_000_000  # a less shrunk model is built only below this size
TIERS = ("tiny", "shallow", "default")


def tiny_config(cls, tier: str = "tiny"):
    """The class's default config shrunk: ``tiny`` every size, ``shallow`` only depths and experts,
    ``default`` only the experts; sub-configs (a CLIP's vision tower) alike."""
    config = cls.config_class()
    _shrink(config, tier)
    config.num_labels = NUM_LABELS
    if hasattr(config, "vocab_size") and config.vocab_size is None:
        config.vocab_size = 100  # ESM's default config leaves it to the tokenizer
    if getattr(config, "pad_token_id", None) is None or config.pad_token_id >= getattr(config, "vocab_size", 10**9):
        config.pad_token_id = 0
    if hasattr(config, "use_cache"):
        config.use_cache = False
    return config


def _shrink(config, tier: str) -> None:
    sizes = dict(EXPERTS, image_size=IMAGE_SIDE)  # the input's size, in every tier
    if tier in ("tiny", "shallow"):
        sizes.update({k: v for k, v in SIZES.items() if v == LAYERS and "layers" in k or k == "num_blocks"})
    if tier == "tiny":
        sizes.update(SIZES)
    for key, value in sizes.items():
        current = getattr(config, key, None)
        if not isinstance(current, int) or isinstance(current, bool):
            continue
        if key in ("max_position_embeddings", "vocab_size") and current <= value:
            continue
        _set(config, key, min(current, value) if tier != "tiny" else value)
    if tier == "tiny":
        for key, value in FIXED.items():
            if isinstance(getattr(config, key, None), (list, tuple)):
                _set(config, key, value)
    lists = STAGE_LISTS if tier == "tiny" else {"depths": 1, "depth": 1} if tier == "shallow" else {}
    for key, value in lists.items():
        current = getattr(config, key, None)
        if isinstance(current, (list, tuple)) and current and all(isinstance(v, int) for v in current):
            _set(config, key, [value] * len(current))
    for key in list(vars(config)):
        sub = getattr(config, key, None)
        if sub is not config and type(sub).__name__.endswith("Config") and hasattr(sub, "to_dict"):
            _shrink(sub, tier)


def _set(config, key: str, value) -> None:
    try:
        setattr(config, key, value)
    except AttributeError:  # a property computed from other sizes (Falcon's head_dim)
        pass


def batch_for(model) -> dict:
    g = torch.Generator().manual_seed(0)
    config = model.config
    name = model.main_input_name
    batch: dict = {"labels": torch.tensor(LABELS)}
    n = len(LABELS)
    vision = getattr(config, "vision_config", None) or config
    if name == "input_ids":
        vocab = min(getattr(config, "vocab_size", 100), 100)
        ids = torch.randint(4, vocab, (n, TOKENS), generator=g)
        mask = torch.ones_like(ids)
        mask[::2, TOKENS - 3 :] = 0  # right padding
        ids[mask == 0] = config.pad_token_id if config.pad_token_id is not None else 0
        eos = getattr(config, "eos_token_id", None)
        if isinstance(eos, int) and 0 <= eos < getattr(config, "vocab_size", 10**9):
            ids[torch.arange(n), mask.sum(1) - 1] = eos  # classifiers that read the <eos> token (BART)
        batch.update(input_ids=ids, attention_mask=mask)
    elif name == "pixel_values":
        channels = getattr(vision, "num_channels", 3)
        side = getattr(vision, "image_size", IMAGE_SIDE)
        side = side[0] if isinstance(side, (list, tuple)) else side
        batch["pixel_values"] = torch.randn(n, channels, side, side, generator=g)
    elif name == "input_values":
        batch["input_values"] = torch.randn(n, AUDIO_SAMPLES, generator=g)
    elif name == "input_features":
        size = getattr(config, "feature_projection_input_dim", None) or getattr(config, "feature_size", 80)
        batch["input_features"] = torch.randn(n, 64, size, generator=g)
    elif name == "inputs":  # Perceiver: ids or images by its preprocessor
        if "Image" in type(model).__name__:
            side = getattr(config, "image_size", IMAGE_SIDE)
            batch["inputs"] = torch.randn(n, 3, side, side, generator=g)
        else:
            batch["inputs"] = torch.randint(4, 100, (n, TOKENS), generator=g)
    else:
        raise ValueError(f"no tiny input for main input {name!r}")
    return batch


def build(class_name: str):
    """``(model, batch)`` for the transformers class ``class_name``, tiny and random."""
    import transformers

    cls = getattr(transformers, class_name)
    first_error = None
    for tier in TIERS:
        try:
            return _build(cls, tier)
        except Exception as err:  # noqa: BLE001 - the next tier shrinks less
            first_error = first_error or err
    raise first_error


def _build(cls, tier: str):
    config = tiny_config(cls, tier)
    if tier != "tiny":
        with torch.device("meta"):
            size = sum(p.numel() for p in cls(config).parameters())
        if size > MAX_PARAMETERS:
            raise ValueError(f"{size:,} parameters with only the depth shrunk")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(config).eval()
    batch = batch_for(model)
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
    logits = out.logits if hasattr(out, "logits") else out
    if logits.shape[0] != len(LABELS):
        raise ValueError(f"logits of shape {tuple(logits.shape)} for {len(LABELS)} examples")
    spread = float((logits - logits[:1]).abs().max())
    if spread <= 1e-6 * max(1.0, float(logits.abs().max())):
        raise ValueError(
            f"the random model's logits hardly depend on its input (spread {spread:.1e}): "
            "nothing for a probe to contrast"
        )
    return model, batch

"""A tiny random model of every transformers ``*ForSequenceClassification`` / ``*ForImageClassification``.

Each class's config is its library default with the sizes shrunk by name (layers, heads, widths,
per-stage lists), so the model is small enough for a CPU; the config is then built anew from those
sizes so that what it derives from them follows, and sizes it leaves unset are filled. Less shrunk
tiers (the native input size, then only the depth) are tried when a tier does not build. A random
net whose logits do not depend on its input because of BatchNorm at its default statistics gets
them from the batch. The batch is the model's main input (token ids with right padding, images,
patches or audio) with repeating labels.
"""

from __future__ import annotations

import inspect
import warnings

import torch

from .cycle import output_logits

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
WIDTH_COEFFICIENT = 0.25
# What fixes the input's size, kept by the ``native`` tier.
NATIVE_INPUT = ("image_size", "window_size")
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
    "n_group": 1,
    "topk_group": 1,
}
MAX_PARAMETERS = 150_000_000  # a less shrunk model is built only below this size
# ``tiny`` shrinks every size and draws 64-pixel images, deep enough for every kind of layer of a
# per-layer pattern; ``cut`` the same at the plain depth (Zamba ties its one hybrid layer's weights to
# a second one, so it builds without any); ``native`` shrinks the same but keeps the
# input size the model was designed for (Swin's windows tile only its own grid); ``shallow`` shrinks
# only depths and experts; ``default`` only the experts.
TIERS = ("tiny", "cut", "native", "shallow", "default")


def tiny_config(cls, tier: str = "tiny"):
    """The class's default config shrunk by ``tier``, sub-configs (a CLIP's vision tower) alike.

    The config is built anew from the shrunk sizes, so that what it derives from them (DeepSeek's
    ``head_dim`` from its rotary part, per-layer ``layer_types`` from the depth) follows; a config
    that cannot be built so is shrunk in place."""
    default = cls.config_class()
    try:
        config = _rebuilt(default, tier)
    except Exception:  # noqa: BLE001 - the constructor rejects the sizes together; set them one by one
        config = _shrunk_in_place(cls.config_class(), tier)
    _fill_unset(config)
    config.num_labels = NUM_LABELS
    # The token positions a classifier reads its scores at (ShieldGemma-2's yes/no) stay in the vocabulary.
    read_at = [v for k, v in vars(config).items() if k.endswith("_token_index") and k != "image_token_index"]
    for sub in _with_subs(config):
        if hasattr(sub, "vocab_size") and sub.vocab_size is None:
            sub.vocab_size = 100  # ESM's default config leaves it to the tokenizer
        if isinstance(getattr(sub, "vocab_size", None), int) and read_at:
            sub.vocab_size = max(sub.vocab_size, max(read_at) + 1)
        if sub is config or hasattr(sub, "vocab_size"):  # a text tower reads its own padding token
            if getattr(sub, "pad_token_id", None) is None or sub.pad_token_id >= getattr(sub, "vocab_size", 10**9):
                sub.pad_token_id = 0
    if hasattr(config, "use_cache"):
        config.use_cache = False
    return config


def _rebuilt(config, tier: str):
    kwargs = {}
    for key, value in _changes(config, tier).items():
        sub = getattr(config, key, None)
        kwargs[key] = _rebuilt(sub, tier) if _is_config(sub) and sub is not config else value
    return type(config)(**kwargs)


def _shrunk_in_place(config, tier: str):
    for key, value in _changes(config, tier).items():
        _shrunk_in_place(value, tier) if _is_config(value) else _set(config, key, value)
    return config


def _with_subs(config) -> list:
    return [config] + [getattr(config, k) for k in list(vars(config)) if _is_config(getattr(config, k, None))]


def _is_config(value) -> bool:
    return type(value).__name__.endswith("Config") and hasattr(value, "to_dict")


def _changes(config, tier: str) -> dict:
    """``{attribute: shrunk value}``; a sub-config maps to itself (it is shrunk on its own)."""
    changes = {}
    sizes = dict(EXPERTS)
    if tier in ("tiny", "cut"):
        sizes["image_size"] = IMAGE_SIDE
    if tier in ("tiny", "cut", "native", "shallow"):
        sizes.update({k: v for k, v in SIZES.items() if v == LAYERS and "layers" in k or k == "num_blocks"})
    if tier in ("tiny", "cut", "native"):
        sizes.update({k: v for k, v in SIZES.items() if tier in ("tiny", "cut") or k not in NATIVE_INPUT})
    for key, value in sorted(sizes.items(), key=lambda kv: kv[0] == "head_dim"):
        current = getattr(config, key, None)
        if key == "image_size" and isinstance(current, (list, tuple)) and all(isinstance(v, int) for v in current):
            changes[key] = [value] * len(current)  # TextNet's [640, 640]
            continue
        if not isinstance(current, int) or isinstance(current, bool):
            continue
        if key in ("max_position_embeddings", "vocab_size") and current <= value:
            continue
        if key == "head_dim" and current == getattr(config, "qk_rope_head_dim", None) and "qk_rope_head_dim" in changes:
            value = changes["qk_rope_head_dim"]  # multi-head latent attention: head_dim is a head's rotary part
        changes[key] = min(current, value) if tier in ("shallow", "default") else value
    width, last = getattr(config, "width_coefficient", None), getattr(config, "hidden_dim", None)
    if tier in ("tiny", "cut", "native") and isinstance(width, float) and isinstance(last, int):
        # EfficientNet: the last width is the width multiplier times 1280, so the two shrink together
        changes["width_coefficient"] = WIDTH_COEFFICIENT
        changes["hidden_dim"] = round(config.hidden_dim * WIDTH_COEFFICIENT / width)
    depth, layers = getattr(config, "num_hidden_layers", None), changes.get("num_hidden_layers")
    patterns = {  # per-layer patterns (Zamba's block types) as deep as the model
        key: value
        for key, value in vars(config).items()
        if layers and isinstance(value, list) and len(value) == depth and all(isinstance(v, str) for v in value)
    }
    for value in patterns.values() if tier != "cut" else ():  # every kind of layer (a cache needs attention)
        layers = max(layers, max(value.index(kind) for kind in set(value)) + 1)
    if patterns:
        changes["num_hidden_layers"] = layers
        changes.update({key: value[:layers] for key, value in patterns.items()})
    if tier in ("tiny", "cut", "native"):
        for key, value in FIXED.items():
            if isinstance(getattr(config, key, None), (list, tuple)):
                changes[key] = value
    lists = STAGE_LISTS if tier in ("tiny", "cut", "native") else {"depths": 1, "depth": 1} if tier == "shallow" else {}
    for key, value in lists.items():
        current = getattr(config, key, None)
        if isinstance(current, (list, tuple)) and current and all(isinstance(v, int) for v in current):
            changes[key] = [value] * len(current)
    stem, stages = getattr(config, "stem_out_channels", None), getattr(config, "hidden_sizes", None)
    if "hidden_sizes" in changes and isinstance(stem, int) and stages and stem == stages[0]:
        changes["stem_out_channels"] = changes["hidden_sizes"][0]  # TextNet: the stem feeds the first stage
    for key in list(vars(config)):
        sub = getattr(config, key, None)
        if sub is not config and _is_config(sub):
            changes[key] = sub
    return changes


def _fill_unset(config) -> None:
    """Sizes a default config leaves ``None`` although the model reads them as numbers."""
    for sub in _with_subs(config):
        heads = getattr(sub, "num_attention_heads", None)
        if getattr(sub, "num_key_value_heads", 0) is None and isinstance(heads, int):
            sub.num_key_value_heads = heads  # Nemotron: no grouped queries unless asked
        if getattr(sub, "head_dim", 0) is None and isinstance(heads, int) and getattr(sub, "hidden_size", None):
            sub.head_dim = sub.hidden_size // heads  # Ministral, Nemotron, HunYuan
        experts = getattr(sub, "n_routed_experts", None) or getattr(sub, "num_experts", None)
        if getattr(sub, "num_experts_per_tok", 0) is None and isinstance(experts, int):
            sub.num_experts_per_tok = min(2, experts)  # DeepSeek-V2 routes to none by default
        if getattr(sub, "default_language", 0) is None and getattr(sub, "languages", None):
            sub.default_language = list(sub.languages)[0]  # X-MOD picks its adapters by language
        if getattr(sub, "is_encoder_decoder", False) and getattr(sub, "decoder_start_token_id", None) is None:
            sub.decoder_start_token_id = getattr(sub, "pad_token_id", None) or 0  # T5 starts from <pad>


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
    elif name == "pixel_values" and "spatial_shapes" in inspect.signature(model.forward).parameters:
        # SigLIP-2 takes images as rows of flattened patches, with each image's grid and a patch mask
        patch = vision.patch_size
        side = IMAGE_SIDE // patch
        channels = getattr(vision, "num_channels", 3)
        batch["pixel_values"] = torch.randn(n, side * side, channels * patch * patch, generator=g)
        batch["pixel_attention_mask"] = torch.ones(n, side * side, dtype=torch.long)
        batch["spatial_shapes"] = torch.tensor([[side, side]] * n)
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
    if isinstance(first_error, ImportError):  # an optional library this machine lacks (natten, detectron2)
        raise first_error
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(cls.config_class())
    except Exception as err:  # noqa: BLE001 - the evidence that the fault is not the shrinking
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise RuntimeError(f"its own default config does not build either: {type(err).__name__}: {first_line}") from err
    raise first_error


def _build(cls, tier: str):
    config = tiny_config(cls, tier)
    if tier not in ("tiny", "cut"):
        with torch.device("meta"):
            size = sum(p.numel() for p in cls(config).parameters())
        if size > MAX_PARAMETERS:
            raise ValueError(f"{size:,} parameters with only the depth shrunk")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(config).eval()
    batch = batch_for(model)
    spread = _spread(model, batch)
    if not spread and _batch_norms(model):
        _calibrate(model, batch)  # running statistics 0 and 1 leave a random net's activations vanishing
        spread = _spread(model, batch)
    if not spread:
        raise ValueError(
            f"the random model's logits hardly depend on its input (spread {spread.value:.1e}): "
            "nothing for a probe to contrast"
        )
    return model, batch


class _Spread(float):
    """How far the logits of the batch's examples differ; false when they hardly do."""

    def __new__(cls, value: float, scale: float):
        self = super().__new__(cls, value)
        self.value, self.scale = value, scale
        return self

    def __bool__(self) -> bool:
        return self.value > 1e-6 * max(1.0, self.scale)


def _spread(model, batch) -> _Spread:
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
    logits = output_logits(out)
    if logits.shape[0] != len(LABELS):
        raise ValueError(f"logits of shape {tuple(logits.shape)} for {len(LABELS)} examples")
    return _Spread(float((logits - logits[:1]).abs().max()), float(logits.abs().max()))


def _batch_norms(model) -> list:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _calibrate(model, batch) -> None:
    """Every BatchNorm's running statistics from the batch itself, as training would have set them,
    and its scale and shift at torch's defaults: with the default statistics (mean 0, variance 1)
    and small random weights, each layer of a deep convolutional net scales its input down, so the
    logits of a random MobileNet or LeViT come out the same for every image."""
    norms = _batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_parameters()  # EfficientNet draws its scales like weights, N(0, 0.02): back to 1
        m.momentum = None  # a cumulative average: one pass sets the batch's statistics
    model.train()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    model.eval()
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum

"""Any Hugging Face transformers classifier (``model=hf model.name=<hub id or local dir>``).

Text models load as ``AutoModelForSequenceClassification`` (BERT, RoBERTa, DistilBERT, DeBERTa,
GPT-2, Llama, Qwen2, Mistral, Gemma...), vision models as ``AutoModelForImageClassification``
(ViT...): the pre-trained base model plus a new task head. GRFT finds head and blocks through
transformers' ``base_model_prefix`` and ``_no_split_modules`` (``grft.targets``): the head is
everything outside the base model (DistilBERT's ``pre_classifier`` + ``classifier`` both train).

A tokenizer without a pad token pads with its end-of-sequence token (decoders: GPT-2, Llama).
``tiny=True`` (``debug=smoke``, tests) builds a small random model of the same type: the type comes
from ``model.model_type`` or, if the model's files are here, from its config.
"""

from __future__ import annotations

from collections.abc import Mapping

from grft.targets import detect_architecture

from ..data.splits import InputSpec
from .llama import offline, tiny_tokenizer, weight_dtype

_DECODER = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8
)
_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
# Tiny shapes per transformers model type, in each config's own argument names.
TINY = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "gemma": _DECODER,
    "qwen2": {k: v for k, v in _DECODER.items() if k != "head_dim"},
    "bert": _ENCODER,
    "roberta": _ENCODER,
    "deberta-v2": _ENCODER,
    "distilbert": dict(dim=32, hidden_dim=64, n_layers=2, n_heads=4),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64),
    "vit": dict(_ENCODER, image_size=32, patch_size=8),
}
TINY_MAX_POSITIONS = 64
TINY_IMG_SIZE = 32
# PIL resampling codes (image processors' ``resample``) as torchvision interpolation names.
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def is_vision(model_type: str) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    if model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return True
    if model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return False
    raise ValueError(f"transformers has no sequence or image classifier for model type {model_type!r}")


def auto_class(model_type: str):
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    return AutoModelForImageClassification if is_vision(model_type) else AutoModelForSequenceClassification


def tiny_config(model_type: str, num_labels: int, vocab_size: int = 300, pad_token_id: int = 0, **overrides):
    """A config of ``model_type`` with the tiny shapes (``overrides`` replace them)."""
    from transformers import AutoConfig

    if model_type not in TINY and not overrides:
        raise ValueError(
            f"no tiny shapes for model type {model_type!r}; give model.tiny_kwargs, known: {', '.join(sorted(TINY))}"
        )
    shapes = {**TINY.get(model_type, {}), **overrides}
    if is_vision(model_type):
        return AutoConfig.for_model(model_type, num_labels=num_labels, **shapes)
    if model_type == "gpt2":
        shapes.setdefault("n_positions", TINY_MAX_POSITIONS)
    else:
        shapes.setdefault("max_position_embeddings", TINY_MAX_POSITIONS)
    ids = dict(pad_token_id=pad_token_id, bos_token_id=pad_token_id, eos_token_id=pad_token_id)
    return AutoConfig.for_model(model_type, num_labels=num_labels, vocab_size=vocab_size, **ids, **shapes)


def tiny_model(model_type: str, num_labels: int, **config_kwargs):
    return auto_class(model_type).from_config(tiny_config(model_type, num_labels, **config_kwargs))


def model_type_of(cfg: Mapping) -> str:
    if cfg.get("model_type"):
        return str(cfg["model_type"])
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(cfg["name"]), local_files_only=True).model_type
    except (OSError, ValueError) as err:
        raise ValueError(
            f"debug=smoke builds a tiny {cfg['name']} without its files, but its model type is unknown here: "
            "set model.model_type (e.g. bert, gpt2, llama, vit)"
        ) from err


def load(cfg: Mapping, num_labels: int, weights: bool = True):
    """The classifier (pre-trained base, new head) and its tokenizer or image processor."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    name = str(cfg["name"])
    dtype = weight_dtype(cfg)
    local_only = offline(cfg)
    try:
        config = AutoConfig.from_pretrained(name, num_labels=num_labels, local_files_only=local_only)
        vision = is_vision(config.model_type)
        processor = (AutoImageProcessor if vision else AutoTokenizer).from_pretrained(name, local_files_only=local_only)
        if weights:
            # A checkpoint that already has a head of another size gets a new one (the task's).
            model = auto_class(config.model_type).from_pretrained(
                name,
                config=config,
                dtype=dtype,
                local_files_only=local_only,
                ignore_mismatched_sizes=True,
            )
        else:
            model = auto_class(config.model_type).from_config(config).to(dtype)
    except (OSError, ConnectionError) as err:
        raise unavailable(name, err) from err
    return processor, model


def unavailable(name: str, err: Exception):
    from . import ModelUnavailableError

    first = str(err).splitlines()[0] if str(err) else ""
    return ModelUnavailableError(
        f"could not load {name} ({err.__class__.__name__}: {first}). model.name is a hub id or a local directory "
        "holding config.json, the weights and the tokenizer/image processor, as `save_pretrained` or "
        f"`hf download {name} --local-dir <dir>` write them; without internet, copy that directory here and set "
        "model.name=<dir> (gated models: accept the licence on the model page first)"
    )


def text_inputs(tokenizer, model, max_length: int) -> InputSpec:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    return InputSpec(kind="text", tokenizer=tokenizer, max_length=max_length)


def image_inputs(processor, cfg: Mapping) -> InputSpec:
    size = getattr(processor, "size", None) or {}
    side = cfg.get("img_size") or size.get("height") or size.get("shortest_edge") or 224
    return InputSpec(
        kind="image",
        processor=processor,
        img_size=int(side),
        mean=tuple(cfg.get("mean") or getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)),
        std=tuple(cfg.get("std") or getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)),
        interpolation=str(cfg.get("interpolation") or RESAMPLE.get(getattr(processor, "resample", 3), "bicubic")),
    )


def timm_vit(cfg: Mapping) -> bool:
    """Whether the model is a timm VisionTransformer (what the ViT-only baselines need)."""
    return False


def input_kind(cfg: Mapping) -> str | None:
    """``image`` or ``text`` from ``model.model_type`` or the model's config.json if it is here (a local
    directory or the hub cache); ``None`` if only a download could say (then the data check after
    loading says it)."""
    model_type = cfg.get("model_type")
    if not model_type:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(str(cfg["name"]), local_files_only=True).model_type
        except (OSError, ValueError):
            return None
    try:
        return "image" if is_vision(str(model_type)) else "text"
    except ValueError:
        return None


def build(cfg: Mapping, num_classes: int, *, pretrained: bool = True, tiny: bool = False):
    from . import ModelBundle

    max_length = int(cfg.get("max_length", 512))
    if tiny:
        model_type = model_type_of(cfg)
        overrides = dict(cfg.get("tiny_kwargs") or {})
        if is_vision(model_type):
            model = tiny_model(model_type, num_classes, **overrides)
            inputs = InputSpec(kind="image", img_size=int(model.config.image_size), mean=(0.5,) * 3, std=(0.5,) * 3)
        else:
            tokenizer = tiny_tokenizer()
            model = tiny_model(
                model_type, num_classes, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides
            )
            inputs = text_inputs(tokenizer, model, min(max_length, TINY_MAX_POSITIONS))
    else:
        processor, model = load(cfg, num_classes, weights=pretrained)
        if is_vision(model.config.model_type):
            inputs = image_inputs(processor, cfg)
        else:
            inputs = text_inputs(processor, model, max_length)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return ModelBundle(model, detect_architecture(model), inputs)

"""Hugging Face Llama sequence classifiers (the paper's Llama-3.2-1B on GLUE).

``model.name`` is a hub id (``meta-llama/Llama-3.2-1B``, gated: accept its licence first) or a
local directory with ``config.json``, the weights and the tokenizer. The classifier is
``LlamaForSequenceClassification``: the pre-trained decoder plus a new linear ``score`` head that
reads the last real token. Llama has no pad token, so padding uses the end-of-sequence token
(the classifier finds the last real token from it, GRFT's probe from the attention mask).

GRFT's eligible matrices are each layer's q, k, v, o, gate, up and down projections
(``grft.targets``); embeddings and norms stay frozen, the ``score`` head trains in full.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from grft.targets import Architecture, pool_last_token

from ..data.splits import InputSpec

LLAMA_ARCH = Architecture(head="score", blocks="model.layers", stem=(), pool=pool_last_token)

# The shapes of the published Llama-3.2-1B config (enough to count parameters on the meta device;
# rotary scaling and token ids do not change any shape).
LLAMA_3_2_1B_SHAPES = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    vocab_size=128256,
    tie_word_embeddings=True,
    hidden_act="silu",
)
TINY_SHAPES = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A few sentences to train the tiny tokenizer's merges on; byte-level, so any text still encodes.
TINY_CORPUS = (
    "the cat sat on the mat . the dog did not sit .",
    "a sentence is acceptable or it is not acceptable .",
    "two sentences can say the same thing in other words .",
    "if the first is true then the second follows .",
)


def meta_model(num_labels: int = 2, **shapes):
    """A ``LlamaForSequenceClassification`` with the 1B shapes on the meta device: no memory, no download."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(**{**LLAMA_3_2_1B_SHAPES, **shapes}, num_labels=num_labels, pad_token_id=0)
    with torch.device("meta"):
        return LlamaForSequenceClassification(config)


def tiny_tokenizer():
    """A byte-level BPE tokenizer built here from a few sentences, with Llama-like special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TINY_CORPUS, trainer=trainer)
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        padding_side="right",
    )


def tiny_model(num_labels: int, tokenizer, max_length: int):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        **TINY_SHAPES,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(max_length, 64),
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
    )
    return LlamaForSequenceClassification(config)


def weight_dtype(cfg: Mapping) -> torch.dtype:
    """``model.dtype`` as a torch dtype; an unknown name is an error naming the known ones."""
    name = str(cfg.get("dtype", "float32"))
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r} is unknown; known: {', '.join(DTYPES)}")
    return DTYPES[name]


def offline(cfg: Mapping) -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(cfg.get("local_files_only")) or any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def unavailable(name: str, err: Exception):
    from . import ModelUnavailableError

    local = Path(name).expanduser()
    if local.is_absolute() or name.startswith("."):
        how = (
            f"{local} must be a directory holding config.json, the weights (*.safetensors) and the tokenizer "
            "files, as `save_pretrained` or `hf download <repo> --local-dir <dir>` write them"
        )
    else:
        how = (
            f"{name} comes from the Hugging Face hub (Llama models are gated: accept the licence on the "
            f"model page, then `hf auth login` and `hf download {name} --local-dir <dir>`; older hubs: "
            "huggingface-cli download). Without internet, copy that directory here and set model.name=<dir>"
        )
    return ModelUnavailableError(
        f"could not load {name} ({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}). {how}"
    )


def load(cfg: Mapping, num_labels: int, weights: bool = True):
    """Tokenizer and classifier from the hub or a local directory; the ``score`` head is new.

    ``weights=False`` builds the same architecture with random weights (config and tokenizer only).
    """
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    name = str(cfg["name"])
    dtype = weight_dtype(cfg)
    local_only = offline(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        if weights:
            model = LlamaForSequenceClassification.from_pretrained(
                name,
                num_labels=num_labels,
                dtype=dtype,
                local_files_only=local_only,
            )
        else:
            config = AutoConfig.from_pretrained(name, num_labels=num_labels, local_files_only=local_only)
            model = LlamaForSequenceClassification(config).to(dtype)
    except (OSError, ConnectionError) as err:
        raise unavailable(name, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    return tokenizer, model


def timm_vit(cfg: Mapping) -> bool:
    """Whether the model is a timm VisionTransformer (what the ViT-only baselines need)."""
    return False


def input_kind(cfg: Mapping) -> str:
    return "text"


def build(cfg: Mapping, num_classes: int, *, pretrained: bool = True, tiny: bool = False):
    from . import ModelBundle

    max_length = int(cfg.get("max_length", 512))
    if tiny:
        tokenizer = tiny_tokenizer()
        model = tiny_model(num_classes, tokenizer, max_length)
    else:
        tokenizer, model = load(cfg, num_classes, weights=pretrained)
    inputs = InputSpec(kind="text", tokenizer=tokenizer, max_length=max_length)
    return ModelBundle(model, LLAMA_ARCH, inputs)

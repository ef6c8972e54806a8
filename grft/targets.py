"""Which matrices of a model GRFT may slice, which train in full, and which the penalty covers.

The rules (they reproduce the paper's Table 8 trainable shares):
- eligible: every layer that is one weight matrix: ``nn.Linear``, ``nn.Conv2d`` (groups=1, zero
  padding, seen as ``[out, in*kh*kw]``) and transformers' ``Conv1D`` (GPT-2, stored ``[in, out]``),
  outside the head; for a timm ViT that is each block's qkv/proj/fc1/fc2 and the patch embedding,
  for a Llama each layer's q/k/v/o/gate/up/down projection. ``GRFTConfig.target_modules`` /
  ``exclude_modules`` narrow the set (peft's rules);
- trainable in full: the head and the bias of every eligible layer;
- frozen: everything else (norms, position/cls tokens, embeddings, grouped/depthwise convolutions);
- regular set (Eq. 8): the last L blocks, the stem (patch embedding) and the head.

``Architecture`` names the head, the blocks and the stem; ``detect_architecture`` asks the model's
own library where they are (timm: ``get_classifier()`` and ``pretrained_cfg``; transformers:
``base_model_prefix`` and ``_no_split_modules``) and falls back to the usual names.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SlicedLayer, is_conv1d, numeric_padding

HEAD_NAMES = ("head", "score", "classifier", "fc", "lm_head")
BLOCK_LISTS = ("blocks", "model.layers", "layers", "encoder.layer", "transformer.h", "h")
STEM_NAMES = ("patch_embed", "embeddings.patch_embeddings", "conv1", "stem")

Pool = Callable[[torch.Tensor, object], torch.Tensor]
Names = str | tuple[str, ...]


@dataclass(frozen=True)
class Architecture:
    """Where the head, the blocks and the stem live in a model (dotted module names).

    head: the module that trains in full, or a tuple of them when the task head is several
        modules (DistilBERT's ``pre_classifier`` + ``classifier``). The probe reads the input of
        the first one that runs.
    blocks: a ModuleList/Sequential whose children are the blocks, or a tuple of the blocks' own
        names, in order (hierarchical models: Swin, ConvNeXt, ResNet stages).
    pool: turns the head's input into one feature vector per example; ``None`` decides from the
        head: a head that gives per-token logits is read at the last attended token (Hugging Face
        decoder classifiers), one that reduces a sequence itself reads its first token (BERT-style).
    """

    head: Names
    blocks: Names
    stem: tuple[str, ...] = ()
    pool: Pool | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.head, str):
            heads = tuple(self.head)
            object.__setattr__(self, "head", heads[0] if len(heads) == 1 else heads)
        if not isinstance(self.blocks, str):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "stem", tuple(self.stem))

    @property
    def heads(self) -> tuple[str, ...]:
        return (self.head,) if isinstance(self.head, str) else self.head


def pool_last_token(hidden: torch.Tensor, inputs: object) -> torch.Tensor:
    """Pick each sequence's last attended token from ``[batch, tokens, features]``.

    That is the token Hugging Face's ``*ForSequenceClassification`` heads read their logits from.
    """
    if hidden.dim() != 3:
        return hidden
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if mask is None or mask.dim() != 2 or mask.shape[1] != hidden.shape[1]:
        return hidden[:, -1]  # no mask, or one over other positions (Perceiver's head reads its latents)
    # argmax of the running count finds the first position where it peaks: the last attended token.
    last = mask.long().cumsum(dim=1).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool_like_the_head(features: torch.Tensor, head_output: torch.Tensor, inputs: object) -> torch.Tensor:
    """The token a sequence head classifies, from its input ``[batch, tokens, features]``.

    Per-token logits (decoder classifiers) are read at the last attended token; a head that
    reduces the sequence itself (RoBERTa, DeBERTa) reads the first one (``<s>``/``[CLS]``).
    """
    if features.dim() != 3:
        return features
    if torch.is_tensor(head_output) and head_output.dim() == 3:
        return pool_last_token(features, inputs)
    return features[:, 0]


# --- which layers are one matrix --------------------------------------------------------------
def ineligible_reason(module: nn.Module) -> str | None:
    """Why a layer with a weight matrix is not sliced (None: it is eligible).

    Subclasses that change ``forward`` (timm's ``Conv2dSame`` pads at run time, ``StdConv2d``
    standardises its weight) are left out: the slice layer computes the plain product.
    """
    if isinstance(module, SlicedLayer):
        return None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped/depthwise Conv2d (groups={module.groups}): not one [out, in*kh*kw] matrix"
        if module.padding_mode != "zeros" or numeric_padding(module) is None:
            return (
                f"Conv2d with padding={module.padding!r}, padding_mode={module.padding_mode!r}: "
                "only zero padding is sliced"
            )
        if type(module).forward is not nn.Conv2d.forward:
            return f"{type(module).__name__} overrides Conv2d.forward: slicing would change what it computes"
        return None
    if isinstance(module, nn.Linear):
        if type(module).forward is not nn.Linear.forward and not computes_plain_product(module):
            return f"{type(module).__name__} overrides Linear.forward: slicing would change what it computes"
        return None
    if is_conv1d(module):
        return None
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        if isinstance(module, nn.Embedding):
            return "embedding table: frozen, as every embedding"
        return f"{type(module).__name__} is not a Linear, Conv2d (groups=1) or Conv1D"
    return None


_PLAIN_PRODUCT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def computes_plain_product(layer: nn.Linear) -> bool:
    """Whether a Linear subclass's own ``forward`` gives ``F.linear(x, W, b)`` (Falcon's ``FalconLinear``).

    Asked of the layer itself, in training and in eval mode, on a small random input: a forward
    that returns anything else (a tuple, a quantised or noisy product) is not the plain product,
    and the slice layer, which computes ``F.linear``, would change it. A layer on the meta device
    cannot be asked and counts as not plain. Remembered per layer.
    """
    known = _PLAIN_PRODUCT.get(layer)
    if known is not None:
        return known
    weight = layer.weight
    plain = False
    if weight.device.type != "meta" and weight.dim() == 2:
        mode = layer.training
        tolerance = 1e-2 if weight.element_size() < 4 else 1e-4  # the sum's order differs
        generator = torch.Generator(device=weight.device).manual_seed(0)
        x = torch.randn(2, weight.shape[1], generator=generator, device=weight.device).to(weight.dtype)
        try:
            with torch.no_grad():
                expected = F.linear(x, weight, layer.bias)
                plain = True
                for training in (True, False):
                    layer.train(training)
                    out = type(layer).forward(layer, x)
                    plain = plain and torch.is_tensor(out) and out.shape == expected.shape
                    plain = plain and bool(torch.allclose(out, expected, rtol=tolerance, atol=tolerance))
        except Exception:  # noqa: BLE001 - a forward that cannot take a plain input is not the plain product
            plain = False
        finally:
            layer.train(mode)
    _PLAIN_PRODUCT[layer] = plain
    return plain


def is_eligible(module: nn.Module) -> bool:
    """Slice-trainable layer types: Linear, Conv2d that is a plain matrix product, Conv1D."""
    if isinstance(module, SlicedLayer):
        return True
    if not isinstance(module, (nn.Linear, nn.Conv2d)) and not is_conv1d(module):
        return False
    return ineligible_reason(module) is None


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as ``[out, in]`` (a view): Conv2d flattened, Conv1D transposed."""
    return layer_matrix(layer, layer.weight)


def layer_matrix(layer: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (the weight or its gradient) of ``layer`` as ``[out, in]``: row i is output neuron i."""
    if is_conv1d(layer) or getattr(layer, "grft_transposed", False):
        return tensor.t()
    return tensor.reshape(tensor.shape[0], -1)


# --- which names a config targets ---------------------------------------------------------------
def matches(name: str, patterns) -> bool:
    """peft's rule: a string is a regex the whole name must match; a list holds names or suffixes."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def in_head(name: str, arch: Architecture) -> bool:
    return in_prefixes(name, list(arch.heads))


def eligible_layers(model: nn.Module, arch: Architecture, config=None) -> dict[str, nn.Module]:
    """Every eligible layer outside the head, in module order, narrowed by the config's targets.

    ``config.target_modules`` naming a layer GRFT cannot slice, or matching none, is an error.
    """
    targets = getattr(config, "target_modules", None)
    exclude = getattr(config, "exclude_modules", None)
    layers = {}
    for name, module in model.named_modules():
        if not name or in_head(name, arch):
            continue
        if exclude is not None and matches(name, exclude):
            continue
        if targets is not None and not matches(name, targets):
            continue
        if is_eligible(module):
            layers[name] = module
        elif targets is not None and ineligible_reason(module) is not None:
            raise ValueError(f"target_modules matches {name}, which GRFT cannot slice: {ineligible_reason(module)}")
    if targets is not None and not layers:
        raise ValueError(f"target_modules={targets!r} matches no Linear/Conv2d/Conv1D layer outside the head")
    return layers


def nothing_to_slice(model: nn.Module, arch: Architecture, config=None) -> str:
    """The one-line refusal for a model without an eligible layer, naming why its layers are left out."""
    reasons: dict[str, int] = {}
    for reason in left_out_layers(model, arch, config).values():
        reasons[reason] = reasons.get(reason, 0) + 1
    common = sorted(reasons.items(), key=lambda item: -item[1])[:2]
    why = "; ".join(f"{n} x {reason}" for reason, n in common) or "it has no layer with a weight matrix"
    return (
        f"{type(model).__name__} has no eligible layer, nothing GRFT can slice outside its head (an nn.Linear, "
        f"nn.Conv2d with groups=1 or Conv1D): {why}"
    )


def left_out_layers(model: nn.Module, arch: Architecture, config=None) -> dict[str, str]:
    """Layers with a weight matrix that stay frozen, each with the reason (for ``param_report``)."""
    chosen = eligible_layers(model, arch, config)
    out = {}
    for name, module in model.named_modules():
        if not name or name in chosen or in_head(name, arch):
            continue
        reason = ineligible_reason(module)
        if reason is None and is_eligible(module):
            reason = "excluded by exclude_modules/target_modules"
        if reason is not None:
            out[name] = reason
    return out


# --- finding head, blocks and stem --------------------------------------------------------------
def detect_architecture(model: nn.Module) -> Architecture:
    """Ask the model's library where head, blocks and stem are; else look for the usual names."""
    if hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg"):
        return _timm_architecture(model)
    if isinstance(getattr(model, "base_model_prefix", None), str) and hasattr(model, "config"):
        return _transformers_architecture(model)
    return _named_architecture(model)


def _name_of(model: nn.Module, target: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if m is target), None)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _classifier_names(model: nn.Module, classifier: object) -> tuple[str | None, ...]:
    """Module names of what ``get_classifier()`` returned, a container of heads opened into its heads.

    timm returns one module, a pair (distilled models: head, head_dist), or a ModuleList of heads
    that the model calls one by one and never as a whole (CrossViT: one per branch; EfficientViM:
    one per stage).
    """
    parts = classifier if isinstance(classifier, (tuple, list)) else (classifier,)
    names: list[str | None] = []
    for part in parts:
        if not isinstance(part, nn.Module) or not _has_parameters(part):
            continue
        if isinstance(part, (nn.ModuleList, nn.ModuleDict)):
            names.extend(_classifier_names(model, [m for m in part.children()]))
        else:
            names.append(_name_of(model, part))
    return tuple(names)


def _timm_architecture(model: nn.Module, prefix: str = "") -> Architecture:
    """Head: ``get_classifier()``; stem: ``pretrained_cfg['first_conv']``; blocks: the repeated
    blocks, else the stages ``feature_info`` names (DenseNet, RegNet, DLA, Inception...)."""
    inner = model.get_submodule(prefix) if prefix else model
    heads = _classifier_names(model, inner.get_classifier())
    if not heads or None in heads:
        raise ValueError(
            f"the timm model {type(inner).__name__} has no classifier (created with num_classes=0?); "
            "create it with num_classes=<classes> or pass grft.Architecture(head=..., blocks=...)"
        )
    first_conv = inner.pretrained_cfg.get("first_conv")
    modules = dict(model.named_modules())
    first_conv = f"{prefix}.{first_conv}" if prefix and isinstance(first_conv, str) else first_conv
    stem = (first_conv,) if isinstance(first_conv, str) and first_conv in modules else ()
    arch = Architecture(head=heads, blocks=(), stem=stem)
    blocks = _repeated_blocks(model, arch) or _feature_stages(model, inner, prefix, arch)
    return Architecture(head=heads, blocks=blocks, stem=stem)


def _feature_stages(model: nn.Module, inner: nn.Module, prefix: str, arch: Architecture) -> Names:
    """The modules timm's ``feature_info`` names (each ends a stage), those holding an eligible layer."""
    info = getattr(inner, "feature_info", None)
    names = []
    for entry in info if isinstance(info, (list, tuple)) else ():
        name = entry.get("module") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            continue
        name = f"{prefix}.{name}" if prefix else name
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        outer = list(arch.heads) + list(arch.stem)
        if in_prefixes(name, outer) or not any(is_eligible(m) for m in module.modules()):
            continue
        if not any(in_prefixes(name, [n]) or in_prefixes(n, [name]) for n in names):
            names.append(name)
    return _as_blocks(model, tuple(names))


def _transformers_architecture(model: nn.Module) -> Architecture:
    """Head: what lies outside the base model (the task's new modules); blocks: no-split classes."""
    prefix = model.base_model_prefix
    if not isinstance(getattr(model, prefix, None), nn.Module):
        return _named_architecture(model)
    base = getattr(model, prefix)
    if hasattr(base, "get_classifier") and hasattr(base, "pretrained_cfg"):
        return _timm_architecture(model, prefix)  # transformers' TimmWrapper: a timm model inside
    heads = tuple(n for n, m in model.named_children() if n != prefix and _has_parameters(m))
    if not heads:
        heads = _head_inside_base(model, prefix)
    stem = ()
    embeddings = _input_embeddings(model)
    if isinstance(embeddings, nn.Module) and any(is_eligible(m) for m in embeddings.modules()):
        stem = (_name_of(model, embeddings),)
    arch = Architecture(head=heads, blocks=(), stem=stem)
    block_classes = set(getattr(model, "_no_split_modules", None) or ())
    blocks = _blocks_of_classes(model, block_classes) if block_classes else ()
    blocks = blocks or _repeated_blocks(model, arch)
    blocks = blocks or _repeated_blocks(model, arch, need_eligible=False)
    return Architecture(head=heads, blocks=blocks, stem=stem)


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    """transformers' ``get_input_embeddings()``; vision and audio models raise NotImplementedError."""
    try:
        return model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except (NotImplementedError, AttributeError):
        return None


def _head_inside_base(model: nn.Module, prefix: str) -> tuple[str, ...]:
    """The classifier when the base model holds it (Perceiver's decoder): the last Linear that gives
    ``config.num_labels`` outputs."""
    labels = getattr(model.config, "num_labels", None)
    found = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and labels is not None and m.out_features == labels and n.startswith(prefix + ".")
    ]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no task head outside its base model {prefix!r} and no Linear with "
            f"config.num_labels={labels} outputs inside it: load it as a *ForSequenceClassification / "
            "*ForImageClassification, or pass grft.Architecture(head=..., blocks=...)"
        )
    return (found[-1],)


def _named_architecture(model: nn.Module) -> Architecture:
    modules = dict(model.named_modules())
    head = next((n for n in HEAD_NAMES if n in modules and _holds_linear(modules[n])), None)
    if head is None:
        raise ValueError(
            "could not find the classification head (looked for a module holding an nn.Linear named "
            f"{', '.join(HEAD_NAMES)}); pass grft.Architecture(head=..., blocks=...)"
        )
    blocks = next((n for n in BLOCK_LISTS if isinstance(modules.get(n), (nn.ModuleList, nn.Sequential))), None)
    if blocks is None:
        blocks = _repeated_blocks(model, Architecture(head=head, blocks=()))
    if not blocks:
        raise ValueError(
            "could not find the list of blocks (looked for "
            f"{', '.join(BLOCK_LISTS)}); pass grft.Architecture(head=..., blocks=...)"
        )
    stem = tuple(n for n in STEM_NAMES if n in modules)
    is_sequence_model = hasattr(getattr(model, "config", None), "vocab_size")
    return Architecture(head=head, blocks=blocks, stem=stem, pool=pool_last_token if is_sequence_model else None)


def _holds_linear(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules())


def _blocks_of_classes(model: nn.Module, classes: set[str]) -> Names:
    """Modules of the no-split classes that sit in a ModuleList/Sequential (not e.g. ViT's embeddings)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            children = [f"{name}.{c}" if name else c for c, m in module.named_children() if type(m).__name__ in classes]
            found.extend(c for c in children if not any(c.startswith(f + ".") for f in found))
    return _as_blocks(model, tuple(found))


def _repeated_blocks(model: nn.Module, arch: Architecture, need_eligible: bool = True) -> Names:
    """The children of the innermost ModuleLists/Sequentials of same-class composite modules that
    hold eligible layers, outside head and stem: a ViT's blocks, each stage's blocks of a Swin,
    ConvNeXt, ResNet or EfficientNet. ``need_eligible=False``: blocks of any layers (SqueezeBERT's
    blocks are 1-d convolutions GRFT leaves out, but they are still the model's blocks).
    """
    outer = list(arch.heads) + list(arch.stem)
    found: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or in_prefixes(name, outer):
            continue
        children = list(module.named_children())
        if not children or len({type(m) for _, m in children}) != 1:
            continue
        holds = (lambda m: any(is_eligible(x) for x in m.modules())) if need_eligible else _has_parameters
        if not all(holds(m) and len(list(m.children())) > 0 for _, m in children):
            continue
        names = [f"{name}.{c}" if name else c for c, _ in children]
        # Modules come parents first: an inner list's blocks replace the entry of the block holding it.
        found = [f for f in found if not any(n.startswith(f + ".") for n in names)]
        found.extend(names)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return _as_blocks(model, tuple(sorted(found, key=order.__getitem__)))


def _as_blocks(model: nn.Module, names: tuple[str, ...]) -> Names:
    """One container's name when the blocks are exactly its children, else the tuple of names."""
    if not names:
        return ()
    parent = names[0].rpartition(".")[0]
    container = model.get_submodule(parent) if parent else None
    if container is not None and [f"{parent}.{c}" for c, _ in container.named_children()] == list(names):
        return parent
    return names


def block_names(model: nn.Module, arch: Architecture) -> list[str]:
    if isinstance(arch.blocks, str):
        return [f"{arch.blocks}.{c}" for c, _ in model.get_submodule(arch.blocks).named_children()]
    return list(arch.blocks)


def block_count(model: nn.Module, arch: Architecture) -> int:
    return len(block_names(model, arch))


def regular_prefixes(model: nn.Module, arch: Architecture, regular_layers) -> list[str]:
    """Module-name prefixes of the regular set R: last L blocks + stem + head (Eq. 8).

    ``"all"`` is the whole model (``""``): every block, and what lies between them (Swin's patch
    merging, ConvNeXt's downsampling, BERT's pooler).
    """
    if regular_layers == "all":
        return [""]
    blocks = block_names(model, arch)
    depth = len(blocks)
    if depth == 0 and regular_layers > 0:
        raise ValueError(
            f"regular_layers={regular_layers} counts blocks, and grft found no list of blocks in "
            f"{type(model).__name__}: use regular_layers='all' or 0, or pass grft.Architecture(head=..., blocks=...)"
        )
    if regular_layers > depth:
        raise ValueError(
            f"regular_layers={regular_layers} exceeds the model's {depth} blocks; allowed: 0..{depth} or 'all'"
        )
    return blocks[depth - regular_layers :] + list(arch.stem) + list(arch.heads)


def in_prefixes(name: str, prefixes: list[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)

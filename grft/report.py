"""Trainable share of a model, counted the way the paper's Table 8 counts it."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .config import GRFTConfig
from .layers import SlicedLayer, slice_shape
from .selection import check_k
from .targets import Architecture, detect_architecture, eligible_layers, left_out_layers, weight_matrix


@dataclass(frozen=True)
class ParamReport:
    """``left_out``: layers with a weight matrix that GRFT leaves frozen, each with the reason
    (grouped/depthwise convolutions, embeddings, layers outside ``target_modules``...).
    ``probe_blocks``: after a low-memory probe, how it ran each block (checkpointed, or plain and
    why; ``grft.checkpointing``); empty when no low-memory probe ran on this model."""

    trainable: int
    total: int
    left_out: dict[str, str] = field(default_factory=dict, compare=False)
    probe_blocks: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / {self.total:,} = {self.percent:.2f}%"


def base_parameter_count(model: nn.Module) -> int:
    """Parameters of the model itself: a GRFT delta duplicates entries of its weight, so it is left out."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.endswith("grft_delta"))


def param_report(model: nn.Module, config: GRFTConfig | None = None, arch: Architecture | None = None) -> ParamReport:
    """Trainable / total parameters.

    On a tuned model (after ``attach``) it counts what requires grad. On a plain model it needs
    ``config`` and counts what ``attach`` would train: slices + eligible biases + head. Works on the
    meta device, so the paper-size models need no memory.
    """
    state = getattr(model, "grft_state", None)
    if any(isinstance(m, SlicedLayer) for m in model.modules()):
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        left_out = left_out_layers(model, state.arch, state.config) if state is not None else {}
        return ParamReport(trainable, base_parameter_count(model), left_out, _probe_blocks(model))
    if config is None:
        raise ValueError("param_report on a model without GRFT layers needs the GRFTConfig it would use")
    arch = arch or detect_architecture(model)
    trainable = sum(p.numel() for head in arch.heads for p in model.get_submodule(head).parameters())
    for name, layer in eligible_layers(model, arch, config).items():
        shape = tuple(weight_matrix(layer).shape)
        check_k(config.selection, config.k, shape, name)
        rows, cols = slice_shape(config.selection, config.k, shape)
        trainable += rows * cols + (layer.bias.numel() if layer.bias is not None else 0)
    left_out = left_out_layers(model, arch, config)
    return ParamReport(trainable, base_parameter_count(model), left_out, _probe_blocks(model))


@dataclass(frozen=True)
class Budget:
    """The largest k within a trainable share (``largest_k``), and the share it trains."""

    share: float  # the percent asked for
    k: int
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total


def largest_k(
    model: nn.Module, config: GRFTConfig, share: float, arch: Architecture | None = None, what: str = "the model"
) -> Budget:
    """The largest k whose trainable share (as ``param_report`` counts it) is at most ``share`` percent.

    Why no scan and no probe: the count is linear in k. The head and the eligible layers' biases
    train whatever k is; each eligible matrix ``[out, in]`` adds ``in`` weights per row (``row``) or
    ``out`` per column (``column``; ``sparse``: one entry of each of its ``out`` rows). So
    ``trainable(k) = fixed + k * per_k``, and k is capped by the smallest matrix's side. Works on the
    meta device. A share that even k=1 exceeds is an error naming the share k=1 needs.
    """
    share = float(share)
    if not share > 0:
        raise ValueError(f"share must be a percent > 0, got {share!r}")
    arch = arch or detect_architecture(model)
    layers = eligible_layers(model, arch, config)
    if not layers:
        raise ValueError(f"{what} has no layer GRFT can slice; k=auto has nothing to size")
    fixed = sum(p.numel() for head in arch.heads for p in model.get_submodule(head).parameters())
    per_k, k_max = 0, None
    for layer in layers.values():
        out, inp = tuple(weight_matrix(layer).shape)
        per_k += inp if config.selection == "row" else out
        side = out if config.selection == "row" else inp
        k_max = side if k_max is None else min(k_max, side)
        fixed += layer.bias.numel() if layer.bias is not None else 0
    total = base_parameter_count(model)

    def within(k: int) -> bool:  # the comparison a reader makes with param_report(...).percent
        return 100.0 * (fixed + k * per_k) / total <= share

    if not within(1):
        need = 100.0 * (fixed + per_k) / total
        raise ValueError(
            f"share={share}% is below what k=1 trains on {what} ({config.selection}s: {need:.4f}%); "
            f"raise share to at least {need:.4f}, or use another method"
        )
    k = min(int((share * total / 100.0 - fixed) // per_k), k_max)
    while k < k_max and within(k + 1):  # float rounding at the boundary: settle it with the same comparison
        k += 1
    while k > 1 and not within(k):
        k -= 1
    return Budget(share=share, k=k, trainable=fixed + k * per_k, total=total)


def _probe_blocks(model: nn.Module) -> dict[str, str]:
    return dict(getattr(model, "grft_probe_blocks", None) or {})

"""The whole GRFT cycle on one model, checked against the untouched base model, and its verdict.

First the probe in up to three passes and in up to eight (``grft.passes``; top group first, from a
gradient kept at a block boundary where the blocks form a chain, ``grft.boundaries``, the blocks
below a group standing in with a kept input, ``grft.kept_inputs``), and with the largest Linear
and Conv2d weights' sums deferred to after their pass (``grft.deferred_sums``), must sum the
one-pass probe's gradients bit for bit. Then for rows and for columns: probe, ``attach`` (logits unchanged), one
Adam step (only the selected slices, eligible biases and the head move), adapter save -> load onto
a fresh base (same logits), ``merge`` (same logits, same state-dict keys and layer types).

The verdict is ``pass``; ``refused`` when grft declines the model with its own one-line
``ValueError`` before changing it; or ``failed`` (any other exception, or a check that does not hold).
"""

from __future__ import annotations

import copy
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import grft
from grft.architecture import detect_architecture, in_prefixes
from grft.passes import deferred_bounds, max_passes, passes_within
from grft.targets import eligible_layers

SELECTIONS = ("row", "column")
DEEP_PASSES = 8  # enough passes that some groups lie above the first block (their passes skip it)
GRFT_DIR = Path(grft.__file__).resolve().parent


@dataclass(frozen=True)
class Verdict:
    status: str  # pass | refused | failed | unbuildable
    reason: str = ""


class CycleError(AssertionError):
    """A check of the cycle that does not hold."""


def inputs_of(batch):
    return batch[0] if isinstance(batch, tuple) else {k: v for k, v in batch.items() if k != "labels"}


def labels_of(batch) -> torch.Tensor:
    return batch[1] if isinstance(batch, tuple) else batch["labels"]


def forward(model, batch):
    inputs = inputs_of(batch)
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return output_logits(out)


def output_logits(out) -> torch.Tensor:
    """The class scores of a model's output: ``logits``, a plain tensor, or the first field of an
    output without ``logits`` (PP-LCNet returns its scores as ``last_hidden_state``)."""
    if hasattr(out, "logits"):
        return out.logits
    return out if isinstance(out, torch.Tensor) else out[0]


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return forward(model, batch)


def out_in(layer, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as ``[out, in]``, written independently of grft: Conv1D stores ``[in, out]``."""
    if type(layer).__name__ == "Conv1D" and hasattr(layer, "nf"):
        return weight.t()
    return weight.reshape(weight.shape[0], -1)


def same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    if a.shape != b.shape or not torch.allclose(a, b, rtol=0, atol=1e-5 * scale):
        diff = (a - b).abs().max() if a.shape == b.shape else f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
        raise CycleError(f"{what}: logits differ (max |diff| {diff})")


def run_cycle(model, batch, selection: str, workdir: Path) -> None:
    """One selection kind through the whole cycle; raises on any failure."""
    model.eval()  # no dropout, no BatchNorm statistics updates: every difference comes from the step
    base = copy.deepcopy(model)
    arch = detect_architecture(model)
    layers = eligible_layers(model, arch)
    # A layer reachable under several names (CoaT's shared MLPs) has a state-dict key under each.
    aliases = {alias: name for name, layer in layers.items() for alias, m in _all_named(model) if m is layer}
    expected = logits(base, batch)

    config = grft.GRFTConfig(k=1, selection=selection, norm="l2", lam=1e-3, regular_layers=1)
    sel = grft.select(model, [batch], config)
    grft.attach(model, sel, config)
    same(logits(model, batch), expected, "attach")

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = forward(model, batch)
    loss = F.cross_entropy(out.reshape(out.shape[0], -1), labels_of(batch))
    (loss + grft.penalty(model)).backward()
    optimizer.step()
    tuned = logits(model, batch)

    path = grft.save_adapter(model, workdir / f"adapter-{selection}.safetensors")
    fresh = grft.load_adapter(copy.deepcopy(base), path)
    same(logits(fresh, batch), tuned, "adapter save -> load")
    del fresh

    grft.merge(model)
    if any(isinstance(m, grft.SlicedLayer) for m in model.modules()):
        raise CycleError("merge left slice layers")
    merged = model.state_dict()
    if list(merged) != list(base.state_dict()):
        raise CycleError("merge changed the state-dict keys")
    for name, layer in layers.items():
        if type(model.get_submodule(name)) is not type(layer):
            raise CycleError(f"merge left {name} a {type(model.get_submodule(name)).__name__}")
    same(logits(model, batch), tuned, "merge")

    dim = 1 if selection == "row" else 0
    chosen = {name: set(s.index.tolist()) for name, s in sel.layers.items()}
    for key, before in base.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        owner = aliases.get(owner, owner)
        after = merged[key]
        if in_prefixes(owner, list(arch.heads)) or (owner in layers and leaf == "bias"):
            continue  # the head and the eligible biases train in full
        if owner in layers and leaf == "weight":
            a, b = out_in(layers[owner], before), out_in(layers[owner], after)
            lines = set(torch.nonzero((a != b).any(dim=dim)).flatten().tolist())
            if not lines <= chosen[owner]:
                raise CycleError(f"{owner}: changed outside its selected {selection}s")
            continue
        if not torch.equal(before, after):
            raise CycleError(f"{key} is not trainable but changed")


def _all_named(model):
    return model.named_modules(remove_duplicate=False)


def is_refusal(err: BaseException) -> bool:
    """grft's own one-line ValueError, raised by grft (not from inside a model's forward/backward)."""
    if not isinstance(err, ValueError) or isinstance(err, CycleError):
        return False
    frames = traceback.extract_tb(err.__traceback__)
    if not frames or not Path(frames[-1].filename).resolve().is_relative_to(GRFT_DIR):
        return False
    inside_model = any(f.name in ("forward", "backward", "_call_impl") for f in frames)
    return not inside_model and "\n" not in str(err).strip()


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def deferral_threshold(layers) -> int:
    """A size over which about ``DEEP_PASSES`` of the largest weights are deferred: each deferred
    weight takes a pass of its own, so deferring every weight would cost a pass per weight. Every
    weight of the largest size is deferred even where there are more of them."""
    sizes = sorted((layer.weight.numel() * 4 for layer in layers.values()), reverse=True)
    distinct = sorted(set(sizes), reverse=True)
    chosen = distinct[0]
    for size in distinct:
        if sum(s >= size for s in sizes) > DEEP_PASSES:
            break
        chosen = size
    return chosen - 1


def check_passes(model, batch) -> str:
    """The probe in up to three passes, and in up to eight, sums the one-pass probe's gradients bit
    for bit, and so does the probe with the largest Linear and Conv2d weights' sums deferred to
    after their pass (``grft.deferred_sums``, ``deferral_threshold``); says how the passes started,
    in how many of the eight-pass probe's passes the blocks below the group stood in with a kept
    input (``grft.kept_inputs``), how many weights were deferred, and whether the (low-memory)
    probe's sums are plain autograd's bit for bit (``probe passes: 3 and 8; from a kept gradient:
    2; from a kept input: 4; deferred sums: 7; autograd's sums: equal``)."""
    model.eval()
    config = grft.GRFTConfig(k=1)
    one = grft.accumulate_gradients(model, [batch], config)
    most = max_passes(eligible_layers(model, detect_architecture(model), config))
    counts = sorted({min(3, most), min(DEEP_PASSES, most)})
    kept = skipped = 0
    for passes in counts:
        several = grft.accumulate_gradients(model, [batch], config, passes=passes)
        for name, h in one.items():
            if not torch.equal(h, several[name]):
                raise CycleError(f"probe in {passes} passes: {name}'s summed gradient is not the one-pass probe's")
        if passes == min(3, most):
            kept = sum(where != "loss" for where in getattr(model, "grft_probe_passes", [])) if passes > 1 else 0
        skipped = sum(n > 0 for n in getattr(model, "grft_probe_skipped", [])) if passes > 1 else 0
    layers = eligible_layers(model, detect_architecture(model), config)
    part = deferral_threshold(layers)
    deferred = len(deferred_bounds(layers, part))
    if deferred:  # the largest Linear and Conv2d weights' sums made after their pass (grft.deferred_sums)
        passes = passes_within(layers, 1 << 62, part)
        later = grft.accumulate_gradients(model, [batch], config, passes=passes, part_bytes=part)
        for name, h in one.items():
            if not torch.equal(h, later[name]):
                raise CycleError(f"probe with deferred sums: {name}'s summed gradient is not the one-pass probe's")
    plain = grft.accumulate_gradients(model, [batch], config, low_memory=False)
    differ = sum(not torch.equal(h, plain[name]) for name, h in one.items())
    autograd = "equal" if not differ else f"{differ} of {len(one)} differ"
    return (
        f"probe passes: {' and '.join(str(c) for c in counts)}; from a kept gradient: {kept}; "
        f"from a kept input: {skipped}; deferred sums: {deferred}; autograd's sums: {autograd}"
    )


def verdict(model, batch) -> Verdict:
    """The probe in passes, then rows, then columns, each on its own copy of ``model``."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            passes = check_passes(copy.deepcopy(model), batch)
        except Exception as err:  # noqa: BLE001 - every failure is a verdict, the sweep goes on
            if is_refusal(err):
                return Verdict("refused", str(err).strip())
            return Verdict("failed", f"passes: {one_line(err)}")
        for selection in SELECTIONS:
            try:
                run_cycle(copy.deepcopy(model), batch, selection, Path(tmp))
            except Exception as err:  # noqa: BLE001 - every failure is a verdict, the sweep goes on
                if is_refusal(err):
                    return Verdict("refused", str(err).strip())
                return Verdict("failed", f"{selection}: {one_line(err)}")
    return Verdict("pass", passes)

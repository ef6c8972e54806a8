"""The results version guard: when the code's numbers change, the results version must change too.

A run's key holds ``grft_app.identity.RESULTS_VERSION``, not the code, so a change that alters what
a run computes (a selection, an update rule, a schedule, an evaluation) must raise it, or a sweep
would find the old runs "already done" and a table would show numbers the code no longer makes.
This test notices such a change: it computes a small set of numbers through the code paths every
run goes through, and compares them with the numbers recorded for the current results version.

- the selection of a tiny ViT (GRFT's probe, ``grft.select``: row and column), as integer indices;
- a few optimizer steps of the GRFT method on it (``make_method``, the app's optimizer, penalty,
  slice weight decay; AdamW and Adam), as the losses and the trained parameters' sums;
- a short app run (``run_task``: data, probe, schedule, training, evaluation), as its record's
  metrics and the sum of squares of each tensor in its adapter.

Why these numbers are the same on every machine. Two CPUs of different families (AVX2 and AVX-512,
another BLAS path) add float32 numbers in another order and differ in the last bits, so no float
is hashed as it comes:
- the tiny model's part runs in float64 on one thread, from parameters and inputs drawn uniformly
  from a seeded generator (exact integer arithmetic, unlike ``randn``'s transcendental functions or
  timm's truncated-normal init). Its selections are integers, hashed, and the test checks that each
  kept score leads the first dropped one by a margin (relative 1e-6) far above float64's last bits
  (1e-16), so no machine ranks them otherwise. Its losses and sums are compared within a relative
  1e-9: far above float64 differences between kernel paths (under 5e-16 measured), far below any
  change of the method. The tiny model has no attention key bias: the loss does not depend on it
  (softmax ignores a constant added to every key's score), so its gradient is pure rounding noise,
  which Adam's normalisation turns into machine-dependent updates (1e-8 in the sums with it);
- the app run computes in float32 (the app's precision), so its numbers are compared within a
  relative 2e-4 (an absolute 1e-6 near zero): above what another kernel path gives (at most 1.7e-5
  with PyTorch's, MKL's and oneDNN's vector instructions switched off, ATEN_CPU_CAPABILITY=default;
  5e-7 with two threads) and below what a 1% change of weight_decay, lambda or label smoothing
  gives (2e-3 or more in some number). For the reason above, its adapter's ``qkv.bias`` (the key
  bias in it) is left out.

When this test fails because the numbers changed on purpose: bump ``RESULTS_VERSION`` in
grft_app/identity.py and add the golden entry for the new version that the failure message prints
(keep the old entries: an entry is what that version computed, never edited). Under 20 s.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch
import torch.nn.functional as F

import grft
from grft.io import load_tensors
from grft_app.identity import RESULTS_VERSION
from grft_app.lit.module import TrainSettings, make_optimizer
from grft_app.methods import MethodSettings, make_method
from grft_app.models import ModelBundle
from helpers.app_runs import run
from helpers.models import make_tiny_vit

# results version -> what the code computed under it (add an entry with each bump; never edit one).
GOLDEN: dict[int, dict] = {
    2: {
        "app": {
            "adapter.blocks.0.attn.proj.bias": 0.49935013410891266,
            "adapter.blocks.0.attn.proj.grft_delta": 1.1740456837982398,
            "adapter.blocks.0.attn.qkv.grft_delta": 1.2392314229067054,
            "adapter.blocks.0.mlp.fc1.bias": 1.2384387075096521,
            "adapter.blocks.0.mlp.fc1.grft_delta": 0.9300141461094864,
            "adapter.blocks.0.mlp.fc2.bias": 0.42153821841794603,
            "adapter.blocks.0.mlp.fc2.grft_delta": 2.9584330267627785,
            "adapter.blocks.1.attn.proj.bias": 0.437504718115721,
            "adapter.blocks.1.attn.proj.grft_delta": 0.8625631126159434,
            "adapter.blocks.1.attn.qkv.grft_delta": 0.7653385389830579,
            "adapter.blocks.1.mlp.fc1.bias": 1.0120764118820862,
            "adapter.blocks.1.mlp.fc1.grft_delta": 0.8536264177805648,
            "adapter.blocks.1.mlp.fc2.bias": 0.3682358392815758,
            "adapter.blocks.1.mlp.fc2.grft_delta": 2.308278215342244,
            "adapter.blocks.2.attn.proj.bias": 0.30045460708479765,
            "adapter.blocks.2.attn.proj.grft_delta": 0.4607521596271267,
            "adapter.blocks.2.attn.qkv.grft_delta": 0.32119721725342903,
            "adapter.blocks.2.mlp.fc1.bias": 0.12974768196533779,
            "adapter.blocks.2.mlp.fc1.grft_delta": 0.03040356754298488,
            "adapter.blocks.2.mlp.fc2.bias": 0.2604416600426849,
            "adapter.blocks.2.mlp.fc2.grft_delta": 0.6627347152093581,
            "adapter.blocks.3.attn.proj.bias": 0.2607605403015664,
            "adapter.blocks.3.attn.proj.grft_delta": 0.28630955216324194,
            "adapter.blocks.3.attn.qkv.grft_delta": 0.2263556552402068,
            "adapter.blocks.3.mlp.fc1.bias": 0.0883375337233625,
            "adapter.blocks.3.mlp.fc1.grft_delta": 0.02317545710287347,
            "adapter.blocks.3.mlp.fc2.bias": 0.2775693741121918,
            "adapter.blocks.3.mlp.fc2.grft_delta": 0.6217441095139333,
            "adapter.head.bias": 0.008078368918394963,
            "adapter.head.weight": 0.7080249330251398,
            "adapter.patch_embed.proj.bias": 4.138312669064485,
            "adapter.patch_embed.proj.grft_delta": 0.003708755875438667,
            "test_acc": 0.25,
            "test_acc_best": 0.25,
            "test_acc_best_epoch": 2.0,
            "test_loss": 1.6343929767608643,
        },
        "library": {
            "column_l1_adam.loss_0": 1.088116195672548,
            "column_l1_adam.loss_1": 1.5245426999990888,
            "column_l1_adam.loss_2": 1.7098725903110725,
            "column_l1_adam.loss_3": 0.9315145021373216,
            "column_l1_adam.loss_4": 1.1658856170161698,
            "column_l1_adam.loss_5": 1.241949110841947,
            "column_l1_adam.trained_abs_sum": 71.27710783168776,
            "column_l1_adam.trained_sum_sq": 10.731132976587315,
            "row_l2_adamw.loss_0": 1.088116195672548,
            "row_l2_adamw.loss_1": 1.260168030952171,
            "row_l2_adamw.loss_2": 1.4241850814880819,
            "row_l2_adamw.loss_3": 0.7237319064820507,
            "row_l2_adamw.loss_4": 0.9842648391185423,
            "row_l2_adamw.loss_5": 1.0669603508360292,
            "row_l2_adamw.trained_abs_sum": 83.0201638109945,
            "row_l2_adamw.trained_sum_sq": 12.264763891778308,
        },
        "selections": "fccd3c69e0d88f4c",
    },
}

FLOAT64_RTOL = 1e-9
APP_RTOL, APP_ATOL = 2e-4, 1e-6
SELECTION_MARGIN = 1e-6
APP_OVERRIDES = (
    "k=2",
    "lambda=0.1",
    "subsets=2",
    "epochs=3",
    "warmup_epochs=1",
    "lr=0.05",
    "optimizer=adamw",
    "weight_decay=0.5",
    "augment.label_smoothing=0.1",
)
VARIANTS = (  # (selection, norm, optimizer): the tiny model's runs
    ("row", "l2", "adamw"),
    ("column", "l1", "adam"),
)


def uniform_(tensor: torch.Tensor, generator: torch.Generator, low: float, high: float) -> None:
    """Fill from ``generator`` with float64 uniforms: integer arithmetic, the same bits on every CPU."""
    values = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
    tensor.copy_(low + (high - low) * values)


def tiny_model() -> torch.nn.Module:
    model = make_tiny_vit(num_classes=3, dtype=torch.float64, qkv_bias=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                uniform_(p, g, 0.8, 1.2)
            else:
                uniform_(p, g, -0.3, 0.3)
    return model


def tiny_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(3):
        x = torch.empty(6, 3, 16, 16, dtype=torch.float64)
        uniform_(x, g, -1.0, 1.0)
        out.append((x, torch.randint(0, 3, (6,), generator=g)))
    return out


def selection_margin(model, batches, config: grft.GRFTConfig) -> float:
    """The smallest lead, over layers, of the k-th kept score over the first dropped one (relative to the top)."""
    grads = grft.accumulate_gradients(model, batches, config)
    dim = 1 if config.selection == "row" else 0
    margins = []
    for g in grads.values():
        scores = (g.reshape(g.shape[0], -1) ** 2).sum(dim).sort(descending=True).values
        margins.append(float((scores[config.k - 1] - scores[config.k]) / scores[0]))
    return min(margins)


def library_numbers() -> tuple[dict[str, list[list[int]]], dict[str, float]]:
    """The tiny model's selections (integers) and the float64 numbers of a few optimizer steps."""
    selections: dict[str, list[list[int]]] = {}
    values: dict[str, float] = {}
    for kind, norm, optimizer in VARIANTS:
        tag = f"{kind}_{norm}_{optimizer}"
        config = grft.GRFTConfig(k=2, selection=kind, norm=norm, lam=0.01, regular_layers="all", seed=0)
        model, batches = tiny_model(), tiny_batches()
        assert selection_margin(model, batches, config) > SELECTION_MARGIN, (
            f"{tag}: two scores are too close for a selection every machine agrees on; change the tiny model's seed"
        )
        method = make_method(MethodSettings(name="grft", grft=config))
        tuned = method.prepare(ModelBundle(model, grft.detect_architecture(model), None))
        method.probe(tuned, batches)
        selection = grft.current_selection(tuned)
        selections[tag] = [selection[name].index.tolist() for name in sorted(selection)]
        settings = TrainSettings(lr=0.01, weight_decay=0.05, optimizer=optimizer)
        opt = make_optimizer(method, tuned, settings)
        for step, (x, y) in enumerate(batches * 2):
            loss = F.cross_entropy(tuned(x), y, label_smoothing=0.1) + method.extra_loss(tuned)
            opt.zero_grad()
            loss.backward()
            method.before_optimizer_step(tuned)
            method.decay(tuned, opt, settings.weight_decay, optimizer == "adamw")
            opt.step()
            values[f"{tag}.loss_{step}"] = float(loss.detach())
        trained = [p.detach() for p in tuned.parameters() if p.requires_grad]
        values[f"{tag}.trained_abs_sum"] = float(sum(p.abs().sum() for p in trained))
        values[f"{tag}.trained_sum_sq"] = float(sum((p * p).sum() for p in trained))
    return selections, values


def app_numbers(runs) -> dict[str, float]:
    """The short app run's metrics, and its adapter's trained tensors (sums of their absolute values and squares)."""
    record, run_dir = run(runs, *APP_OVERRIDES)
    assert record.done, record.error
    numbers = {key: float(value) for key, value in sorted(record.metrics.items())}
    adapter = load_tensors(run_dir / record.adapter_file)
    for name, tensor in sorted(adapter.items()):
        if tensor.is_floating_point() and not name.endswith("qkv.bias"):  # see the docstring: the key bias
            numbers[f"adapter.{name}"] = float((tensor.double() ** 2).sum())
    return numbers


def digest(selections: dict) -> str:
    return hashlib.sha256(json.dumps(selections, sort_keys=True).encode()).hexdigest()[:16]


def close(a: float, b: float, rtol: float, atol: float = 0.0) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def differences(golden: dict, now: dict) -> list[str]:
    found = []
    if golden["selections"] != now["selections"]:
        found.append(f"selections: hash {golden['selections']} -> {now['selections']}")
    for part, rtol, atol in (("library", FLOAT64_RTOL, 0.0), ("app", APP_RTOL, APP_ATOL)):
        if set(golden[part]) != set(now[part]):
            found.append(f"{part}: keys {sorted(golden[part])} -> {sorted(now[part])}")
            continue
        found += [
            f"{part}.{key}: {golden[part][key]!r} -> {now[part][key]!r}"
            for key in sorted(golden[part])
            if not close(golden[part][key], now[part][key], rtol, atol)
        ]
    return found


def test_the_numbers_are_those_of_the_current_results_version(tmp_path):
    torch.set_num_threads(1)
    selections, library = library_numbers()
    now = {"selections": digest(selections), "library": library, "app": app_numbers(tmp_path)}
    entry = json.dumps(now, indent=4, sort_keys=True)
    assert max(GOLDEN, default=RESULTS_VERSION) == RESULTS_VERSION, (
        f"GOLDEN has an entry for a results version above RESULTS_VERSION = {RESULTS_VERSION}"
    )
    if RESULTS_VERSION not in GOLDEN:
        raise AssertionError(
            f"no golden numbers for RESULTS_VERSION = {RESULTS_VERSION}; add GOLDEN[{RESULTS_VERSION}] = {entry}"
        )
    changed = differences(GOLDEN[RESULTS_VERSION], now)
    assert not changed, (
        f"the code's numbers changed under the same results version ({RESULTS_VERSION}): "
        + "; ".join(changed)
        + f". Bump the results version (RESULTS_VERSION = {RESULTS_VERSION + 1} in grft_app/identity.py) and add "
        f"the golden entry GOLDEN[{RESULTS_VERSION + 1}] = {entry}"
    )

"""The smallest model of every timm family (one family per ``timm.models`` module), built at random.

The smallest variant is the one with the fewest parameters, counted on the meta device (no memory,
no download). It is built and run as small as it allows (``_attempts``): a 64-pixel input (56 or 126 for
14-pixel patches) when it takes one, and two blocks when even the smallest variant is large.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

NUM_CLASSES = 3
SMALL_SIDE = 64
SMALL_SIDES = (SMALL_SIDE, 56, 126)  # 56 and 126 for 14-pixel patches (126: a grid of 9, for 3x3 pooling)
LARGE = 30_000_000
LABELS = (0, 1, 2, 0, 1, 2)


def families() -> list[str]:
    import timm

    return list(timm.list_modules())


def smallest(family: str, cache: Path | None = None) -> str:
    """The variant of ``family`` with the fewest parameters.

    ``cache``: a JSON file of earlier answers for this timm version (counting every variant of
    every family takes minutes).
    """
    import timm

    known = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    key = f"{timm.__version__}/{family}"
    if key in known:
        return known[key]
    best = None
    for name in timm.list_models(module=family):
        try:
            count = parameters(name)
        except Exception:  # noqa: BLE001 - a variant that cannot be built is skipped
            continue
        if best is None or count < best[1]:
            best = (name, count)
    if best is None:
        raise ValueError(f"no variant of the timm family {family} builds")
    if cache is not None:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        known[key] = best[0]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    return best[0]


def _images(side: int, channels: int = 3) -> torch.Tensor:
    return torch.randn(len(LABELS), channels, side, side, generator=torch.Generator().manual_seed(0))


def _attempts(name: str) -> list[tuple[dict, int | None]]:
    """``(constructor kwargs, input side)`` to try in order; ``None``: the pretrained config's size.

    Smaller first, since the cycle's cost grows with both: ``img_size`` for models that take it; any
    size for a model that pools globally (most convolutional ones) without changing the model; and
    for a family whose smallest variant is still large (over ``LARGE`` parameters), the same with
    ``depth=2`` where the constructor takes ``depth``, so the cycle runs in seconds, not minutes.
    """
    plain = [({"img_size": side}, side) for side in SMALL_SIDES] + [({}, side) for side in SMALL_SIDES]
    plain.append(({}, None))
    if parameters(name) <= LARGE:
        return plain
    return [({**kwargs, "depth": 2}, side) for kwargs, side in plain] + plain


def parameters(name: str) -> int:
    """``name``'s parameter count, on the meta device (no memory, no download)."""
    import timm

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())


def _away_from_zero(model: torch.nn.Module) -> None:
    """Give every all-zero parameter small random values, as pre-training would have.

    Many families zero-initialise the gain or normalisation weight that closes a residual branch
    (NFNet's ``conv3.gain``, ResNet's last BatchNorm), so at random every layer inside the branch
    gets an exactly zero gradient, which a pre-trained model, the one users bring, never has.
    """
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and not parameter.any():
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))


def build(name: str):
    """``(model, batch)``: a random ``name`` with a 3-class head and a batch whose labels repeat.

    The first of ``_attempts`` that builds and runs a forward; the model's ``grft_build`` says which
    (kwargs and input side), so the sweep's log names what it tested.
    """
    import timm

    labels = torch.tensor(LABELS)
    error: Exception | None = None
    for kwargs, side in _attempts(name):
        torch.manual_seed(0)
        try:
            model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs).eval()
            _away_from_zero(model)
            channels, height, _ = model.pretrained_cfg.get("input_size", (3, 224, 224))
            x = _images(side or height, channels)
            with torch.no_grad():
                model(x)
        except Exception as err:  # noqa: BLE001 - not every model takes or runs at a small size
            error = err
            continue
        model.grft_build = ",".join([f"{k}={v}" for k, v in kwargs.items()] + [f"input={side or height}"])
        return model, (x, labels)
    raise error

"""The smallest model of every timm family (one family per ``timm.models`` module), built at random.

The smallest variant is the one with the fewest parameters, counted on the meta device (no memory,
no download). It is built at a small input size when its constructor takes ``img_size`` and runs
there, else at its pretrained config's size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

NUM_CLASSES = 3
SMALL_SIDE = 64
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
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                model = timm.create_model(name, pretrained=False)
        except Exception:  # noqa: BLE001 - a variant that cannot be built is skipped
            continue
        count = sum(p.numel() for p in model.parameters())
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


def build(name: str):
    """``(model, batch)``: a random ``name`` with a 3-class head and a batch whose labels repeat."""
    import timm

    torch.manual_seed(0)
    labels = torch.tensor(LABELS)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, img_size=SMALL_SIDE).eval()
        x = _images(SMALL_SIDE)
        with torch.no_grad():
            model(x)
        return model, (x, labels)
    except Exception:  # noqa: BLE001 - not every model takes or runs at a small size
        pass
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES).eval()
    channels, height, _ = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = _images(height, channels)
    with torch.no_grad():
        model(x)
    return model, (x, labels)

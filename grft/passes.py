"""Splitting the probe's gradient store into groups of layers, one group per pass over the data.

Why: Eq. 4 squares ``H``, the probe gradient summed over every probe batch, so each eligible
matrix needs a weight-sized sum that lives until its ranking. Held for every matrix at once that
is a second copy of the eligible weights (Llama-3.2-1B: about 3.9 GB in float32), more than
training itself adds. Summed for one group of layers per pass, the store holds one group; the
passes replay the same batches (``grft.probe``), so every matrix's ``H`` is the same sum.

Groups are contiguous in module order (bottom to top), so a pass's backward stops at its group's
lowest layer, and (``grft.boundaries``) a pass below the top one need not run past its group's
highest block. A weight shared by several layers is one unit (it has one gradient). The split
minimises the largest group's bytes for a given number of passes; ``passes_within`` gives the
fewest passes whose largest group fits a byte budget.
"""

from __future__ import annotations

import torch
from torch import nn


def store_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the probe sums a weight's gradient in (at least float32, ``grft.accumulation``)."""
    return torch.promote_types(weight.dtype, torch.float32)


def _units(layers: dict[str, nn.Module]) -> list[tuple[list[str], int]]:
    """(layer names, store bytes) per distinct weight, in the order of its first layer."""
    units: dict[int, tuple[list[str], int]] = {}
    for name, layer in layers.items():
        w = layer.weight
        if id(w) not in units:
            units[id(w)] = ([], w.numel() * store_dtype(w).itemsize)
        units[id(w)][0].append(name)
    return list(units.values())


def store_bytes(layers: dict[str, nn.Module]) -> int:
    """Bytes of the sums the probe holds for ``layers`` at once."""
    return sum(size for _, size in _units(layers))


def largest_weight_bytes(layers: dict[str, nn.Module]) -> int:
    """Bytes of the largest single sum: the smallest group any split can reach."""
    return max(size for _, size in _units(layers))


def max_passes(layers: dict[str, nn.Module]) -> int:
    """One pass per distinct weight: the most passes a split can have."""
    return len(_units(layers))


def _split(units: list[tuple[list[str], int]], capacity: int, groups: int | None) -> list[list[int]] | None:
    """Greedy contiguous split with at most ``capacity`` bytes per group (None: a unit is larger).

    With ``groups``, a group is also closed early when the units left are only just enough to
    give every remaining group one, so exactly ``groups`` come out (if there are that many units).
    """
    out: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i, (_, size) in enumerate(units):
        if size > capacity:
            return None
        left = len(units) - i
        must_close = groups is not None and current and left == groups - len(out) - 1
        if current and (filled + size > capacity or must_close):
            out.append(current)
            current, filled = [], 0
        current.append(i)
        filled += size
    if current:
        out.append(current)
    return out


def weight_groups(layers: dict[str, nn.Module], passes: int) -> list[dict[str, nn.Module]]:
    """``layers`` in ``passes`` contiguous groups whose largest store is as small as it can be.

    Raises if there are fewer distinct weights than passes.
    """
    units = _units(layers)
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be a whole number >= 1, got {passes!r}")
    if passes > len(units):
        raise ValueError(
            f"passes={passes} but the probe has only {len(units)} eligible weight(s) to spread over them; "
            f"use at most {len(units)} passes"
        )
    sizes = [size for _, size in units]
    low, high = max(sizes), sum(sizes)
    while low < high:  # the smallest capacity that splits into at most `passes` groups
        mid = (low + high) // 2
        if len(_split(units, mid, None)) <= passes:
            high = mid
        else:
            low = mid + 1
    split = _split(units, low, passes)
    return [{name: layers[name] for i in group for name in units[i][0]} for group in split]


def passes_within(layers: dict[str, nn.Module], budget_bytes: float) -> int | None:
    """The fewest passes whose largest group's store fits ``budget_bytes``; None if no split does
    (one weight's sum alone is larger)."""
    split = _split(_units(layers), int(budget_bytes), None) if budget_bytes >= 1 else None
    return None if split is None else len(split)

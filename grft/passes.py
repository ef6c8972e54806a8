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

from .deferred_sums import deferrable, part_bounds


def store_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the probe sums a weight's gradient in (at least float32, ``grft.accumulation``)."""
    return torch.promote_types(weight.dtype, torch.float32)


def deferred_bounds(layers: dict[str, nn.Module], part_bytes: float | None) -> dict[str, list[tuple[int, int]]]:
    """Row blocks (``grft.deferred_sums.part_bounds``) of every weight whose sum is larger than
    ``part_bytes`` and can be summed after its pass (Linear, Conv2d), by the weight's first layer."""
    if part_bytes is None:
        return {}
    if isinstance(part_bytes, bool) or not isinstance(part_bytes, (int, float)) or not part_bytes > 0:
        raise ValueError(f"part_bytes must be a number of bytes > 0, or None to defer no sum; got {part_bytes!r}")
    out: dict[str, list[tuple[int, int]]] = {}
    seen: set[int] = set()
    for name, layer in layers.items():
        w = layer.weight
        if id(w) in seen:
            continue
        seen.add(id(w))
        if w.numel() * store_dtype(w).itemsize > part_bytes and deferrable(layer):
            out[name] = part_bounds(w.shape, part_bytes, store_dtype(w).itemsize)
    return out


def _units(layers: dict[str, nn.Module], part_bytes: float | None = None) -> list[tuple[list[str], int, bool]]:
    """(layer names, store bytes, deferred) per distinct weight, in the order of its first layer.

    A deferred weight (``deferred_bounds``) holds nothing during its pass and its largest block of
    rows after it; it is counted at that block's bytes and ends its group, so it sits in the pass's
    top block, whose layers sum their gradient directly (no weight-sized gradient while probing).
    """
    deferred = deferred_bounds(layers, part_bytes)
    units: dict[int, tuple[list[str], int, bool]] = {}
    for name, layer in layers.items():
        w = layer.weight
        if id(w) not in units:
            size = w.numel() * store_dtype(w).itemsize
            if name in deferred:
                width = size // max(1, w.shape[0])
                size = max(stop - start for start, stop in deferred[name]) * width
            units[id(w)] = ([], size, name in deferred)
        units[id(w)][0].append(name)
    return list(units.values())


def store_bytes(layers: dict[str, nn.Module]) -> int:
    """Bytes of the sums the probe holds for ``layers`` at once."""
    return sum(
        w.numel() * store_dtype(w).itemsize
        for w in {id(layer.weight): layer.weight for layer in layers.values()}.values()
    )


def largest_weight_bytes(layers: dict[str, nn.Module]) -> int:
    """Bytes of the largest single sum: the smallest group any split can reach."""
    return max(size for _, size, _ in _units(layers))


def max_passes(layers: dict[str, nn.Module]) -> int:
    """One pass per distinct weight: the most passes a split can have."""
    return len(_units(layers))


def _split(units: list[tuple[list[str], int, bool]], capacity: int, groups: int | None) -> list[list[int]] | None:
    """Greedy contiguous split with at most ``capacity`` bytes per group (None: a unit is larger);
    a deferred unit closes its group.

    With ``groups``, a group is also closed early when the units left are only just enough to
    give every remaining group one, so exactly ``groups`` come out (if there are that many units).
    """
    out: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i, (_, size, _) in enumerate(units):
        if size > capacity:
            return None
        left = len(units) - i
        must_close = groups is not None and current and left == groups - len(out) - 1
        if current and (filled + size > capacity or must_close):
            out.append(current)
            current, filled = [], 0
        current.append(i)
        filled += size
        if units[i][2]:
            out.append(current)
            current, filled = [], 0
    if current:
        out.append(current)
    return out


def weight_groups(
    layers: dict[str, nn.Module], passes: int, part_bytes: float | None = None
) -> list[dict[str, nn.Module]]:
    """``layers`` in ``passes`` contiguous groups whose largest store is as small as it can be.

    ``part_bytes``: weights with a larger sum are deferred (``deferred_bounds``). Raises if there
    are fewer distinct weights than passes, or more deferred weights.
    """
    units = _units(layers, part_bytes)
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be a whole number >= 1, got {passes!r}")
    if passes > len(units):
        raise ValueError(
            f"passes={passes} but the probe has only {len(units)} eligible weight(s) to spread over them; "
            f"use at most {len(units)} passes"
        )
    fewest = len(_split(units, sum(size for _, size, _ in units), None))
    if passes < fewest:
        raise ValueError(
            f"passes={passes} but {fewest} passes are the fewest with the weights summed after their pass "
            f"(those over {part_bytes} bytes) each ending one; use at least {fewest} passes"
        )
    sizes = [size for _, size, _ in units]
    low, high = max(sizes), sum(sizes)
    while low < high:  # the smallest capacity that splits into at most `passes` groups
        mid = (low + high) // 2
        if len(_split(units, mid, None)) <= passes:
            high = mid
        else:
            low = mid + 1
    split = _split(units, low, passes)
    return [{name: layers[name] for i in group for name in units[i][0]} for group in split]


def passes_within(layers: dict[str, nn.Module], budget_bytes: float, part_bytes: float | None = None) -> int | None:
    """The fewest passes whose largest group's store fits ``budget_bytes`` (with the weights over
    ``part_bytes`` deferred); None if no split does (one weight's sum alone is larger)."""
    split = _split(_units(layers, part_bytes), int(budget_bytes), None) if budget_bytes >= 1 else None
    return None if split is None else len(split)

"""A validation split carved out of the training split, for tasks whose layout has none (digits, GLUE).

Why: settings chosen on the test split overstate what they will do on new data. Tasks that ship
a validation split (VTAB-1k's val200, VPT's FGVC val.json) use it; the others hold out a seeded,
stratified fraction of their training items (scikit-learn's ``train_test_split``), the same items
for every trial of a study, and the indices are kept so the study can save them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch.utils.data import Dataset, Subset

from .own import held_out


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(kept, held_out)`` indices into ``labels``, both sorted: ``fraction`` of every class held out."""
    return held_out(labels, fraction, seed, "dataset.val_fraction")


def holdout_of(cfg: Mapping) -> tuple[float, int] | None:
    """``(fraction, seed)`` when the dataset config asks for a held-out validation part, else None."""
    fraction = cfg.get("val_fraction")
    if fraction is None:
        return None
    return float(fraction), int(cfg.get("val_seed", 0))


def split_off(dataset: Dataset, labels: Sequence[int], fraction: float, seed: int) -> tuple[Subset, Subset, dict]:
    """``(train part, validation part, facts)``; facts say which items were held out (saved with a study)."""
    kept, held = stratified_holdout(labels, fraction, seed)
    facts = {"fraction": fraction, "seed": seed, "of": len(labels), "val_indices": held}
    return Subset(dataset, kept), Subset(dataset, held), facts

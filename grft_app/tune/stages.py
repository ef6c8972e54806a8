"""What a study's trials and its final run change in a task's config, per data family.

Trials train on the training part and are evaluated on a validation split only:
- VTAB-1k: train800, validated on val200 (``dataset.split=train800``);
- FGVC: VPT's train.json, validated on val.json (``dataset.split=train``);
- GLUE and the digits default, which have no validation split: a seeded, stratified part of the
  training items (``dataset.val_fraction``; GLUE a tenth, digits a fifth of its 200 images);
- your own data (``images``/``text`` families): its ``val/`` folder (``dataset.val`` file), or a held-out
  ``dataset.val_fraction`` (``hydra.sweeper.val_fraction``).
No trial evaluates the test split (``protocol.test_every=0`` and no test after training).

The final run trains on training + validation data (the protocol's own split; your own data's
``val/`` folder joins its training items: ``with_val_in_train``) with the chosen settings, and is
tested once, after training (``protocol.test_every=0``, ``protocol.report=final``):
picking the best epoch on the test split would be choosing on it again.

The overrides are Hydra override strings, so a run's saved config says what it ran on.
"""

from __future__ import annotations

from collections.abc import Mapping

TRIAL, FINAL = "trial", "final"
STAGES = (TRIAL, FINAL)

# Families with a validation split in their layout: the split that holds it out, and the one that does not.
SPLITS = {"vtab": ("train800", "train800val200"), "fgvc": ("train", "trainval")}
# Families without one: the share of the training items held out (seeded, stratified).
VAL_FRACTION = {"glue": 0.1, "digits": 0.2}
OWN_DATA = ("images", "text")


class StageError(ValueError):
    """A study asked of a task it cannot hold a validation split out of; the message names the fix."""


def stage_of(cfg: Mapping) -> str | None:
    """``trial``, ``final`` or None (a run outside a study)."""
    tune = cfg.get("tune") if cfg is not None else None
    stage = tune.get("stage") if tune else None
    if stage is not None and stage not in STAGES:
        raise StageError(f"tune.stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return stage


def stage_overrides(dataset: Mapping, stage: str, val_fraction: float | None = None, val_seed: int = 0) -> list[str]:
    """The overrides that make a run of ``dataset`` (the composed ``dataset`` node) a trial or the final run."""
    family = str(dataset.get("family"))
    if stage == TRIAL:
        overrides = ["protocol.test_every=0"]
        if family in SPLITS:
            overrides.append(f"dataset.split={SPLITS[family][0]}")
        elif family in VAL_FRACTION:
            fraction = val_fraction if val_fraction is not None else VAL_FRACTION[family]
            overrides += [f"++dataset.val_fraction={fraction}", f"++dataset.val_seed={int(val_seed)}"]
        elif family in OWN_DATA and val_fraction is not None:  # else its val/ folder or file (dataset.split_seed seeds)
            overrides.append(f"dataset.val_fraction={val_fraction}")
        elif family not in OWN_DATA:
            raise StageError(
                f"dataset family {family!r} has no validation split the tuner knows; "
                f"known: {', '.join([*SPLITS, *VAL_FRACTION, *OWN_DATA])}"
            )
        return overrides
    if stage == FINAL:
        overrides = ["protocol.test_every=0", "protocol.report=final"]
        if family in SPLITS:
            overrides.append(f"dataset.split={SPLITS[family][1]}")
        return overrides
    raise StageError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")


def tuning_of(cfg, objective: str | None = None):
    """``(selected_on, Tuning)`` for a run's record: ``("val", ...)`` for a study's final run, a trial's
    ``Tuning`` with ``selected_on`` None, and ``(None, None)`` outside a study."""
    from pathlib import Path

    from ..record import Tuning
    from .study import study_dir

    stage = stage_of(cfg)
    if stage is None:
        return None, None
    tune = cfg.tune
    study = str(tune.get("study") or "")
    if not study:
        raise StageError(f"tune.stage={stage} needs tune.study (the study's name); launch studies with make tune")
    storage = str(study_dir(Path(str(cfg.paths.runs)), study))
    if stage == TRIAL:
        return None, Tuning(study=study, stage=stage, storage=storage, objective=objective)
    trial, value = tune.get("trial"), tune.get("value")
    return "val", Tuning(
        study=study,
        stage=stage,
        storage=storage,
        objective=objective,
        trial=None if trial is None else int(trial),
        value=None if value is None else float(value),
    )


def with_val_in_train(splits):
    """A final run's data when the task brings its own validation split (your ``val/`` folder or file):
    the validation items train too (with the training transform), and nothing is left to validate on."""
    from dataclasses import replace

    from torch.utils.data import ConcatDataset

    from ..data.views import Transformed, TwoViews

    train, probe, val = splits.train, splits.probe, splits.val
    if val is None:
        return splits
    if isinstance(train, Transformed) and isinstance(val, Transformed) and isinstance(probe, TwoViews):
        raw = ConcatDataset([train.raw, val.raw])  # images: the raw items, seen through the training transforms
        return replace(splits, train=Transformed(raw, train.transform), probe=TwoViews(raw, probe.transform), val=None)
    if probe is train and not isinstance(train, Transformed):  # texts: items without a transform
        both = ConcatDataset([train, val])
        return replace(splits, train=both, probe=both, val=None)
    raise StageError(
        f"a study's final run trains on train + val, but this task's splits ({type(train).__name__}) cannot be "
        "joined; hold the validation part out with hydra.sweeper.val_fraction instead"
    )

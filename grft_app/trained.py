"""A finished run rebuilt from its directory alone, for ``predict`` and ``export``.

The run's ``record.json`` holds its whole resolved config, so nothing else needs to be given: the
base model is built as the run built it (``models.base_of_run``: the same seed, the same pre-trained
weights, or the same tiny random model for a ``debug=smoke`` run), the run's method puts its adapter
file onto it (``Method.load_adapter``) and folds it into the base layers (``Method.merge``), which
gives a plain model of the base's own library (timm or transformers).

The adapter is the one of the model the run reports (``evaluation.reported.model``: the raw
weights, or their EMA), at the end of training; ``final_test_key`` names the record's test
accuracy of exactly that model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .data import label_names
from .methods import Method, make_method
from .methods.base import CannotMerge
from .models import ModelBundle, base_of_run
from .record import RECORD_NAME, CorruptRecord, RunRecord, read_record, reported_key

RUN_DIR_HINT = "a run directory is the folder of a run's record.json, results/runs/<dataset>/<method>/<run key>/"


class RunNotUsable(ValueError):
    """A directory that is not a finished run (or lacks a file of one); the message names it and the fix."""


@dataclass
class TrainedRun:
    """A finished run's trained model (eval mode), with what is needed to feed it and to name its outputs."""

    run_dir: Path
    record: RunRecord
    cfg: DictConfig
    bundle: ModelBundle  # ``bundle.model``: the trained model; ``bundle.inputs``: what it eats
    method: Method
    class_names: list[str]
    adapter: Path
    merged: bool  # a plain model of its library (False: the method's layers are still in it)
    not_merged_because: str | None = None

    @property
    def model(self) -> nn.Module:
        return self.bundle.model

    @property
    def kind(self) -> str:
        """``image`` or ``text``: what the model takes."""
        return self.bundle.inputs.kind

    @property
    def final_test_key(self) -> str:
        """The ``metrics`` key of the final test accuracy of the model the adapter holds (raw or EMA)."""
        return reported_key("test_acc", "final", reported_model(self.record))


def finished_record(run_dir: str | Path) -> RunRecord:
    """The record of a finished run in ``run_dir``; ``RunNotUsable`` (one line, with the fix) otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotUsable(f"{run_dir} is not a directory; {RUN_DIR_HINT}")
    try:
        record = read_record(run_dir)
    except CorruptRecord as err:
        raise RunNotUsable(str(err)) from None
    if record is None:
        raise RunNotUsable(f"{run_dir} has no {RECORD_NAME}, so it is not a run directory; {RUN_DIR_HINT}")
    if not record.done:
        raise RunNotUsable(
            f"the run in {run_dir} has not finished (status: {record.state}); launch its configuration again to "
            "finish it (the same `python run.py ...` command resumes it)"
        )
    return record


def reported_model(record: RunRecord) -> str:
    """``raw`` or ``ema``: the model whose numbers the run reports."""
    return record.evaluation.reported.model if record.evaluation is not None else "raw"


def adapter_path(record: RunRecord, run_dir: Path) -> Path:
    which = reported_model(record)
    name = (record.adapter_files or {}).get(which) or (record.adapter_file if which == "raw" else None)
    if name is None:
        raise RunNotUsable(
            f"the record of {run_dir} names no adapter file of its {which} model, so the trained model cannot be "
            "rebuilt; train the run again with force=true"
        )
    path = Path(run_dir) / name
    if not path.is_file():
        raise RunNotUsable(f"{path} is missing, so the run directory is incomplete; copy it whole, or train it again")
    return path


def load_run(run_dir: str | Path, merge: bool = True, device: str | torch.device = "cpu") -> TrainedRun:
    """Rebuild a finished run's trained model from ``run_dir`` alone (see the module docstring).

    ``merge``: fold the method's additions into the base layers. A method whose additions do not
    fold (adapter, VPT) leaves them in place; ``merged`` and ``not_merged_because`` say so.
    """
    from .lit.settings import method_settings

    run_dir = Path(run_dir)
    record = finished_record(run_dir)
    path = adapter_path(record, run_dir)
    cfg = OmegaConf.create(record.config)
    method = make_method(method_settings(cfg))
    # Your own data's class names come from its files (kept in the record); a paper task's from its config.
    names = record.class_names or label_names(cfg.dataset, int(cfg.dataset.num_classes))
    bundle = base_of_run(cfg, len(names))
    model = method.load_adapter(bundle, path)
    merged, because = False, None
    if merge:
        try:
            model = method.merge(model)
            merged = True
        except CannotMerge as err:
            because = str(err)
    for p in model.parameters():
        p.requires_grad_(False)
    bundle.model = model.to(device).eval()
    return TrainedRun(run_dir, record, cfg, bundle, method, names, path, merged, because)


def logits_of(model: nn.Module, inputs: object) -> torch.Tensor:
    """The classifier's logits ``[batch, classes]`` for a batch of images or a tokenized text batch."""
    from grft.probe import call_model

    out = call_model(model, inputs)
    return out.logits if hasattr(out, "logits") else out

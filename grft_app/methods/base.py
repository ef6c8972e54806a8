"""The contract between a fine-tuning method and the training loop.

A method decides which parameters train (``prepare``), may look at the data before training
(``probe``), may add to the loss (``extra_loss``) or edit gradients before the optimizer step, and
saves what it trained (``save_adapter``). The LightningModule calls these hooks and nothing else,
so every method runs under the same data, schedule and evaluation.

After training, ``load_adapter`` puts a saved adapter onto a fresh base model (the model as it
trained) and ``merge`` folds what the method added into the base model's own layers, so the result
is a plain model of its library (``grft_app.trained`` rebuilds a run with these two, for
``predict`` and ``export``). A method whose additions do not fold (new modules, new tokens) says
why in ``CannotMerge``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grft.config import GRFTConfig
from grft.report import ParamReport

from ..models import ModelBundle
from .probe_plan import ProbeSettings

Progress = Callable[[Iterable, str, int | None], Iterable]


@dataclass(frozen=True)
class MethodSettings:
    """The method's Hydra group (``options``: everything in it but ``name`` and ``_target_``), the GRFT
    keys, and how the probe may spend memory (``probe``: ``probe.memory``, ``probe.passes``).

    ``target``: the class the group's ``_target_`` names (``None``: the one ``conf/method/<name>.yaml``
    names). A ``_target_`` left in ``options`` (the group as Hydra composed it) moves there.
    """

    name: str
    grft: GRFTConfig = field(default_factory=GRFTConfig)
    options: dict[str, Any] = field(default_factory=dict)
    target: str | None = None

    def __post_init__(self) -> None:
        if "_target_" in self.options:
            options = dict(self.options)
            target = options.pop("_target_")
            object.__setattr__(self, "options", options)
            object.__setattr__(self, "target", self.target or target)

    probe: ProbeSettings = field(default_factory=ProbeSettings)


FORMAT = "grft-trained-tensors"


class CannotMerge(ValueError):
    """A method's trained additions cannot be folded into the base model's own layers; the message says why."""


class Method:
    """Base: nothing trains but what ``prepare`` unfreezes; no probe, no extra loss."""

    name = "base"
    # The GRFT settings this method reads (config keys of ``grft_app.grft_settings``); the others are left
    # out of its run key and record.
    grft_keys: tuple[str, ...] = ()
    # Whether the method handles a head made of several modules (DistilBERT, DeBERTa-v2).
    several_head_modules = False
    # Whether the method knows only timm's VisionTransformer layout (checked before the model loads).
    timm_vit_only = False
    # What a model needs besides an obvious head for the method to apply (said when another method is suggested).
    requires = ""
    # Whether the method's state may be sharded across ranks (FSDP, DeepSpeed): not when it keeps
    # whole-weight state (slices written in place, full-size masks) on every rank.
    shardable = True
    # Whether ``k=auto share=...`` sizes this method's k (from the model's shapes, ``grft.largest_k``).
    sizes_k_by_share = False

    def __init__(self, settings: MethodSettings):
        self.settings = settings
        self.base_parameter_count: int | None = None

    # --- building -----------------------------------------------------------------------------
    def prepare(self, bundle: ModelBundle) -> nn.Module:
        """Make ``bundle.model`` trainable as the method defines; return the module to train.

        Runs in ``configure_model``: before the optimizer exists, before any data is seen.
        """
        if len(bundle.arch.heads) > 1 and not self.several_head_modules:
            raise ValueError(
                f"method {self.name} trains a head of one module, but this model's head is {list(bundle.arch.heads)}: "
                "use method=grft, or pass an Architecture whose head is one module"
            )
        self.base_parameter_count = sum(p.numel() for p in bundle.model.parameters())
        self.arch = bundle.arch
        return self.configure(bundle)

    def configure(self, bundle: ModelBundle) -> nn.Module:
        raise NotImplementedError

    def options_as(self, cls: type) -> Any:
        """The method's Hydra options as the dataclass ``cls``; an unknown key is an error naming the allowed ones."""
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(self.settings.options) - set(allowed))
        if unknown:
            raise ValueError(
                f"method {self.name}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
            )
        return cls(**self.settings.options)

    # --- before training ------------------------------------------------------------------------
    def needs_probe(self, model: nn.Module) -> bool:
        return False

    def probe(self, model: nn.Module, batches: Iterable, progress: Progress | None = None) -> dict:
        """Look at the training data before training (GRFT/GPS selection); returns facts to record.

        The facts are JSON values (numbers, strings); the run record keeps them under ``probe_facts``.
        """
        return {}

    # --- training -------------------------------------------------------------------------------
    def check_training(self, settings: Any) -> None:
        """Reject optimisation settings the method cannot honour (called when the optimizer is built).

        ``settings`` carries at least ``optimizer`` and ``weight_decay``. GPS, for one, needs weight
        decay 0: decay would move the entries its masks freeze.
        """

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def before_optimizer_step(self, model: nn.Module) -> None:
        """Edit gradients after backward, before the step (GPS applies its masks here)."""

    def optimizer_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups: by default every trainable parameter, decayed by the
        optimizer itself (AdamW: decoupled, Adam: L2), as in full fine-tuning."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def decay(self, model: nn.Module, optimizer: torch.optim.Optimizer, weight_decay: float, decoupled: bool) -> None:
        """Weight decay the optimizer does not do itself (called before each step); none by default."""

    # --- reporting and saving -------------------------------------------------------------------
    def gradient_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Parameter name -> 0/1 mask of the entries that may change; parameters not listed change in full.

        Only a method that trains part of a tensor by masking its gradient (GPS) returns any.
        """
        return {}

    def param_report(self, model: nn.Module) -> ParamReport:
        """The Params column, one definition for every method.

        trainable: the entries training can change: every parameter that requires grad, counted in
        full, or by its gradient mask where the method has one (GPS). total: the parameters of the
        original model with its new head, counted in ``prepare`` before the method adds anything
        (LoRA matrices, adapters, prompts, GRFT slices are not in it).
        """
        if self.base_parameter_count is None:
            raise ValueError(
                f"method {self.name}: param_report needs prepare(bundle) to have run (it counts the original model)"
            )
        masks = self.gradient_masks(model)
        trainable = sum(
            int(masks[name].count_nonzero()) if name in masks else p.numel()
            for name, p in model.named_parameters()
            if p.requires_grad
        )
        return ParamReport(trainable, self.base_parameter_count)

    def save_adapter(self, model: nn.Module, path: Path) -> Path | None:
        """Write what the method trained: every trainable parameter, and the BatchNorm running
        statistics (a frozen BatchNorm still moves them in train mode), by their names in ``model``."""
        from grft.adapter import running_statistics
        from grft.io import save_tensors

        tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
        tensors.update(running_statistics(model))
        return save_tensors(path, tensors, {"format": FORMAT, "method": self.name})

    def save_selection(self, model: nn.Module, run_dir: Path) -> Path | None:
        """Write the probe's selection beside the adapter, where the method has one worth keeping apart
        (GRFT's ``selection.safetensors``); ``None``: nothing written."""
        return None

    @classmethod
    def distinguishing(cls, selection: str | None = None, k: int | None = None) -> list[str]:
        """What sets one run of the method apart from another in a summary (GRFT: ``["row", "k=4"]``); none here."""
        return []

    @classmethod
    def label(cls, selection: str | None = None, k: int | None = None) -> str:
        """The method as tables name it: its name, and what sets it apart (GRFT: ``grft (row, k=4)``)."""
        words = cls.distinguishing(selection, k)
        return f"{cls.name} ({', '.join(words)})" if words else cls.name

    # --- after training -------------------------------------------------------------------------
    def load_adapter(self, bundle: ModelBundle, path: Path) -> nn.Module:
        """The trained model: ``bundle`` (a fresh base, built as the run built it) prepared as for
        training, then every tensor of the saved adapter (``save_adapter``) put in its place.

        Strict: the file must hold exactly what ``prepare`` makes trainable (and the running
        statistics), with the same shapes; anything else is an error naming the file.
        """
        model = self.prepare(bundle)
        load_trained_tensors(model, path, self.name)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the method's additions into the base layers; returns a plain model of the base's
        architecture. The base method adds nothing (it only chose which parameters train)."""
        return model

    def checkpoint_keys(self, model: nn.Module) -> set[str] | None:
        """State-dict keys a checkpoint must keep; ``None`` keeps everything.

        Frozen pre-trained weights are rebuilt from the model config on resume, so a checkpoint
        needs only what training changes.
        """
        keys = {n for n, p in model.named_parameters() if p.requires_grad}
        return keys


def load_trained_tensors(model: nn.Module, path: str | Path, method: str) -> nn.Module:
    """Copy a ``save_adapter`` file of the base layout into ``model`` (prepared by ``method``), checked first."""
    from grft.adapter import running_statistics
    from grft.io import load_tensors, read_metadata

    meta = read_metadata(path)
    if meta.get("format") not in (None, FORMAT) or meta.get("method", method) != method:
        raise ValueError(
            f"{path} is not an adapter of method {method} (its metadata says format {meta.get('format')!r}, "
            f"method {meta.get('method')!r}); give the run directory it was saved in"
        )
    tensors = load_tensors(path)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    statistics = running_statistics(model)
    unknown = sorted(set(tensors) - set(trained) - set(statistics))
    absent = sorted(set(trained) - set(tensors))
    if unknown or absent:
        raise ValueError(
            f"{path} does not fit this model: tensors with no place in it {unknown[:3]}, trained tensors the file "
            f"lacks {absent[:3]}; it was saved from another base model or another method"
        )
    check_shapes(path, {n: tensors[n] for n in trained}, trained)
    with torch.no_grad():
        for name, value in trained.items():
            value.copy_(tensors[name])
    return load_running_statistics(model, tensors, path)


def load_running_statistics(model: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> nn.Module:
    """Copy the BatchNorm running statistics of an adapter file into ``model``; a file without them is refused
    (the model would not be the trained one)."""
    from grft.adapter import running_statistics

    statistics = running_statistics(model)
    if not statistics:
        return model
    if not set(statistics) <= set(tensors):
        raise ValueError(
            f"{path} lacks the BatchNorm running statistics of this model (written before adapters kept them), so "
            "the model it gives is not the trained one; train the run again with force=true"
        )
    check_shapes(path, {n: tensors[n] for n in statistics}, statistics)
    with torch.no_grad():
        for name, buffer in statistics.items():
            buffer.copy_(tensors[name])
    return model


def check_shapes(path: str | Path, tensors: dict[str, torch.Tensor], places: dict[str, torch.Tensor]) -> None:
    differ = [
        f"{n} {tuple(t.shape)} vs {tuple(places[n].shape)}" for n, t in tensors.items() if t.shape != places[n].shape
    ]
    if differ:
        raise ValueError(
            f"{path}: tensor shapes differ from this model's (file vs model): {differ[:3]} (another number of classes?)"
        )


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none (its Hydra group holds only ``name``)."""


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def train_added(model: nn.Module, added: Iterable[nn.Module], head: str) -> nn.Module:
    """Unfreeze the modules a method added (adapters, prompts, scale-shifts) and the head; return ``model``."""
    for module in added:
        unfreeze(module)
    unfreeze(model.get_submodule(head))
    return model

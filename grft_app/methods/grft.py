"""GRFT as a method of the app: allocate slices up front, probe in ``on_fit_start``, penalise."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from grft.adapter import load_adapter, running_statistics, save_adapter
from grft.decay import add_slice_decay_grad_, decay_slices_
from grft.penalty import penalty
from grft.probe import select
from grft.tuner import apply_selection, attach, current_selection, has_selection, merge, sliced_layers

from ..grft_settings import KEYS as GRFT_KEYS
from ..models import ModelBundle
from .base import Method, NoOptions, Progress
from .probe_plan import plan_passes


class GRFTMethod(Method):
    name = "grft"
    grft_keys = GRFT_KEYS  # every GRFT setting
    several_head_modules = True
    shardable = False
    sizes_k_by_share = True
    last_plan = None  # the probe's memory plan (probe_plan.Plan), once it has run

    def configure(self, bundle: ModelBundle) -> nn.Module:
        self.options_as(NoOptions)
        # Placeholders now (zeros, shape from k); the probe fills them in on_fit_start.
        return attach(bundle.model, None, self.settings.grft, bundle.arch)

    def needs_probe(self, model: nn.Module) -> bool:
        return not has_selection(model)

    def probe(self, model: nn.Module, batches: Iterable, progress: Progress | None = None) -> dict:
        """Select with as many passes over the probe data as ``probe.memory``/``probe.passes`` ask
        (``probe_plan``); the selection is the same for any number of passes."""
        plan = plan_passes(model, batches, self.settings.grft, self.arch, self.settings.probe)
        self.last_plan = plan  # its time, for the benchmark (the facts hold no timings)
        selection = select(
            model,
            batches,
            self.settings.grft,
            arch=self.arch,
            progress=progress,
            passes=plan.passes,
            part_bytes=plan.part_bytes,
        )
        apply_selection(model, selection)
        starts = getattr(model, "grft_probe_passes", [])
        return {
            "layers": len(selection),
            "selected_entries": selection.slice_numel(),
            **plan.facts(),
            # Passes that ran only up to their group, from the gradient the pass above kept (grft.boundaries).
            "passes_from_kept_gradient": sum(where != "loss" for where in starts),
            # Passes whose blocks below their group stood in with a kept hidden state (grft.kept_inputs).
            "passes_from_kept_input": sum(n > 0 for n in getattr(model, "grft_probe_skipped", [])),
        }

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return penalty(model)

    def optimizer_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """Slices in a group of their own with the optimizer's decay off: ``decay`` decays the
        selected weights themselves (grft/decay.py); biases and head decay as the optimizer does."""
        deltas = [layer.grft_delta for layer in sliced_layers(model).values()]
        ids = {id(p) for p in deltas}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        return [
            {"params": rest, "weight_decay": weight_decay},
            {"params": deltas, "weight_decay": 0.0, "grft_slices": True},
        ]

    def decay(self, model: nn.Module, optimizer: torch.optim.Optimizer, weight_decay: float, decoupled: bool) -> None:
        if not weight_decay:
            return
        if decoupled:
            for group in (g for g in optimizer.param_groups if g.get("grft_slices")):
                decay_slices_(model, float(group["lr"]) * weight_decay)
        else:
            add_slice_decay_grad_(model, weight_decay)

    def save_adapter(self, model: nn.Module, path: Path) -> Path | None:
        return save_adapter(model, path)

    def save_selection(self, model: nn.Module, run_dir: Path) -> Path | None:
        return current_selection(model).save(run_dir / "selection.safetensors")

    @classmethod
    def distinguishing(cls, selection: str | None = None, k: int | None = None) -> list[str]:
        return [str(selection), f"k={k}"]

    def load_adapter(self, bundle: ModelBundle, path: Path) -> nn.Module:
        """The library's own loader: it checks the file's checksum and the base's fingerprint first."""
        self.arch = bundle.arch
        return load_adapter(bundle.model, path, arch=bundle.arch)

    def merge(self, model: nn.Module) -> nn.Module:
        return merge(model)

    def checkpoint_keys(self, model: nn.Module) -> set[str]:
        keys = super().checkpoint_keys(model)
        keys |= {n for n, _ in model.named_buffers() if n.rsplit(".", 1)[-1].startswith("grft_")}
        return keys | set(running_statistics(model))

"""The benchmark's arms, each made ready to train one model: the app's methods, and the floor.

Every arm but ``floor`` is a method of the app (``grft_app/methods/<name>.py``), built by the app's
one factory (``make_method``) from the settings objects a run builds (``MethodSettings``,
``GRFTConfig``) and driven through the hooks the LightningModule calls: ``prepare`` (what
trains), ``probe`` (GRFT's and GPS's selection, timed as ``probe_s``), ``extra_loss`` (GRFT's
penalty), ``before_optimizer_step`` (GPS's masks), ``param_report`` (the trainable count) and
``save_adapter`` (the file a run writes). So the benchmark measures what a run trains.

An arm is a list of Hydra overrides composed through the app's own config, as ``python run.py`` composes
them (``names``: ``<method>`` or ``<method>_<selection>``), and the app's ``method_settings`` reads the
result; what differs between arms comes from the method's class (whether it reads the selection and
``k``, whether it probes), never from a list here:

- ``method=<method>``, with ``selection=<selection>`` for ``grft_row`` / ``grft_column``.
- ``recipe=<method>_<suite>`` where the method has a row in the paper table the model stands for
  (ViT: VTAB-1k, Table 2; Llama: GLUE, Table 3): LoRA then trains ``recipe=lora_vtab`` (r=16,
  alpha=16 on the fused ``qkv``) or ``recipe=lora_glue`` (r=16, alpha=16 on ``q_proj``, ``k_proj``,
  ``v_proj``). Only the recipe's ``method`` options are used (the benchmark sets its own optimiser).
- the benchmark's settings, the same for every arm: ``k`` (``--k``: GRFT's rows or columns, GPS's
  entries per row) and the squared L2 pull, lambda 1e-3 over the last 2 blocks + stem + head (ours:
  a penalty that is on, so its cost is measured; only the methods that read them do).
- floor (the benchmark's own): the head plus the bias of the network's first layer (ViT: the
  patch embedding; Llama, which has no biases: a zero bias given to layer 0's ``q_proj``, so the
  outputs do not change), so backward runs through every layer but computes no weight gradient
  inside it. No method that trains inside the network can take less time or memory than this.

Adam's weight decay is 0 in every arm, so the methods' own decay hooks have nothing to do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

# Every arm's worker loads Hydra (the floor's too), so its few MB of modules count for all alike.
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file
from torch import nn

from grft.architecture import detect_architecture
from grft_app.data.splits import InputSpec
from grft_app.methods import Method, MethodSettings, make_method, method_class
from grft_app.methods.probe_plan import ProbeSettings
from grft_app.models import ModelBundle
from grft_app.paths import CONF_DIR
from grft_app.run.settings import method_settings

from .models import Workload
from .names import FLOOR, arm_parts, check_arm, group_options

PENALTY_LAMBDA = 1e-3
REGULAR_LAYERS = 2
# The paper's table each model stands for: a method's row of it is conf/recipe/<method>_<suite>.yaml.
SUITES = {"vit": "vtab", "llama": "glue"}


@dataclass
class Trainable:
    """A model made trainable by one arm.

    model: what the training step calls. params: what Adam updates. extra_loss: added to the task
    loss (may return ``None``). before_step: runs between backward and the optimizer step.
    probe_s: wall seconds of the selection probe (0 if none). save: writes the arm's adapter file
    under a folder, returns it. moving: the entries training can change (the app's Params column;
    ``None``: every entry of ``params``). method: the app's method (``None`` for the floor).
    probe_facts: what the method's probe returned (GRFT: its passes and their memory plan).
    """

    model: nn.Module
    params: list[nn.Parameter]
    extra_loss: Callable[[], torch.Tensor | None] | None
    before_step: Callable[[], None] | None
    probe_s: float
    save: Callable[[Path], Path]
    moving: int | None = None
    method: Method | None = None
    probe_facts: dict | None = None


def arm_class(arm: str) -> type[Method] | None:
    """The app's method class of ``arm`` (``None``: the floor); a selection the method does not read is an error."""
    if arm == FLOOR:
        return None
    method, selection = arm_parts(arm)
    cls = method_class(method)
    if selection is not None and "selection.kind" not in cls.grft_keys:
        raise ValueError(f"unknown method {arm!r}: method {method} reads no selection; use {method}")
    return cls


def check_method(arm: str) -> None:
    check_arm(arm)
    arm_class(arm)


def probes(arm: str) -> bool:
    """Whether ``arm``'s setup runs a probe (its method has one: GRFT, GPS)."""
    cls = arm_class(arm)
    return cls is not None and cls.needs_probe is not Method.needs_probe


def reads_k(arm: str) -> bool:
    cls = arm_class(arm)
    return cls is not None and "k" in cls.grft_keys


def arm_overrides(arm: str, model: str, k: int) -> list[str]:
    """``arm`` on ``model`` (``vit`` or ``llama``) as overrides of the app's config (``python run.py ...``)."""
    arm_class(arm)
    method, selection = arm_parts(arm)
    recipe = f"{method}_{SUITES[model]}"
    return (
        [f"method={method}"]
        + ([f"selection={selection}"] if selection else [])
        + ([f"recipe={recipe}"] if recipe in group_options("recipe") else [])
        + [f"k={k}", "norm=l2", f"lambda={PENALTY_LAMBDA}", f"regular_layers={REGULAR_LAYERS}"]
    )


def arm_settings(arm: str, model: str, k: int, probe: ProbeSettings | None = None) -> MethodSettings:
    """The app's settings object for ``arm`` on ``model``: what ``method_settings`` reads from the composed
    config; ``probe``: how GRFT's probe may spend memory (default: the app's, no more than the training peak)."""
    if arm == FLOOR:
        raise ValueError(f"arm {arm!r} is the benchmark's own, not a method of the app")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=arm_overrides(arm, model, k))
    settings = method_settings(cfg)
    return settings if probe is None else dataclasses.replace(settings, probe=probe)


def bundle_of(work: Workload) -> ModelBundle:
    """The workload's model as the app hands it to a method."""
    if isinstance(work.inputs, dict):
        inputs = InputSpec(kind="text", max_length=work.inputs["input_ids"].shape[1])
    else:
        inputs = InputSpec(kind="image", img_size=work.inputs.shape[-1])
    return ModelBundle(work.model, detect_architecture(work.model), inputs)


def _timed(fn: Callable, sync: Callable[[], None]):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def build_app_method(arm: str, work: Workload, k: int, probe: ProbeSettings | None = None) -> tuple[Method, nn.Module]:
    """``arm``'s method from the app's factory, and ``work.model`` prepared by it (not probed yet)."""
    method = make_method(arm_settings(arm, work.name, k, probe))
    model = method.prepare(bundle_of(work))
    method.check_training(SimpleNamespace(optimizer="adam", weight_decay=0.0))
    return method, model


def prepare_app_method(arm: str, work: Workload, k: int, sync, probe: ProbeSettings | None = None) -> Trainable:
    """Build ``arm`` through the app's factory; run its probe (timed) if it has one."""
    method, model = build_app_method(arm, work, k, probe)
    probe_s, facts = 0.0, {}
    if method.needs_probe(model):
        facts, probe_s = _timed(lambda: method.probe(model, work.probe_batches), sync)
        plan = getattr(method, "last_plan", None)
        if plan is not None:
            facts = {**facts, "plan_s": plan.seconds}

    def save(folder: Path) -> Path:
        return method.save_adapter(model, folder / "adapter.safetensors")

    return Trainable(
        model,
        _trainable(model),
        lambda: method.extra_loss(model),
        lambda: method.before_optimizer_step(model),
        probe_s,
        save,
        method.param_report(model).trainable,
        method,
        facts,
    )


def prepare_floor(work: Workload) -> Trainable:
    """The head and the first layer's bias (given a zero one where it has none)."""
    model = work.model
    names = {f"{work.head}.{n}" for n, _ in model.get_submodule(work.head).named_parameters()}
    first = model.get_submodule(work.floor)
    if first.bias is None:  # a zero bias changes no output, and its gradient needs backward to reach here
        weight = first.weight
        first.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
    names.add(f"{work.floor}.bias")
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)

    def save(folder: Path) -> Path:
        path = folder / "adapter.safetensors"
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}, str(path))
        return path

    return Trainable(model, _trainable(model), None, None, 0.0, save)


def prepare(
    arm: str, work: Workload, k: int, sync: Callable[[], None] = lambda: None, probe: ProbeSettings | None = None
) -> Trainable:
    """Make ``work.model`` trainable the way ``arm`` does (runs its probe, if it has one)."""
    check_method(arm)
    if arm == FLOOR:
        return prepare_floor(work)
    return prepare_app_method(arm, work, k, sync, probe)

"""From the composed Hydra config to typed settings, with one-line errors naming the key.

Also the run key: a short hash of everything that decides a run's result, so a run's directory is
the same every time the same configuration is launched (re-launching resumes or skips it) and two
different configurations never share one. Which settings count is ``grft_app.identity``'s rule
(the tables match records by the same rule); besides them, the key holds the data's identity (the
task folder's resolved path and a hash of its split files, ``grft_app.data.identity``) and the
results version (``grft_app.identity.RESULTS_VERSION``: raised when a change alters the numbers,
which the golden test notices). Neither ``grft.__version__`` nor the git commit is in the key, so a
run resumes across commits that do not change results; the record keeps both.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from grft.config import GRFTConfig

from ..data.identity import data_identity
from ..grft_settings import SETTINGS as GRFT_SETTINGS
from ..grft_settings import config_fields, in_key_words, lookup
from ..identity import run_key as identity_key
from ..lit.schedule import Protocol
from ..lit.train_settings import TrainSettings
from ..methods import MethodSettings
from ..methods.probe_plan import TRAIN, ProbeSettings


class ConfigError(ValueError):
    """A configuration value out of range; the message names the key and the allowed values."""


def check_recipe(cfg) -> None:
    """A baseline recipe (conf/recipe/) lists its settings per task: a task it lacks is one line, not a
    failed interpolation deep in the config."""
    recipe = cfg.get("recipe") or {}
    tasks = recipe.get("tasks") or {}
    task = (cfg.get("dataset") or {}).get("name")
    if tasks and task not in tasks:
        family = (cfg.get("dataset") or {}).get("family")
        method = (cfg.get("method") or {}).get("name")
        raise ConfigError(
            f"recipe={recipe.get('name')} has no settings for task {task!r} (it covers the tasks of "
            f"another benchmark); use recipe={method}_{family}"
        )


def run_key(root: DictConfig) -> str:
    """The run key of a composed config (``grft_app.identity.run_key`` of it resolved, with its data)."""
    container = OmegaConf.to_container(root, resolve=False)
    try:
        check_recipe(container)
    except ConfigError:
        # Raised here, inside Hydra's run-directory interpolation, it would surface as a long traceback;
        # the app's own checks (check_numbers) report it in one line before anything is written.
        return "unresolved-config"
    # hydra.run.dir interpolates run_name, which interpolates this key: drop them (and the loggers, which
    # may name the run by it; none is in the identity) before resolving.
    for key in ("hydra", "run_name", "logger"):
        container.pop(key, None)
    resolved = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    return identity_key(resolved, data_identity(resolved.get("dataset") or {}, str(resolved.get("data_dir"))))


def run_dir_of(cfg: DictConfig) -> Path:
    """Where ``python run.py`` puts (and looks for) this configuration's run: ``paths.runs/task/method/key``."""
    return Path(cfg.paths.runs) / str(cfg.dataset.name) / str(cfg.method.name) / run_key(cfg)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("grft.key"):
        OmegaConf.register_new_resolver("grft.key", lambda *, _root_: run_key(_root_))
    if not OmegaConf.has_resolver("grft.sum"):  # trainer.max_epochs = epochs + the protocol's cool-down
        OmegaConf.register_new_resolver("grft.sum", lambda *values: sum(int(v) for v in values))


AUTO = "auto"


def is_auto_k(cfg: DictConfig) -> bool:
    """``k=auto``: k is the largest within ``share`` percent, sized from the model's shapes (``grft.largest_k``)."""
    return str(cfg.get("k")).strip().lower() == AUTO


def check_budget(cfg: DictConfig) -> None:
    """``k=auto`` needs a ``share`` (a percent > 0), and a ``share`` needs ``k=auto``."""
    share = cfg.get("share")
    if is_auto_k(cfg):
        try:
            ok = share is not None and float(share) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"k=auto needs share=<percent> (the trainable budget, e.g. share=0.3), got share={share!r}"
            )
    elif share is not None:
        raise ConfigError(f"share={share} sizes k only with k=auto; pass k=auto, or drop share")


def grft_config(cfg: DictConfig, k: int | None = None) -> GRFTConfig:
    """The ``GRFTConfig`` of a composed config, read through the settings table (``grft_app.grft_settings``).

    ``k``: the k that ``k=auto`` resolved to (the config keeps ``auto``)."""
    fields = config_fields(cfg)
    if k is not None or is_auto_k(cfg):
        fields["k"] = k if k is not None else 1
    try:
        return GRFTConfig(**fields, seed=int(cfg.seed))
    except ValueError as err:
        raise ConfigError(in_key_words(str(err))) from None


def method_settings(cfg: DictConfig, k: int | None = None) -> MethodSettings:
    options = OmegaConf.to_container(cfg.method, resolve=True)
    name = options.pop("name")
    return MethodSettings(name=name, grft=grft_config(cfg, k), options=options, probe=probe_settings(cfg))


def probe_settings(cfg: DictConfig) -> ProbeSettings:
    """``probe.memory`` / ``probe.passes``, checked; the training batch scales the memory estimate."""
    probe = cfg.get("probe") or {}
    try:
        return ProbeSettings(
            memory=probe.get("memory", TRAIN),
            passes=probe.get("passes"),
            train_batch_size=int(cfg.batch_size) if probe.get("batch_size") is not None else None,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None


NUMBERS = {
    "lr": float,
    "batch_size": int,
    "epochs": int,
    "seed": int,
    **{s.key: s.number for s in GRFT_SETTINGS if s.number is not None},
    "warmup_epochs": float,
    "weight_decay": float,
}


def check_numbers(cfg: DictConfig) -> None:
    """``lr=abc``: one line naming the key, before anything reads it as a number."""
    check_recipe(cfg)
    check_budget(cfg)
    for key, kind in NUMBERS.items():
        value = lookup(cfg, key)
        if key == "k" and is_auto_k(cfg):
            continue
        try:
            number = float(value)
            if kind is int and not number.is_integer():
                raise ValueError
        except (TypeError, ValueError):
            expected = "a whole number" if kind is int else "a number"
            raise ConfigError(f"{key} must be {expected}, got {value!r}") from None


SCHEDULES = ("epoch", "step")
REPORTS = ("best", "final")
REPORT_MODELS = ("raw", "ema")


def protocol_settings(cfg: DictConfig) -> Protocol:
    """The ``protocol`` group (conf/protocol/): schedule, evaluation cadence, reported statistic."""
    p = cfg.protocol
    protocol = Protocol(
        name=str(p.name),
        schedule=str(p.schedule),
        warmup_lr=float(p.get("warmup_lr", 0.0)),
        min_lr=float(p.get("min_lr", 0.0)),
        min_lr_ratio=float(p.get("min_lr_ratio", 0.0)),
        cooldown_epochs=int(p.cooldown_epochs),
        test_every=int(p.test_every),
        report=str(p.report),
        report_model=str(p.report_model),
        drop_last=bool(p.drop_last),
    )
    for key, value, allowed in (
        ("schedule", protocol.schedule, SCHEDULES),
        ("report", protocol.report, REPORTS),
        ("report_model", protocol.report_model, REPORT_MODELS),
    ):
        if value not in allowed:
            raise ConfigError(f"protocol.{key} must be one of {', '.join(allowed)}, got {value!r}")
    for key in ("cooldown_epochs", "test_every"):
        if getattr(protocol, key) < 0:
            raise ConfigError(f"protocol.{key} must be >= 0, got {getattr(protocol, key)}")
    if protocol.report_model == "ema" and cfg.augment.ema is None:
        raise ConfigError(
            "protocol.report_model=ema needs augment.ema (an EMA decay, e.g. 0.9998); or report_model=raw"
        )
    if protocol.schedule == "step" and protocol.cooldown_epochs:
        raise ConfigError(
            "protocol.cooldown_epochs needs protocol.schedule=epoch (the per-step schedule has no cool-down)"
        )
    return protocol


def train_settings(cfg: DictConfig, metrics: tuple[str, ...]) -> TrainSettings:
    for key in ("lr", "batch_size", "epochs"):
        if not float(cfg[key]) > 0:
            raise ConfigError(f"{key} must be > 0, got {cfg[key]!r}")
    if float(cfg.warmup_epochs) < 0:
        raise ConfigError(f"warmup_epochs must be >= 0, got {cfg.warmup_epochs!r}")
    aug = cfg.augment
    protocol = protocol_settings(cfg)
    if (float(aug.mixup) or float(aug.cutmix)) and int(cfg.batch_size) % 2:
        raise ConfigError(
            f"augment.mixup/cutmix pair each image with another: batch_size must be even, got {cfg.batch_size}"
        )
    if (float(aug.mixup) or float(aug.cutmix)) and not protocol.drop_last:
        raise ConfigError("augment.mixup/cutmix need protocol.drop_last=true (a short last batch can be odd)")
    return TrainSettings(
        lr=float(cfg.lr),
        weight_decay=float(cfg.weight_decay),
        optimizer=str(cfg.optimizer),
        epochs=int(cfg.epochs),
        warmup_epochs=float(cfg.warmup_epochs),
        protocol=protocol,
        label_smoothing=float(aug.label_smoothing),
        mixup=float(aug.mixup),
        cutmix=float(aug.cutmix),
        ema_decay=None if aug.ema is None else float(aug.ema),
        seed=int(cfg.seed),
        metrics=metrics,
    )


def reported_statistic(cfg: DictConfig) -> str:
    """In words, the number a run of ``cfg`` reports (what a rendered table's 'ours' holds)."""
    from ..lit.evaluation import describe

    protocol = protocol_settings(cfg)
    return describe(protocol, cfg.augment.ema is not None, protocol.total_epochs(int(cfg.epochs)))

"""Train and test one task from a composed config, and write its record.

A run lives in one directory (``paths.runs/<dataset>/<method>/<run key>``): Hydra's log, the
Lightning checkpoints, the logger files, the selection and adapter files, and ``record.json``.
Launching the same configuration again skips a finished run and resumes an unfinished one from
its last checkpoint (with its selection: the probe does not run again).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ..data import build_datasets
from ..methods import make_method
from ..models import build_model
from ..results.records import read_record, write_record
from ..tuner import current_selection
from .data import TaskDataModule
from .lock import RunLock
from .module import FineTuneModule
from .preflight import preflight
from .progress import rich_progress, training_progress_bar
from .resources import ResourceMonitor
from .settings import ConfigError, method_settings, train_settings

log = logging.getLogger("grft")


def make_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from lightning.pytorch import loggers

    made = []
    for name in cfg.logger.get("use", []) or []:
        if name == "csv":
            made.append(loggers.CSVLogger(run_dir, name="logs"))  # version_N: a resumed run adds one
        elif name == "tensorboard":
            made.append(loggers.TensorBoardLogger(run_dir, name="tensorboard"))
        elif name == "wandb":
            w = cfg.logger.wandb
            made.append(loggers.WandbLogger(project=w.project, save_dir=str(run_dir), offline=bool(w.offline),
                                            name=cfg.run_name, tags=list(w.get("tags") or [])))
        else:
            raise ConfigError(f"logger {name!r} is unknown; known: csv, tensorboard, wandb")
    return made


def cluster_plugins() -> list:
    """Under SLURM, submitit (hydra/launcher=slurm) requeues pre-empted jobs; Lightning must not too."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def grft_facts(cfg: DictConfig, used: tuple[str, ...]) -> dict:
    """GRFT's keys as the record shows them: ``None`` where the method does not use the key."""
    values = {
        "selection": cfg.selection.kind, "norm": cfg.norm.kind, "k": int(cfg.k), "lambda": float(cfg["lambda"]),
        "regular_layers": cfg.regular_layers, "subsets": int(cfg.subsets),
    }
    return {key: (value if key in used else None) for key, value in values.items()}


def _selection_facts(method, model, run_dir: Path) -> dict:
    if method.name != "grft":
        return {}
    path = current_selection(model).save(run_dir / "selection.safetensors")
    return {"selection_file": path.name}


def run_task(cfg: DictConfig, run_dir: Path, extra_callbacks: Optional[list] = None) -> dict:
    """Train, test and record one run; returns the record (empty on ranks other than 0)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # other DDP ranks join the run that rank 0 holds
        return _run_task(cfg, Path(run_dir), extra_callbacks)
    with RunLock(run_dir):
        return _run_task(cfg, Path(run_dir), extra_callbacks)


def _run_task(cfg: DictConfig, run_dir: Path, extra_callbacks: Optional[list]) -> dict:
    previous = read_record(run_dir)
    if previous and previous.get("done") and not cfg.force:
        log.info("already done: %s (test %s); pass force=true to run it again", run_dir, previous.get("metrics"))
        return previous

    preflight(cfg)  # settings and data first: a bad launch fails before any model is loaded
    if cfg.get("cpu_threads"):
        # Small models: one thread is faster than several on a busy CPU (threads wait on each other).
        torch.set_num_threads(int(cfg.cpu_threads))
    method = make_method(method_settings(cfg))
    strategy = str(cfg.trainer.get("strategy", "auto")).lower()
    if method.name in ("grft", "gps") and any(name in strategy for name in ("fsdp", "deepspeed")):
        raise ConfigError(
            f"trainer.strategy={strategy} shards weights, but {method.name} keeps whole-weight state (slices written "
            "in place, full-size masks) on every rank: use trainer=ddp"
        )
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tiny = bool(cfg.model.get("tiny", False))
    bundle = build_model(cfg.model, int(cfg.dataset.num_classes), pretrained=not tiny, tiny=tiny)
    splits = build_datasets(cfg.dataset, cfg.data_dir, bundle.inputs)
    if splits.num_classes != int(cfg.dataset.num_classes):
        raise ConfigError(
            f"dataset.num_classes={cfg.dataset.num_classes} but the data at {cfg.data_dir} has {splits.num_classes} classes"
        )
    settings = train_settings(cfg, splits.metrics)
    datamodule = TaskDataModule(splits, int(cfg.batch_size), cfg.get("eval_batch_size"), int(cfg.num_workers), int(cfg.seed))
    probe_cfg = cfg.probe
    module = FineTuneModule(
        bundle, method, splits.num_classes, settings,
        probe_loader=lambda: datamodule.probe_dataloader(probe_cfg.max_batches, probe_cfg.batch_size),
        progress=rich_progress(bool(cfg.progress)),
    )
    monitor = ResourceMonitor(trace_path=run_dir / "memory.csv", trace_every=int(cfg.trace_memory_every))
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="epoch{epoch}", save_top_k=1, save_last="link", auto_insert_metric_name=False
    )
    callbacks = [checkpoints, monitor, *(extra_callbacks or [])]
    if cfg.progress:
        callbacks.append(training_progress_bar())
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        plugins=cluster_plugins(),
        default_root_dir=str(run_dir),
        callbacks=callbacks,
        logger=make_loggers(cfg, run_dir) or False,
        enable_progress_bar=bool(cfg.progress),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    if resumed:
        log.info("resuming from %s", last)
    started = dt.datetime.now().isoformat(timespec="seconds")
    fit_start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumed else None)
    train_seconds = time.perf_counter() - fit_start
    test_metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]

    if not trainer.is_global_zero:
        return {}
    report = method.param_report(module.model)
    adapter = method.save_adapter(module.model, run_dir / "adapter.safetensors")
    metrics = {k.replace("/", "_"): float(v) for k, v in test_metrics.items()}
    metrics.update({k.replace("/", "_"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    device = module.device
    record = {
        "task": cfg.dataset.name,
        "family": cfg.dataset.family,
        "model": cfg.model.name,
        "method": method.name,
        **grft_facts(cfg, method.grft_keys),
        "seed": int(cfg.seed),
        "lr": float(cfg.lr),
        "batch_size": int(cfg.batch_size),
        "epochs": int(cfg.epochs),
        "tags": OmegaConf.to_container(cfg.tags, resolve=True),
        "metrics": metrics,
        "params": {"trainable": report.trainable, "total": report.total, "pct": report.percent},
        "timings": {"probe_s": module.probe_seconds, "train_s": round(train_seconds, 3), **monitor.summary(device)},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "memory_trace": "memory.csv" if (run_dir / "memory.csv").is_file() else None,
        "adapter_file": adapter.name if adapter else None,
        "resumed": resumed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "started_at": started,
        "finished_at": dt.datetime.now().isoformat(timespec="seconds"),
        "done": True,
        **_selection_facts(method, module.model, run_dir),
    }
    write_record(run_dir, record)
    log.info("test %s | trainable %.2f%% | record %s", metrics, report.percent, run_dir / "record.json")
    return record

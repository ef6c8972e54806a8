"""Train and test one task from a composed config, and write its record.

A run lives in one directory (``paths.runs/<dataset>/<method>/<run key>``): Hydra's log, the
Lightning checkpoints, the logger files, the selection and adapter files, and ``record.json``.
Launching the same configuration again skips a finished run and resumes an unfinished one from
its last checkpoint (with its selection: the probe does not run again); ``force=true`` trains it
again from the pre-trained weights (the old record goes to ``history/``). What happens to a run
directory across launches (start over, resume, time kept, SIGTERM) is ``lifecycle``'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from grft.io import write_json_atomic
from grft.tuner import current_selection

from ..data import build_datasets, class_count
from ..methods import make_method
from ..models import base_of_run
from ..record import Launch, Params, RunRecord, Timings, read_record, write_record
from .data import TaskDataModule
from .evaluation import best_of, evaluation_record, with_final
from .lifecycle import LaunchClock, Preempted, check_checkpoint, code_facts, now, start_over
from .lock import RunLock
from .module import FineTuneModule
from .preflight import preflight
from .progress import rich_progress, training_progress_bar
from .resources import ResourceMonitor
from .settings import ConfigError, check_numbers, method_settings, train_settings
from .sweep_summary import current_multirun

log = logging.getLogger("grft")
SPLIT_LISTING = "data_split.json"  # which file (or row) of your own data went to which split


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
            made.append(
                loggers.WandbLogger(
                    project=w.project,
                    save_dir=str(run_dir),
                    offline=bool(w.offline),
                    name=cfg.run_name,
                    tags=list(w.get("tags") or []),
                )
            )
        else:
            raise ConfigError(f"logger {name!r} is unknown; known: csv, tensorboard, wandb")
    return made


def cluster_plugins() -> list:
    """Under SLURM, submitit (hydra/launcher=slurm) requeues pre-empted jobs; Lightning must not too."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def grft_facts(cfg: DictConfig, used: tuple[str, ...]) -> dict:
    """GRFT's keys as the record shows them (``RunRecord`` fields): ``None`` where the method does not use the key."""
    values = {
        "selection": cfg.selection.kind,
        "norm": cfg.norm.kind,
        "k": int(cfg.k),
        "lambda": float(cfg["lambda"]),
        "regular_layers": cfg.regular_layers,
        "subsets": int(cfg.subsets),
    }
    return {("lambda_" if key == "lambda" else key): (value if key in used else None) for key, value in values.items()}


def _selection_file(method, model, run_dir: Path) -> str | None:
    if method.name != "grft":
        return None
    return current_selection(model).save(run_dir / "selection.safetensors").name


def _save_adapters(method, module, run_dir: Path) -> dict:
    """The live (raw) weights' adapter, and with EMA on the EMA weights' adapter too: each reproduces
    its model's recorded final test (``test_acc`` and ``test_ema_acc``)."""
    saved = {}
    path = method.save_adapter(module.model, run_dir / "adapter.safetensors")
    if path:
        saved["raw"] = path.name
    if module.ema is not None and path:
        module._use_ema(True)
        try:
            saved["ema"] = method.save_adapter(module.model, run_dir / "adapter_ema.safetensors").name
        finally:
            module._use_ema(False)
    return saved


def run_task(
    cfg: DictConfig,
    run_dir: Path,
    extra_callbacks: list | None = None,
    wait: bool = False,
    record_failure: bool = False,
) -> RunRecord | None:
    """Train, test and record one run; returns the record (None on ranks other than 0).

    ``wait``: if another process holds the run, wait for it (then find it done) instead of failing.
    ``record_failure``: an error writes a record with ``status: failed`` and the error before it is
    raised (a sweep's table then shows the failed cell).
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # other DDP ranks join the run that rank 0 holds
        return _run_task(cfg, Path(run_dir), extra_callbacks)
    with RunLock(run_dir, wait=wait):
        try:
            return _run_task(cfg, Path(run_dir), extra_callbacks)
        except Exception as err:
            if record_failure:
                write_failed_record(cfg, Path(run_dir), err)
            raise


def identity_facts(cfg: DictConfig) -> dict:
    """What a record says about its run whatever became of it (``RunRecord`` fields).

    Task, method, settings, config, code.
    """
    from ..methods import method_class

    name = str(cfg.method.name)
    return {
        "task": cfg.dataset.name,
        "family": cfg.dataset.family,
        "model": cfg.model.name,
        "method": name,
        **grft_facts(cfg, method_class(name).grft_keys),
        "seed": int(cfg.seed),
        "lr": float(cfg.lr),
        "batch_size": int(cfg.batch_size),
        "epochs": int(cfg.epochs),
        "tags": OmegaConf.to_container(cfg.tags, resolve=True),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "code": code_facts(),
        "multirun": current_multirun(),
    }


def write_failed_record(cfg: DictConfig, run_dir: Path, err: BaseException) -> None:
    """``status: failed`` with the error; the identity facts that can be read (a bad value may not be)."""
    try:
        facts = identity_facts(cfg)
    except Exception:  # noqa: BLE001 - the error may be in the very values the facts read
        seed = cfg.get("seed")
        facts = {
            "task": str(cfg.dataset.get("name")),
            "method": str(cfg.method.get("name")),
            "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,  # a bad one: in config only
            "config": OmegaConf.to_container(cfg, resolve=False),
            "multirun": current_multirun(),
        }
    from ..record import CorruptRecord, archive_record
    from .lifecycle import read_launches

    try:
        read_record(run_dir)
    except CorruptRecord:
        archive_record(run_dir)  # keep the damaged file (history/) rather than write over it
    write_record(
        run_dir,
        RunRecord(
            **facts,
            done=False,
            status="failed",
            error=f"{type(err).__name__}: {err}",
            failed_at=now(),
            launches=launches_of(read_launches(run_dir)),
        ),
    )


def launches_of(launches: list[dict]) -> list[Launch]:
    """``launches.json``'s entries as the record's ``Launch`` items."""
    return [Launch(**launch) for launch in launches]


def _run_task(cfg: DictConfig, run_dir: Path, extra_callbacks: list | None) -> RunRecord | None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if cfg.force:
        if rank_zero_only.rank == 0:
            kept = start_over(run_dir)
            if kept:
                log.info(
                    "force=true: training %s again from the pre-trained weights; the last attempt's files are in %s",
                    run_dir,
                    kept[0].parent,
                )
    else:
        previous = read_record(run_dir)
        if previous and previous.done:
            log.info("already done: %s (test %s); pass force=true to run it again", run_dir, previous.metrics)
            return previous
    check_numbers(cfg)

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
    num_classes = class_count(cfg.dataset, cfg.data_dir)  # your own data: read from its files
    bundle = base_of_run(cfg, num_classes)
    splits = build_datasets(cfg.dataset, cfg.data_dir, bundle.inputs)
    if splits.num_classes != num_classes:
        raise ConfigError(
            f"dataset.num_classes={cfg.dataset.num_classes} but the data at {cfg.data_dir} "
            f"has {splits.num_classes} classes"
        )
    if splits.split_listing is not None and rank_zero_only.rank == 0:
        # which item went to which split, where the run chose them (a held-out share of train)
        write_json_atomic(run_dir / SPLIT_LISTING, splits.split_listing)
    settings = train_settings(cfg, splits.metrics)
    probe_cfg = cfg.probe
    datamodule = TaskDataModule(
        splits,
        int(cfg.batch_size),
        cfg.get("eval_batch_size"),
        int(cfg.num_workers),
        int(cfg.seed),
        drop_last=settings.protocol.drop_last,
    )
    module = FineTuneModule(
        bundle,
        method,
        splits.num_classes,
        settings,
        probe_loader=lambda: datamodule.probe_dataloader(probe_cfg.max_batches, probe_cfg.batch_size),
        progress=rich_progress(bool(cfg.progress)),
        has_val=splits.val is not None,
    )
    datamodule.val_views = [v.split for v in module.val_views]
    datamodule.test_views = [v.split for v in module.test_views]
    monitor = ResourceMonitor(trace_path=run_dir / "memory.csv", trace_every=int(cfg.trace_memory_every))
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="epoch{epoch}",
        save_top_k=1,
        save_last="link",
        auto_insert_metric_name=False,
        save_on_train_epoch_end=True,  # every epoch, after that epoch's evaluation, whatever protocol.test_every is
    )
    clock = LaunchClock(run_dir)
    callbacks = [checkpoints, monitor, clock, *(extra_callbacks or [])]
    if cfg.progress:
        callbacks.append(training_progress_bar())
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if settings.protocol.test_every:
        trainer_args.setdefault("check_val_every_n_epoch", settings.protocol.test_every)
    trainer = L.Trainer(
        **trainer_args,
        plugins=cluster_plugins(),
        default_root_dir=str(run_dir),
        callbacks=callbacks,
        logger=make_loggers(cfg, run_dir) or False,
        enable_progress_bar=bool(cfg.progress),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    if resumed:
        check_checkpoint(last)
        log.info("resuming from %s", last)
    started = now()
    clock.start(resumed)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumed else None)
        clock.stop("trained")
        tested = trainer.test(module, datamodule=datamodule, verbose=False)
        test_metrics = {k: v for per_loader in tested for k, v in per_loader.items()}
    except SIGTERMException:
        clock.stop("preempted")
        if trainer.is_global_zero:
            write_record(
                run_dir,
                RunRecord(
                    **identity_facts(cfg),
                    done=False,
                    status="preempted",
                    resumed=resumed,
                    started_at=started,
                    preempted_at=now(),
                    launches=launches_of(clock.launches),
                    timings=Timings(train_s=clock.total_s),
                ),
            )
            log.warning("SIGTERM: stopped %s; launch it again to resume from its last end-of-epoch checkpoint", run_dir)
        raise Preempted() from None
    except BaseException:
        clock.stop("failed")
        raise

    if not trainer.is_global_zero:
        return None
    report = method.param_report(module.model)
    adapters = _save_adapters(method, module, run_dir)
    metrics = {k.replace("/", "_"): float(v) for k, v in test_metrics.items()}
    metrics.update({k.replace("/", "_"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")})
    final_epoch = max(0, int(trainer.current_epoch) - 1)
    curve = with_final(module.curve, metrics, final_epoch)
    metrics.update(best_of(curve))
    device = module.device
    record = RunRecord(
        **identity_facts(cfg),
        metrics=metrics,
        params=Params(trainable=report.trainable, total=report.total, pct=report.percent),
        probe_facts=module.probe_facts,
        # train_s: all launches of this run together (a killed and resumed run counts every launch)
        timings=Timings(
            probe_s=module.probe_seconds,
            train_s=clock.total_s,
            train_s_this_launch=clock.this_launch_s,
            eval_in_training_s=round(module.eval_seconds, 3),
            **monitor.summary(device),
        ),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        memory_trace="memory.csv" if (run_dir / "memory.csv").is_file() else None,
        adapter_file=adapters.get("raw"),
        adapter_files=adapters,
        evaluation=evaluation_record(settings.protocol, curve, final_epoch, module.ema is not None),
        resumed=resumed,
        launches=launches_of(clock.launches),
        started_at=started,
        finished_at=now(),
        done=True,
        status="done",
        selection_file=_selection_file(method, module.model, run_dir),
        class_names=list(splits.class_names) if splits.class_names is not None else None,
        split_file=SPLIT_LISTING if splits.split_listing is not None else None,
    )
    write_record(run_dir, record)
    log.info("test %s | trainable %.2f%% | record %s", metrics, report.percent, run_dir / "record.json")
    return record

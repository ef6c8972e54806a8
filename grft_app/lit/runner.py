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
from ..record import Budget, Launch, Params, RunRecord, Timings, read_record, write_record
from ..tune.stages import FINAL, TRIAL, stage_of, tuning_of, with_val_in_train
from .checkpoints import ChecksummedCheckpointIO
from .data import TaskDataModule
from .evaluation import best_of, evaluation_record, with_final
from .lifecycle import (
    Interrupted,
    LaunchClock,
    Preempted,
    Stopped,
    code_facts,
    now,
    resume_point,
    start_over,
    stop_signals,
)
from .lock import RunLock
from .module import Diverged, FineTuneModule
from .outputs import check_outputs, output_checksums
from .preflight import preflight
from .progress import rich_progress, training_progress_bar
from .resources import ResourceMonitor
from .run_log import run_log
from .settings import ConfigError, check_numbers, grft_config, is_auto_k, method_settings, train_settings
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


def grft_facts(cfg: DictConfig, used: tuple[str, ...], k: int | None = None) -> dict:
    """GRFT's keys as the record shows them (``RunRecord`` fields): ``None`` where the method does not use the key.

    ``k``: what ``k=auto`` resolved to (None before the model is built)."""
    values = {
        "selection": cfg.selection.kind,
        "norm": cfg.norm.kind,
        "k": k if k is not None else (None if is_auto_k(cfg) else int(cfg.k)),
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
    raised (a sweep's table then shows the failed cell). A diverged run (NaN loss) is recorded so
    in any case: its record says why and what to change.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # other DDP ranks join the run that rank 0 holds
        return _run_task(cfg, Path(run_dir), extra_callbacks)
    with RunLock(run_dir, wait=wait), run_log(Path(run_dir)):
        try:
            return _run_task(cfg, Path(run_dir), extra_callbacks)
        except Exception as err:
            if record_failure or isinstance(err, Diverged):
                write_failed_record(cfg, Path(run_dir), err)
            raise


def identity_facts(cfg: DictConfig, k: int | None = None) -> dict:
    """What a record says about its run whatever became of it (``RunRecord`` fields).

    Task, method, settings, config, code. ``k``: what ``k=auto`` resolved to.
    """
    from ..methods import method_class

    name = str(cfg.method.name)
    return {
        "task": cfg.dataset.name,
        "family": cfg.dataset.family,
        "model": cfg.model.name,
        "method": name,
        **grft_facts(cfg, method_class(name).grft_keys, k),
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


def size_budget(cfg: DictConfig, bundle) -> Budget | None:
    """``k=auto share=<percent>``: the largest k within the share, from the model's shapes (``grft.largest_k``)."""
    if not is_auto_k(cfg):
        return None
    if str(cfg.method.name) != "grft":
        raise ConfigError(
            f"k=auto share=... sizes GRFT's k; method {cfg.method.name} has no k: set its own size instead "
            "(e.g. method.r for lora) and drop k=auto share"
        )
    from grft import largest_k

    try:
        found = largest_k(bundle.model, grft_config(cfg, k=1), float(cfg.share), bundle.arch, what=str(cfg.model.name))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    log.info("k=auto: k=%d trains %.4f%% (share=%s%%)", found.k, found.percent, cfg.share)
    return Budget(share=found.share, k=found.k, pct=found.percent)


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
            check_outputs(previous, run_dir)  # a damaged or missing output is named, with force=true
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
    budget = size_budget(cfg, bundle)
    if budget is not None:
        method = make_method(method_settings(cfg, budget.k))
    stage = stage_of(cfg)
    splits = build_datasets(cfg.dataset, cfg.data_dir, bundle.inputs)
    if splits.num_classes != num_classes:
        raise ConfigError(
            f"dataset.num_classes={cfg.dataset.num_classes} but the data at {cfg.data_dir} "
            f"has {splits.num_classes} classes"
        )
    if splits.split_listing is not None and rank_zero_only.rank == 0:
        # which item went to which split, where the run chose them (a held-out share of train)
        write_json_atomic(run_dir / SPLIT_LISTING, splits.split_listing)
    if stage == FINAL:  # a study's final run: its own validation folder or file trains too
        splits = with_val_in_train(splits)
    settings = train_settings(cfg, splits.metrics)
    if stage == TRIAL and (splits.val is None or settings.protocol.test_every):
        raise ConfigError(
            "a study's trial is evaluated on a validation split only: it needs one (your data's val/ folder or "
            "dataset.val file, or hydra.sweeper.val_fraction=0.1) and protocol.test_every=0; launch studies with "
            "make tune"
        )
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
        plugins=[*cluster_plugins(), ChecksummedCheckpointIO()],
        default_root_dir=str(run_dir),
        callbacks=callbacks,
        logger=make_loggers(cfg, run_dir) or False,
        enable_progress_bar=bool(cfg.progress),
    )
    last = resume_point(run_dir)
    resumed = last is not None
    if resumed:
        log.info("resuming from %s", last)
    started = now()
    clock.start(resumed)
    try:
        with stop_signals(lambda: trainer):
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumed else None)
            clock.stop("trained")
            module.final_epoch = max(0, int(trainer.current_epoch) - 1)  # epochs are counted from 0
            # A study's trial never evaluates the test split (grft_app.tune): its settings are chosen on val.
            tested = trainer.test(module, datamodule=datamodule, verbose=False) if stage != TRIAL else []
        test_metrics = {k: v for per_loader in tested for k, v in per_loader.items() if k != "epoch"}
    except (SIGTERMException, Interrupted) as stop:
        preempted = isinstance(stop, SIGTERMException)
        status = "preempted" if preempted else "interrupted"
        clock.stop(status)
        if trainer.is_global_zero:
            write_record(
                run_dir,
                RunRecord(
                    **identity_facts(cfg, budget.k if budget else None),
                    done=False,
                    status=status,
                    resumed=resumed,
                    started_at=started,
                    preempted_at=now() if preempted else None,
                    interrupted_at=None if preempted else now(),
                    launches=launches_of(clock.launches),
                    timings=Timings(train_s=clock.total_s),
                ),
            )
            log.warning(
                "%s: stopped %s; launch it again to resume from its last end-of-epoch checkpoint",
                "SIGTERM" if preempted else "interrupted (Ctrl-C)",
                run_dir,
            )
        raise (Preempted() if preempted else Stopped()) from None
    except BaseException:
        clock.stop("failed")
        raise

    if not trainer.is_global_zero:
        return None
    report = method.param_report(module.model)
    adapters = _save_adapters(method, module, run_dir)
    metrics = {k.replace("/", "_"): float(v) for k, v in test_metrics.items()}
    metrics.update({k.replace("/", "_"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")})
    final_epoch = module.final_epoch
    curve = with_final(module.curve, metrics, final_epoch)
    metrics.update(best_of(curve))
    device = module.device
    selection_file = _selection_file(method, module.model, run_dir)
    reported_metric = f"val_{cfg.tune.get('metric') or 'acc'}" if stage == TRIAL else "test_acc"
    evaluation = evaluation_record(settings.protocol, curve, final_epoch, module.ema is not None, reported_metric)
    if stage is not None:  # the study's objective: a trial's reported key, which the final run names
        objective = evaluation.reported.key if stage == TRIAL else cfg.tune.get("objective")
        evaluation.selected_on, evaluation.tuning = tuning_of(cfg, objective)
    record = RunRecord(
        **identity_facts(cfg, budget.k if budget else None),
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
        evaluation=evaluation,
        budget=budget,
        resumed=resumed,
        launches=launches_of(clock.launches),
        started_at=started,
        finished_at=now(),
        done=True,
        status="done",
        selection_file=selection_file,
        checksums=output_checksums(run_dir, [*adapters.values(), selection_file]),
        class_names=list(splits.class_names) if splits.class_names is not None else None,
        split_file=SPLIT_LISTING if splits.split_listing is not None else None,
    )
    write_record(run_dir, record)
    log.info(
        "%s %s | trainable %.2f%% | record %s",
        "validation" if stage == TRIAL else "test",
        metrics,
        report.percent,
        run_dir / "record.json",
    )
    return record

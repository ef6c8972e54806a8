"""What ``python run.py`` does: run the configured task, then any side-by-side baselines."""

from __future__ import annotations

import copy
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from ..methods import method_label
from ..paths import CONF_DIR
from ..record import RunRecord
from .lock import RunLocked
from .runner import run_task
from .settings import ConfigError, run_dir_of  # run_dir_of: also imported from here by callers
from .sweep_summary import current_multirun

log = logging.getLogger("grft")


@contextmanager
def _hydra():
    """Hydra's composition as it stands: inside ``run.py`` (or a launcher's job) the app's own, with
    its config search path; elsewhere (tests, tools) one on ``conf/`` for the duration."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance()
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance()


def method_group(name: str) -> dict:
    """The ``method`` node Hydra composes for the group override ``method=<name>``."""
    from hydra import compose
    from hydra.errors import MissingConfigException

    with _hydra() as hydra:
        try:
            cfg = compose(config_name=None, overrides=[f"+method={name}"])
        except MissingConfigException:
            known = sorted(hydra.config_loader().get_group_options("method"))
            raise ConfigError(f"baselines: method {name!r} is unknown; known: {', '.join(known)}") from None
    return OmegaConf.to_container(cfg.method, resolve=False)


def with_method(cfg: DictConfig, name: str, overrides: dict | None = None) -> DictConfig:
    """The same task with another method: its group composed by Hydra, as ``method=<name>`` gives it.

    ``overrides``: top-level keys that differ for this method (e.g. its own learning rate).
    """
    group = method_group(name)
    other = copy.deepcopy(cfg)
    with open_dict(other):
        other.method = group
        other.baselines = None
        for key, value in (overrides or {}).items():
            if key not in other:
                raise ConfigError(f"baselines.{name}.{key}: no such top-level key")
            other[key] = value
    return other


def baseline_specs(baselines) -> list[tuple[str, dict]]:
    """``[linear, full]`` or ``{linear: {lr: 3e-2}, full: {lr: 3e-3}}`` as (name, overrides) pairs."""
    if isinstance(baselines, DictConfig):
        return [(name, OmegaConf.to_container(o or {}, resolve=True)) for name, o in baselines.items()]
    return [(str(name), {}) for name in baselines]


def announce(cfg: DictConfig) -> None:
    """Before a side-by-side launch: what is compared, on what, and where the records go."""
    others = [name for name, _ in baseline_specs(cfg.baselines or [])]
    label = method_label(str(cfg.method.name), cfg.selection.kind, cfg.k)
    print(
        f"{cfg.dataset.name}: {label} vs {', '.join(others)}, each trained on "
        f"the same data and seed ({cfg.seed}), then tested; "
        f"records under {Path(cfg.paths.runs) / str(cfg.dataset.name)}/",
        flush=True,
    )


def print_comparison(records: list[RunRecord], dirs: list[Path] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{records[0].task}: test accuracy and trainable share")
    for column in ("method", "test acc (%)", "trainable (%)", "trainable params", "train time (s)"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for r in records:
        label = method_label(r.method, r.selection, r.k)
        acc = r.reported("test_acc")  # the number the run's protocol reports
        train_s = r.timings.train_s if r.timings else None  # records written before train_s existed lack it
        table.add_row(
            label,
            _number(acc, ".1f", 100),
            _number(r.params.pct if r.params else None, ".2f"),
            _number(r.params.trainable if r.params else None, ","),
            _number(train_s, ".0f"),
        )
    console = Console()
    console.print(table)
    for r, folder in zip(records, dirs or [], strict=False):  # one line each: a path must stay whole to be copied
        console.print(
            f"  {r.method:<7} record: {Path(folder).resolve() / 'record.json'}", soft_wrap=True, highlight=False
        )


def _number(value: float | None, spec: str, scale: float = 1) -> str:
    return "—" if value is None else format(scale * value, spec)


class JobFailed(RuntimeError):
    """A job of a multirun failed; its record says ``failed`` and why, and the other jobs still run."""


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main(cfg: DictConfig, run_dir: Path) -> RunRecord | None:
    """One run and its baselines. Alone, an error ends the process (status 2, one line for a user error).

    In a multirun the failed job's record says ``failed``, the error is printed, and the job returns
    so the launcher runs the remaining jobs (``sys.exit`` here would stop the basic launcher's
    sweep); ``SweepSummary`` then ends the multirun with status 1. Without that callback the job
    raises ``JobFailed``, which Hydra's launchers also collect and turn into status 1 at the end.
    """
    multirun = in_multirun()
    dirs = [Path(run_dir)]
    try:
        if cfg.baselines:
            announce(cfg)
        record = run_task(cfg, run_dir, record_failure=multirun)
        records = [record]
        for name, overrides in baseline_specs(cfg.baselines or []):
            other = with_method(cfg, name, overrides)
            dirs.append(run_dir_of(other))
            # A baseline run is shared by every launch of its task: wait for a concurrent holder, then skip it.
            records.append(run_task(other, dirs[-1], wait=True, record_failure=multirun))
    except Exception as err:
        user_error = isinstance(err, (ConfigError, FileNotFoundError, ValueError, RunLocked))
        if os.environ.get("GRFT_TRACEBACK") or not (user_error or multirun):
            raise
        if not multirun:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        if not user_error:
            log.exception("run %s failed", run_dir)
        print(f"error: {err}", file=sys.stderr)
        if current_multirun() is None and not isinstance(err, RunLocked):
            raise JobFailed(f"{run_dir} (its record.json says failed, with this error): {err}") from None
        if isinstance(err, RunLocked):
            raise JobFailed(f"{run_dir}: {err}") from None  # no record of ours to say so: fail the job itself
        return None
    if len(records) > 1 and all(records):
        print_comparison(records, dirs)
    return record

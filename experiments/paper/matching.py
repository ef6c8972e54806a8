"""Which run records belong to a cell: those whose run identity is the cell's, seeds aside.

A record stores its full resolved config and the results version of the code that ran it. A cell's
expected config is composed from its overrides (``compose.Composer``). They match when their run
identities (``grft_app.identity.run_identity``, the rule the run key hashes) are equal, seed aside:
the same settings decide whether a sweep finds a run done and whether a table shows it. A record
of another results version (written by code whose numbers differ, or before records said which)
fills no cell; the renderer lists it among the unmatched records.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from grft_app.identity import RESULTS_KEY, RESULTS_VERSION, cell_identity, normal, run_identity
from grft_app.record import CorruptRecord, RunRecord, iter_records

# What a study's final run shares with a table cell: the rest (k, lambda, lr... and the split) is its own.
TUNED_MATCH = ("model.name", "selection.kind", "norm.kind")


def tuned_by_study(record: RunRecord) -> bool:
    """A study's trial or final run (``make tune``): never one of the paper-protocol cells' runs."""
    return record.evaluation is not None and record.evaluation.tuning is not None


def resolved(config: DictConfig | Mapping) -> Mapping:
    """A composed config as a plain resolved mapping (a record's config already is one)."""
    if isinstance(config, DictConfig):
        # run_name (and hydra.*) interpolate the run key, which needs the whole root: drop them first.
        config = copy.copy(config)
        with open_dict(config):
            for key in ("hydra", "run_name"):
                config.pop(key, None)
        config = OmegaConf.to_container(config, resolve=True)
    return config


def identity(config: DictConfig | Mapping) -> dict[str, Any]:
    """The cell a config fills: its run identity (under this code's results version) less the seed."""
    return cell_identity(run_identity(resolved(config)))


def record_identity(record: RunRecord) -> dict[str, Any]:
    """The cell a record fills, under the results version it was written with (``None``: before records said)."""
    return cell_identity(run_identity(record.config, record.code.results_version if record.code else None))


def matches(expected: Mapping[str, Any], record_identity: Mapping[str, Any]) -> bool:
    return dict(expected) == dict(record_identity)


@dataclass
class Aggregate:
    """A cell's result over its matched runs: one value per seed (the latest run of a seed)."""

    values: list[float] = field(default_factory=list)
    params_pct: list[float] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)
    statistics: list[str] = field(default_factory=list)  # per value: which number of its record it is

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan

    @property
    def params(self) -> float:
        return statistics.fmean(self.params_pct) if self.params_pct else math.nan


class RecordIndex:
    """Done records under a runs folder, indexed by (task, method) for fast cell lookups.

    Records of failed runs are kept apart (``failed``): a cell without a finished run but with a
    failed one shows as failed, not as a hole. Damaged record files are listed in ``corrupt``.
    """

    def __init__(self, records: Iterable[RunRecord], corrupt: Iterable[str] = ()):
        self.by_task_method: dict[tuple[str, str], list[tuple[RunRecord, dict]]] = {}
        self.failed: dict[tuple[str, str], list[tuple[RunRecord, dict]]] = {}
        for record in records:
            if record.state not in ("done", "failed"):
                continue
            index = self.by_task_method if record.state == "done" else self.failed
            index.setdefault((record.task, record.method), []).append((record, record_identity(record)))
        self.used: set[str] = set()
        self.corrupt = list(corrupt)

    @classmethod
    def load(cls, root: Path) -> RecordIndex:
        """Every record under ``root``; a damaged one is named in ``corrupt`` (with its fix), not dropped silently."""
        corrupt: list[str] = []

        def note(err: CorruptRecord) -> None:
            corrupt.append(str(err))

        records = list(iter_records(root, done_only=False, on_corrupt=note)) if Path(root).is_dir() else []
        return cls(records, corrupt)

    def failures(self, cfg: DictConfig) -> list[RunRecord]:
        """Failed runs' records matching ``cfg`` (any seed)."""
        candidates = self.failed.get((str(cfg.dataset.name), str(cfg.method.name)), [])
        if not candidates:
            return []
        expected = identity(cfg)
        return [record for record, ident in candidates if matches(expected, ident)]

    def candidates(self, task: str, method: str) -> list[tuple[RunRecord, dict]]:
        return self.by_task_method.get((task, method), [])

    def find(self, cfg: DictConfig, metric: str, scale: float) -> Aggregate:
        """Aggregate the records matching ``cfg``: each one's reported statistic of ``metric`` (the
        best epoch's under protocol=reference; see ``RunRecord.metric_key``); a record without
        that value does not count."""
        candidates = self.candidates(str(cfg.dataset.name), str(cfg.method.name))
        aggregate = Aggregate()
        if not candidates:
            return aggregate
        expected = identity(cfg)
        latest: dict[Any, RunRecord] = {}
        for record, ident in candidates:
            if record.reported(metric) is None or not matches(expected, ident) or tuned_by_study(record):
                continue
            seed = record.seed
            if seed not in latest or (record.finished_at or "") > (latest[seed].finished_at or ""):
                latest[seed] = record
        return self._aggregate(latest, metric, scale, aggregate)

    def tuned(self, cfg: DictConfig, metric: str, scale: float) -> Aggregate:
        """The final runs of studies (``make tune``) for this cell's task, method, model, selection and norm:
        settings chosen on validation data, tested once. Trials (never tested) have no value and do not count."""
        expected = {key: OmegaConf.select(cfg, key) for key in TUNED_MATCH}
        latest: dict[Any, RunRecord] = {}
        for record, ident in self.candidates(str(cfg.dataset.name), str(cfg.method.name)):
            if record.evaluation is None or record.evaluation.selected_on != "val" or record.reported(metric) is None:
                continue
            if ident.get(RESULTS_KEY) != RESULTS_VERSION:  # written by code whose numbers differ
                continue
            if not all(normal(value) == ident.get(key, normal(value)) for key, value in expected.items()):
                continue
            seed = record.seed
            if seed not in latest or (record.finished_at or "") > (latest[seed].finished_at or ""):
                latest[seed] = record
        aggregate = Aggregate()
        return self._aggregate(latest, metric, scale, aggregate)

    def _aggregate(self, latest: dict[Any, RunRecord], metric: str, scale: float, aggregate: Aggregate) -> Aggregate:
        """One value per seed (its latest record), each record marked as claimed by a cell."""
        for seed in sorted(latest, key=str):
            record = latest[seed]
            self.used.add(str(record.run_dir))
            aggregate.records.append(record)
            aggregate.values.append(scale * record.reported(metric))
            aggregate.statistics.append(record.statistic)
            if record.params is not None:
                aggregate.params_pct.append(float(record.params.pct))
        return aggregate

    def unmatched(self, tasks: Iterable[str], methods: Iterable[str]) -> list[RunRecord]:
        """Records of these tasks and methods that no cell has claimed (other settings, stale configs)."""
        tasks, methods = set(tasks), set(methods)
        return [
            record
            for (task, method), items in sorted(self.by_task_method.items())
            if task in tasks and method in methods
            for record, _ in items
            if str(record.run_dir) not in self.used
        ]

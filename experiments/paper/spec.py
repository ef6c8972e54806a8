"""The paper's tables and figures as cells: one run configuration per table cell or figure point.

``experiments/paper/spec.yaml`` defines them; this module reads it, checks it, and expands each target
into ``Cell``s (``experiment=<benchmark>/<task>`` plus the row's or panel's overrides). The run half
launches cells, the render half matches records to them, so both always agree on what a cell is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC_PATH = Path(__file__).with_name("spec.yaml")
PAPER_DIR = Path(__file__).with_name("published")  # the paper's numbers, as printed
KINDS = ("table", "memory", "sweep")


class SpecError(ValueError):
    """The sweep definition is malformed; the message names the target and key to fix."""


def hydra_value(value: Any) -> str:
    """A Python value as Hydra's command line spells it (``1e-08``, ``true``, ``all``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class Cell:
    """One run configuration of a target.

    row: the table row / figure series (a method label, or a task for Fig. 4);
    column: the task (tables, Fig. 3) or the swept value (Fig. 4);
    overrides: Hydra overrides, ``experiment`` first; axis: the key that varies along a row, so a
    row's cells launch as one multirun (``experiment=a,b,c``).
    """

    target: str
    row: str
    column: Any
    overrides: tuple[tuple[str, str], ...]
    axis: str = "experiment"
    panel: str | None = None
    launch: bool = True

    @property
    def args(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.overrides]

    @property
    def task(self) -> str:
        return dict(self.overrides)["experiment"].split("/", 1)[1]


@dataclass(frozen=True)
class Row:
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    per_task: str | None = None
    launch: bool = False
    paper_only: bool = False


@dataclass(frozen=True)
class Panel:
    name: str
    key: str
    values: tuple
    title: str
    xlabel: str
    log: bool = False


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    caption: str
    benchmark: str
    tasks: tuple[str, ...]
    rows: tuple[Row, ...] = ()
    panels: tuple[Panel, ...] = ()
    paper: str | None = None
    metric: str = "test_acc"
    scale: float = 100.0
    digits: int = 1
    mean: str | None = None
    params: str | None = None
    per_task: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    def experiment(self, task: str) -> str:
        return f"{self.benchmark}/{task}"

    def row_overrides(self, row: Row, task: str) -> dict[str, Any]:
        values = dict(row.overrides)
        if row.per_task:
            values.update(self.per_task[row.per_task].get(task, {}))
        return values

    def cell(self, row: Row, task: str) -> Cell:
        """The cell of a table row (or Fig. 3 series) on one task."""
        overrides = {"experiment": self.experiment(task), **self.row_overrides(row, task)}
        return Cell(self.name, row.label, task, _pairs(overrides), launch=row.launch)

    def cells(self) -> list[Cell]:
        """Every cell of the target, paper-only rows excluded (they have nothing to run)."""
        out = []
        if self.kind in ("table", "memory"):
            for row in self.rows:
                if row.paper_only:
                    continue
                out += [self.cell(row, task) for task in self.tasks]
        else:
            for panel in self.panels:
                for task in self.tasks:
                    for value in panel.values:
                        overrides = {"experiment": self.experiment(task), panel.key: value}
                        out.append(Cell(self.name, task, value, _pairs(overrides), axis=panel.key, panel=panel.name))
        return out


@dataclass(frozen=True)
class Spec:
    targets: Mapping[str, Target]
    labels: Mapping[str, str]
    benchmarks: Mapping[str, Mapping[str, Any]]
    path: Path = SPEC_PATH
    paper_dir: Path = PAPER_DIR

    def target(self, name: str) -> Target:
        if name not in self.targets:
            raise SpecError(f"unknown target {name!r}; known: {', '.join(self.targets)}")
        return self.targets[name]

    def label(self, task: str) -> str:
        return self.labels.get(task, task)

    def tasks(self, benchmark: str) -> tuple[str, ...]:
        return tuple(self.benchmarks[benchmark]["tasks"])


def _pairs(overrides: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((key, hydra_value(value)) for key, value in overrides.items())


def _panel_values(target: str, raw: Mapping[str, Any]) -> tuple:
    if "values" in raw:
        return tuple(raw["values"])
    if "range" in raw:
        low, high = raw["range"]
        return tuple(range(int(low), int(high) + 1))
    raise SpecError(f"{target}: panel {raw.get('name')!r} needs `values: [...]` or `range: [first, last]`")


def load_spec(path: Path | str = SPEC_PATH) -> Spec:
    """Read and check the sweep definition (a clear error names the target and key to fix)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep definition {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    benchmarks = raw.get("benchmarks") or {}
    per_task = raw.get("per_task") or {}
    targets = {}
    for name, body in (raw.get("targets") or {}).items():
        kind = body.get("kind")
        if kind not in KINDS:
            raise SpecError(f"{path.name}: target {name}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        bench = body.get("benchmark")
        if bench not in benchmarks:
            raise SpecError(f"{path.name}: target {name}: benchmark {bench!r} is not under `benchmarks:`")
        tasks = tuple([body["task"]] if kind == "memory" else body.get("tasks") or benchmarks[bench]["tasks"])
        rows = []
        for r in body.get("rows", body.get("series", [])) or []:
            if "label" not in r:
                raise SpecError(f"{path.name}: target {name}: every row needs a `label`")
            if r.get("per_task") and r["per_task"] not in per_task:
                raise SpecError(
                    f"{path.name}: target {name}, row {r['label']}: per_task {r['per_task']!r} is not under `per_task:`"
                )
            rows.append(
                Row(
                    label=str(r["label"]),
                    overrides=dict(r.get("overrides") or {}),
                    per_task=r.get("per_task"),
                    launch=bool(r.get("launch", False)),
                    paper_only=bool(r.get("paper_only", False)),
                )
            )
        panels = tuple(
            Panel(
                name=str(p["name"]),
                key=str(p["key"]),
                values=_panel_values(name, p),
                title=str(p.get("title", p["key"])),
                xlabel=str(p.get("xlabel", p["key"])),
                log=bool(p.get("log", False)),
            )
            for p in body.get("panels", []) or []
        )
        if kind == "table" and not body.get("paper"):
            raise SpecError(
                f"{path.name}: target {name}: a table needs `paper: <file in experiments/paper/published/>`"
            )
        targets[name] = Target(
            name=name,
            kind=kind,
            caption=str(body.get("caption", name)),
            benchmark=bench,
            tasks=tasks,
            rows=tuple(rows),
            panels=panels,
            paper=body.get("paper"),
            metric=str(body.get("metric", "test_acc")),
            scale=float(body.get("scale", 100)),
            digits=int(body.get("digits", 1)),
            mean=body.get("mean"),
            params=body.get("params"),
            per_task=per_task,
        )
    paper_dir = (path.parent / raw["paper_dir"]).resolve() if raw.get("paper_dir") else PAPER_DIR
    return Spec(
        targets=targets, labels=dict(raw.get("labels") or {}), benchmarks=benchmarks, path=path, paper_dir=paper_dir
    )

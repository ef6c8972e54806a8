"""Fig. 3 (GPU memory over training time) and Fig. 4 (ablation sweeps) from run records.

Each figure comes with the CSV of its plotted points. Missing runs leave gaps (NaN points break a
line) and are named on the figure; nothing here fails because a run is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from grft_app.record import RunRecord  # noqa: E402

from .compose import Composer, ConfigUnavailable  # noqa: E402
from .matching import Aggregate, RecordIndex  # noqa: E402
from .spec import Spec, Target, hydra_value  # noqa: E402


@dataclass
class FigureResult:
    name: str
    points: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def _find(composer: Composer, index: RecordIndex, args: list[str], metric: str, scale: float) -> tuple[Aggregate, str]:
    try:
        cfg = composer.config(args)
    except ConfigUnavailable as err:
        return Aggregate(), f"unavailable: {err}"
    agg = index.find(cfg, metric, scale)
    return agg, "ok" if agg.n else "missing"


def sweep_points(target: Target, composer: Composer, index: RecordIndex) -> pd.DataFrame:
    """One row per (panel, task, swept value): accuracy mean over seeds, or NaN for a hole."""
    rows = []
    for cell in target.cells():
        agg, status = _find(composer, index, cell.args, target.metric, target.scale)
        panel = next(p for p in target.panels if p.name == cell.panel)
        rows.append(
            {
                "panel": panel.name,
                "key": panel.key,
                "task": cell.row,
                "value": hydra_value(cell.column),
                "acc": agg.mean,
                "acc_std": agg.std,
                "n": agg.n,
                "status": status,
            }
        )
    return pd.DataFrame.from_records(rows)


def render_sweep(target: Target, spec: Spec, composer: Composer, index: RecordIndex, out_dir: Path) -> FigureResult:
    """Fig. 4: one panel per swept setting (2 per row), accuracy vs the swept value, one line per task."""
    points = sweep_points(target, composer, index)
    rows = max(1, math.ceil(len(target.panels) / 2))
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), squeeze=False)
    for ax in list(axes.flat)[len(target.panels) :]:
        ax.set_visible(False)
    notes = []
    for ax, panel in zip(axes.flat, target.panels, strict=False):  # the grid may have one axis more (hidden)
        mine = points[points["panel"] == panel.name]
        for task in target.tasks:
            series = mine[mine["task"] == task]
            xs = [float(v) for v in series["value"]]
            ax.plot(xs, series["acc"], marker="o", markersize=3, label=spec.label(task))
        if panel.log:
            ax.set_xscale("log")
        have = int((mine["n"] > 0).sum())
        ax.set_title(f"{panel.title}  [{have}/{len(mine)} runs]", fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if have == 0:
            ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center", va="center", color="grey")
        notes.append(f"Panel {panel.name} ({panel.key}): {have} of {len(mine)} points have finished runs.")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(target.caption)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, csv = out_dir / f"{target.name}_ablation.png", out_dir / f"{target.name}_ablation.csv"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    points.round({"acc": 4, "acc_std": 4}).to_csv(csv, index=False)
    return FigureResult(target.name, points, notes, [png, csv])


def memory_trace(record: RunRecord) -> pd.DataFrame | None:
    """The run's ``memory.csv`` (t_s, step, memory_mb), or None when the run kept none."""
    name = record.memory_trace
    path = Path(record.run_dir) / name if name else None
    if path is None or not path.is_file():
        return None
    trace = pd.read_csv(path)
    missing = {"t_s", "memory_mb"} - set(trace.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} missing; a memory trace has t_s, step, memory_mb")
    return trace


def render_memory(target: Target, spec: Spec, composer: Composer, index: RecordIndex, out_dir: Path) -> FigureResult:
    """Fig. 3: memory over training time per method, from the first seed's run of each series."""
    task = target.tasks[0]
    frames, notes = [], []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in target.rows:
        agg, status = _find(composer, index, target.cell(row, task).args, "test_acc", 1.0)
        trace = memory_trace(agg.records[0]) if agg.records else None
        if trace is None:
            reason = "no finished run" if status != "ok" else "the run kept no memory trace"
            notes.append(f"{row.label}: {reason} ({status}).")
            ax.plot([], [], label=f"{row.label} (missing)")
            continue
        record = agg.records[0]
        peak = record.timings.peak_mem_mb if record.timings else None
        label = f"{row.label} (peak {peak:,.0f} MB)" if peak is not None and not math.isnan(peak) else row.label
        ax.plot(trace["t_s"], trace["memory_mb"], label=label)
        frames.append(trace.assign(series=row.label, device=record.device, run_dir=str(record.run_dir)))
        notes.append(f"{row.label}: {len(trace)} samples from {record.run_dir} ({record.device}).")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("memory (MB)")
    ax.set_title(target.caption, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    if not frames:
        ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, csv = out_dir / f"{target.name}_memory.png", out_dir / f"{target.name}_memory.csv"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    columns = ["series", "t_s", "step", "memory_mb", "device", "run_dir"]
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    points.reindex(columns=columns).to_csv(csv, index=False)
    return FigureResult(target.name, points, notes, [png, csv])

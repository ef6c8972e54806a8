"""The run half: launch a target's cells as Hydra multiruns, skipping runs whose record is done.

Each cell (and seed) has a known run directory (the run key of its composed config), so finished
runs are left out before anything is launched, and a dry run can say exactly how many jobs each
target would start. A row's pending cells go out as one multirun along the row's axis
(``experiment=fgvc/cub,fgvc/nabirds`` or ``k=1,2,...``); the launcher is Hydra's
(``basic`` locally, ``submitit_slurm`` on a cluster).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import open_dict

from grft_app.paths import ROOT
from grft_app.record import is_done

from .compose import Composer, ConfigUnavailable, run_dir
from .spec import Cell, Target

ROW_CHOICES = ("default", "all")


@dataclass(frozen=True)
class Job:
    cell: Cell
    seed: int
    run_dir: Path


@dataclass
class Plan:
    """What launching a target would do: its jobs, those already done, and the launches for the rest."""

    target: str
    cells: int = 0
    jobs: list[Job] = field(default_factory=list)
    done: list[Job] = field(default_factory=list)
    unavailable: list[tuple[str, str]] = field(default_factory=list)  # (cell, Hydra's reason)
    shared: list[Job] = field(default_factory=list)
    skipped_rows: int = 0
    launches: list[list[str]] = field(default_factory=list)
    statistics: dict[str, int] = field(default_factory=dict)  # what the cells report (their protocol) -> cells

    @property
    def pending(self) -> list[Job]:
        """Jobs to launch: not done, not launched by an earlier target, each run directory once."""
        skip = {j.run_dir for j in self.done} | {j.run_dir for j in self.shared}
        seen, out = set(), []
        for job in self.jobs:
            if job.run_dir not in skip and job.run_dir not in seen:
                seen.add(job.run_dir)
                out.append(job)
        return out


def plan_all(
    targets: Sequence[Target], composer: Composer, rows: str = "default", seeds: Sequence[int] = (0,)
) -> list[Plan]:
    """Plans for several targets; a run two targets share is launched by the first one only."""
    claimed: set[Path] = set()
    plans = []
    for target in targets:
        p = plan(target, composer, rows, seeds, claimed)
        claimed |= {j.run_dir for j in p.pending}
        plans.append(p)
    return plans


def plan(
    target: Target,
    composer: Composer,
    rows: str = "default",
    seeds: Sequence[int] = (0,),
    claimed: set[Path] | None = None,
) -> Plan:
    """Expand a target into jobs (cell x seed), find the finished ones, group the rest into multiruns."""
    if rows not in ROW_CHOICES:
        raise ValueError(f"rows must be one of {', '.join(ROW_CHOICES)}, got {rows!r}")
    result = Plan(target.name)
    for cell in target.cells():
        if rows == "default" and not cell.launch:
            result.skipped_rows += 1
            continue
        result.cells += 1
        try:
            cfg = composer.config(cell.args)
        except ConfigUnavailable as err:
            where = f"{cell.row} / {cell.column}" + (f" (panel {cell.panel})" if cell.panel else "")
            result.unavailable.append((where, str(err)))
            continue
        statistic = _statistic(cfg)
        result.statistics[statistic] = result.statistics.get(statistic, 0) + 1
        for seed in seeds:
            seeded = copy.deepcopy(cfg)
            with open_dict(seeded):
                seeded.seed = int(seed)
            job = Job(cell, int(seed), run_dir(seeded))
            result.jobs.append(job)
            if is_done(job.run_dir):
                result.done.append(job)
            elif claimed and job.run_dir in claimed:
                result.shared.append(job)
    result.launches = group_launches(result.pending)
    return result


def _statistic(cfg) -> str:
    from grft_app.run.settings import ConfigError, reported_statistic

    try:
        return reported_statistic(cfg)
    except (ConfigError, KeyError, AttributeError) as err:
        return f"unknown ({err})"


def group_launches(jobs: Iterable[Job]) -> list[list[str]]:
    """Jobs sharing every override but the row's axis (and the seed) become one comma-list multirun."""
    groups: dict[tuple, list[str]] = {}
    for job in jobs:
        fixed = tuple((k, v) for k, v in job.cell.overrides if k != job.cell.axis)
        key = (fixed, job.cell.axis, job.seed)
        value = dict(job.cell.overrides)[job.cell.axis]
        groups.setdefault(key, [])
        if value not in groups[key]:
            groups[key].append(value)
    launches = []
    for (fixed, axis, seed), values in groups.items():
        items = dict(fixed)
        ordered = [(axis, ",".join(values))] if axis == "experiment" else []
        ordered += list(items.items())
        if axis != "experiment":
            ordered.append((axis, ",".join(values)))
        launches.append([f"{k}={v}" for k, v in ordered] + [f"seed={seed}"])
    return launches


def command(launch: list[str], target: str, launcher: str, extra: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        *launch,
        f"hydra/launcher={launcher}",
        f"+tags.target={target}",
        *extra,
    ]


def describe(p: Plan, rows: str) -> str:
    parts = [
        f"{p.target}: {len(p.jobs)} jobs ({p.cells} cells x seeds), {len(p.done)} done, {len(p.pending)} to launch "
        f"in {len(p.launches)} multiruns"
    ]
    if p.shared:
        parts.append(f"{len(p.shared)} launched by an earlier target")
    repeats = len(p.jobs) - len({j.run_dir for j in p.jobs})
    if repeats:
        parts.append(f"{repeats} cells repeat another cell's configuration")
    if p.skipped_rows and rows == "default":
        parts.append(f"{p.skipped_rows} more cells in rows launched only with ROWS=all")
    if p.unavailable:
        parts.append(f"{len(p.unavailable)} cells cannot be composed yet")
    return "; ".join(parts)


def launch(
    plans: Sequence[Plan], launcher: str, extra: Sequence[str], dry_run: bool, rows: str, parallel: int = 1, out=None
) -> int:
    """Print each target's plan; unless ``dry_run``, run the multiruns (``parallel`` at a time).

    Returns an exit code.
    """
    out = out or sys.stdout
    commands = []
    for p in plans:
        print(describe(p, rows), file=out)
        for statistic, count in p.statistics.items():
            print(f"  compared with the paper: {statistic} ({count} cells; docs/PROTOCOL.md)", file=out)
        for reason in sorted({r for _, r in p.unavailable}):
            cells = [c for c, r in p.unavailable if r == reason]
            print(f"  cannot compose {len(cells)} cells ({cells[0]}, ...): {reason}", file=out)
        for item in p.launches:
            cmd = command(item, p.target, launcher, extra)
            commands.append(cmd)
            print("  " + " ".join(["python", os.path.relpath(cmd[1]), *cmd[2:]]), file=out, flush=True)
    if len(plans) > 1:
        print(f"total: {sum(len(p.pending) for p in plans)} jobs to launch in {len(commands)} multiruns", file=out)
    if dry_run or not commands:
        return 0
    with ThreadPoolExecutor(max_workers=max(1, int(parallel))) as pool:
        codes = list(pool.map(lambda cmd: subprocess.run(cmd, cwd=os.getcwd()).returncode, commands))
    failed = [c for c, code in zip(commands, codes, strict=True) if code != 0]
    for cmd in failed:
        print(f"failed: {' '.join(cmd[2:])}", file=out)
    print(
        f"{len(commands) - len(failed)} of {len(commands)} multiruns finished; run again to retry the rest "
        "(finished runs are skipped)",
        file=out,
    )
    return 1 if failed else 0

"""``python -m experiments.paper``: launch, list and render the paper's tables and figures.

    python -m experiments.paper run table1 [--dry-run] [--launcher slurm] [--rows all] [--seeds 0,1,2] [OVERRIDE=...]
    python -m experiments.paper render table1 fig4 [OVERRIDE=...]
    python -m experiments.paper hparams
    python -m experiments.paper list

Arguments with ``=`` are Hydra overrides passed to every run (``debug=smoke``, ``paths.runs=/scratch/runs``);
give the same ones to ``render`` so it looks for the runs that were launched. Rendering with a
``debug=...`` override writes under ``results/smoke/`` (not over the committed tables), each table
headed as smoke runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .spec import SPEC_PATH, SpecError, load_spec

OUT = Path("results")
SMOKE_OUT = OUT / "smoke"
SMOKE_BANNER = (
    "> **Smoke runs** ({overrides}): tiny models and a few batches, to check the pipeline. "
    "These numbers are not results."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.paper", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--spec", type=Path, default=SPEC_PATH, help="sweep definition (default: experiments/paper/spec.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="launch the targets' pending runs (Hydra multirun)")
    run.add_argument("items", nargs="*", metavar="TARGET|OVERRIDE")
    run.add_argument("--dry-run", action="store_true", help="print job counts and commands; launch nothing")
    run.add_argument(
        "--launcher",
        default="basic",
        help="Hydra launcher: basic (here, one after another), local (submitit here), slurm, or submitit_slurm",
    )
    run.add_argument(
        "--rows",
        default="default",
        choices=("default", "all"),
        help="default: the paper's own runs (GRFT, GPS*); all: every implemented method row",
    )
    run.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    run.add_argument("--parallel", type=int, default=1, help="multiruns at a time (useful with a cluster launcher)")
    render = sub.add_parser("render", help="write tables and figures from the finished runs")
    render.add_argument("items", nargs="*", metavar="TARGET|OVERRIDE")
    render.add_argument(
        "--out",
        type=Path,
        default=None,
        help="writes <out>/tables and <out>/figures (default: results; results/smoke with debug=...)",
    )
    render.add_argument("--runs", type=Path, default=None, help="records folder (default: paths.runs of the config)")
    render.add_argument(
        "--tuned",
        action="store_true",
        help="also a 'tuned (val)' line per method: settings chosen on validation data by make tune, tested once",
    )
    hp = sub.add_parser("hparams", help="hparams.csv, Tables 6-8 and the row/column choice from the experiment configs")
    hp.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    hp.add_argument("--out", type=Path, default=OUT / "tables")
    sub.add_parser("list", help="the targets and their cells")
    return parser


def _split(spec, items: list[str]) -> tuple[list, list[str]]:
    overrides = [i for i in items if "=" in i]
    names = [i for i in items if "=" not in i]
    if "paper" in names:
        names = [n for n in names if n != "paper"] + [n for n in spec.targets if n not in names]
    return [spec.target(n) for n in names], overrides


def _runs_root(composer, runs: Path | None) -> Path:
    if runs is not None:
        return runs
    try:
        return Path(composer.config([]).paths.runs)
    except Exception:  # noqa: BLE001 - the default config itself does not compose: fall back to the default folder
        return Path("results/runs")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    unknown = [r for r in rest if r.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    for name in ("items", "overrides"):
        if hasattr(args, name):
            setattr(args, name, [*getattr(args, name), *rest])
    try:
        spec = load_spec(args.spec)
        if args.command == "list":
            for target in spec.targets.values():
                cells = target.cells()
                print(f"{target.name:8s} {target.kind:6s} {len(cells):4d} cells  {target.caption}")
            return 0
        from .compose import Composer

        if args.command == "hparams":
            from .hparams import write_hparams

            paths, problems = write_hparams(spec, Composer(args.overrides), args.out)
            for path in paths:
                print(f"wrote {path}")
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 0
        targets, overrides = _split(spec, args.items)
        if not targets:
            raise SpecError(f"name at least one target ({', '.join(spec.targets)}) or paper")
        composer = Composer(overrides)
        if args.command == "run":
            from .sweeps import launch, plan_all

            seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
            plans = plan_all(targets, composer, args.rows, seeds)
            return launch(plans, args.launcher, overrides, args.dry_run, args.rows, args.parallel)
        debug = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "debug" and o.split("=", 1)[1] != "null"]
        out = args.out or (SMOKE_OUT if debug else OUT)
        banner = SMOKE_BANNER.format(overrides=" ".join(debug)) if debug else None
        return render(spec, targets, composer, out, _runs_root(composer, args.runs), banner, args.tuned)
    except (SpecError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def render(spec, targets, composer, out: Path, runs: Path, banner: str | None = None, tuned: bool = False) -> int:
    from .figures import render_memory, render_sweep
    from .matching import RecordIndex
    from .tables import render_table, shared_configs

    index = RecordIndex.load(runs)
    shared = shared_configs(spec, composer) if any(t.kind == "table" for t in targets) else None
    print(f"records: {sum(len(v) for v in index.by_task_method.values())} finished runs under {runs}")
    for problem in index.corrupt:
        print(f"warning: left out: {problem}", file=sys.stderr)
    for target in targets:
        if target.kind == "table":
            result = render_table(target, spec, composer, index, out / "tables", banner, shared, tuned)
        elif target.kind == "memory":
            result = render_memory(target, spec, composer, index, out / "figures")
        else:
            result = render_sweep(target, spec, composer, index, out / "figures")
        print(f"{target.name}: wrote {', '.join(str(p) for p in result.paths)}")
        for note in result.notes:
            if note.startswith("Ours:") or not note.startswith(("Ours", "Paper")):
                print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m experiments.models_coverage``: the sweep, its table, and (``--readme``) the README section.

python -m experiments.models_coverage                       # every timm family and transformers class
python -m experiments.models_coverage --library timm --only resnet,levit
python -m experiments.models_coverage --readme              # also rewrite README "Which models"
python -m experiments.models_coverage --render LOG... --readme # the section from saved logs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from grft_app.paths import ROOT

from . import hf_zoo, timm_zoo
from .report import missing_line, readme_section, summary, table, write_readme
from .sweep import hf_models, read_log, sweep, timm_models

DEFAULT_LOG = ROOT / "results" / "models" / "coverage.jsonl"
SMALLEST = ROOT / "results" / "models" / "timm_smallest.json"


def versions() -> str:
    import timm
    import torch
    import transformers

    return f"timm {timm.__version__}, transformers {transformers.__version__}, torch {torch.__version__.split('+')[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", choices=("timm", "transformers", "all"), default="all")
    parser.add_argument("--only", help="comma-separated timm modules or transformers classes")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per model")
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG, help="JSON lines, one verdict per model")
    parser.add_argument("--render", type=Path, nargs="+", help="table from these logs, no run (last wins)")
    parser.add_argument("--readme", action="store_true", help="rewrite README's 'Which models' section")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    timed = "Wall time of the sweep"
    if args.render:
        latest = {(r.library, r.family): r for log in args.render for r in read_log(log)}  # a later log wins
        rows = list(latest.values())
        seconds = sum(r.seconds for r in rows)
        timed = "Time of the models in the log(s), one after another"
    else:
        only = args.only.split(",") if args.only else None
        models = []
        if args.library in ("transformers", "all"):
            models += hf_models(only if args.library == "transformers" else None)
        if args.library in ("timm", "all"):
            models += timm_models(only if args.library == "timm" else None, SMALLEST)
        args.log.parent.mkdir(parents=True, exist_ok=True)
        args.log.write_text("")
        rows = sweep(models, args.timeout, args.log)
        seconds = time.perf_counter() - start
    print()
    print(table(rows))
    print()
    print(summary(rows, seconds, timed))
    expected = {"timm": len(timm_zoo.families()), "transformers": len(hf_zoo.class_names())}
    missing = missing_line(rows, expected)
    print(missing)
    if args.readme:
        write_readme(ROOT / "README.md", readme_section(rows, seconds, versions(), timed, missing))
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a step's time goes, per method: torch.profiler operator totals side by side.

Builds each method's model in one process (as ``interleave`` does), profiles ``--rounds`` steps
of each in turn, and writes a Markdown table of self CPU time per operator (ms per step, calls
per step), the operators that differ most between the methods first. It explains the ratios in
``latest.md``: what GRFT spends beyond the floor, and on what.

    python -m experiments.bench.profile --model vit --methods floor,lora,grft_row,grft_column \\
        --out results/bench/profile_vit.md
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from . import device as devices
from .interleave import make_parser, prepare_arms
from .interleave import parse as parse_interleave
from .worker import autocast_for, log, timed_step


def parse(argv=None) -> argparse.Namespace:
    p = make_parser("python -m experiments.bench.profile", __doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    return parse_interleave(argv, p)


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    """Per method: {operator: self CPU ms per step} and {operator: calls per step}."""
    device = devices.resolve(args.device)
    torch.set_num_threads(args.threads)
    sync = devices.synchronizer(device)
    autocast = autocast_for(device, args.precision)
    arms = prepare_arms(args, device, sync, autocast, max(1, args.warmup))
    ms = {m: collections.Counter() for m in arms}
    calls = {m: collections.Counter() for m in arms}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for r in range(args.rounds):
        for method in args.methods if r % 2 == 0 else args.methods[::-1]:
            with profile(activities=activities) as prof:
                timed_step(*arms[method], autocast, sync)
            for event in prof.key_averages():
                ms[method][event.key] += event.self_cpu_time_total / 1e3 / args.rounds
                calls[method][event.key] += event.count / args.rounds
        log(f"{args.model}/profile: round {r + 1}/{args.rounds}")
    return ms, calls


def table(ms: dict, calls: dict, rows: int = 30) -> str:
    methods = list(ms)
    ops = set().union(*(set(c) for c in ms.values()))
    spread = {op: max(ms[m][op] for m in methods) - min(ms[m][op] for m in methods) for op in ops}
    big = sorted(ops, key=lambda op: -max(ms[m][op] for m in methods))[:8]
    chosen = big + [op for op in sorted(ops, key=lambda op: -spread[op]) if op not in big][: rows - len(big)]
    head = "| operator | " + " | ".join(f"{m} ms (calls)" for m in methods) + " |"
    lines = [head, "|:--|" + "--:|" * len(methods)]
    for op in chosen:
        cells = " | ".join(f"{ms[m][op]:.1f} ({calls[m][op]:.0f})" for m in methods)
        lines.append(f"| `{op[:70]}` | {cells} |")
    totals = " | ".join(f"**{sum(ms[m].values()):.0f}**" for m in methods)
    lines.append(f"| **all operators** | {totals} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    try:
        args = parse(argv)
        ms, calls = run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = "\n".join(
        [
            f"# Profile: {args.model}, {', '.join(args.methods)}",
            "",
            f"torch.profiler self CPU time per training step (mean of {args.rounds} profiled steps per method, "
            f"taken in turn in one process; {args.threads} threads, batch {args.batch}, {args.precision}). "
            "Profiling adds its own overhead, so the totals exceed the step times of latest.md; the differences "
            "between columns are what this table is for. The 8 largest operators come first, then those that differ "
            "most between methods.",
            "",
            f"    python -m experiments.bench.profile {' '.join(sys.argv[1:] if argv is None else argv)}",
            "",
            table(ms, calls),
            "",
        ]
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

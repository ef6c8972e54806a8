"""Step times of several methods measured side by side: one process, steps taken in turn.

The per-process workers run minutes apart, and on a shared machine the load changes between
them by more than the few percent that separate GRFT, LoRA and the floor. Here every method's
model lives in the same process (same weights, same batch) and the methods take steps in turn,
the order reversed every other round, so a change of load hits all of them alike. Memory is not
measured here (the models share one process); it comes from the per-process workers.

    python -m experiments.bench.interleave --model vit --methods lora,grft_row,grft_column,floor --rounds 4

Prints one JSON line: ``{"model", "rounds", "device", "methods": {method: {"step_times",
"cpu_times"}}}``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import device as devices
from .arms import check_method, prepare
from .names import DEFAULT_ARMS, arm_list
from .worker import (
    add_workload_arguments,
    autocast_for,
    build_workload,
    check_workload_arguments,
    log,
    print_record,
    probe_settings,
    timed_step,
)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_workload_arguments(p)
    p.add_argument("--methods", required=True, help=f"comma-separated arms, e.g. {','.join(DEFAULT_ARMS)}")
    p.add_argument("--rounds", type=int, default=4, help="measured steps per method, taken in turn")
    return p


def parse(argv=None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    p = parser or make_parser("python -m experiments.bench.interleave", __doc__.split("\n")[0])
    args = p.parse_args(argv)
    args.methods = arm_list(args.methods)
    for method in args.methods:
        check_method(method)
    check_workload_arguments(args, ("rounds",))
    return args


def prepare_arms(args: argparse.Namespace, device: torch.device, sync, autocast, warmup: int) -> dict:
    """Method -> (trainable, Adam, inputs, labels), each on its own model, warmed up ``warmup`` steps."""
    arms = {}
    for method in args.methods:
        work, _, inputs, labels = build_workload(args, device)
        trainable = prepare(method, work, args.k, sync, probe_settings(args))
        arms[method] = (trainable, torch.optim.Adam(trainable.params, lr=args.lr, weight_decay=0.0), inputs, labels)
        log(f"{args.model}/interleaved: {method} ready")
    for arm in arms.values():
        for _ in range(warmup):
            timed_step(*arm, autocast, sync)
    return arms


def run(args: argparse.Namespace) -> dict:
    device = devices.resolve(args.device)
    torch.set_num_threads(args.threads)
    sync = devices.synchronizer(device)
    autocast = autocast_for(device, args.precision)
    arms = prepare_arms(args, device, sync, autocast, args.warmup)
    times = {m: {"step_times": [], "cpu_times": []} for m in arms}
    for r in range(args.rounds):
        order = args.methods if r % 2 == 0 else args.methods[::-1]
        for method in order:
            seconds, cpu_seconds, _ = timed_step(*arms[method], autocast, sync)
            times[method]["step_times"].append(seconds)
            times[method]["cpu_times"].append(cpu_seconds)
        log(
            f"{args.model}/interleaved: round {r + 1}/{args.rounds} "
            + " ".join(f"{m} {times[m]['step_times'][-1]:.2f}s" for m in args.methods)
        )
    return {"model": args.model, "rounds": args.rounds, "device": devices.describe(device), "methods": times}


def main(argv=None) -> int:
    return print_record(lambda: run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""The probe's time per batch next to one full fine-tuning step, measured side by side.

A run's probe walks the training set once at the training batch size (``grft_app.lit``'s probe
loader, two augmented views per image), so its time per batch against one training step is the
probe's cost in training epochs, and against one full fine-tuning step it is the cost in the unit
every method shares. The per-process workers time the probe and the steps minutes apart; here one
process holds a full fine-tuning model and a GRFT model (same weights, same batches) and they take
turns: one full step, one probe batch (the app's GRFT method's ``probe`` on that batch alone, as
a run calls it: forward and backward of the SCL loss on both views, the ranking, the selection
applied), the order reversed every other round.

    python -m experiments.bench.probe_time --model vit --rounds 3

Prints one JSON line: ``{"model", "rounds", "device", "selection", "probe_batch_times",
"full_step_times"}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import torch

from grft_app.methods.probe_plan import plan_passes

from . import device as devices
from .arms import build_app_method, prepare
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


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.probe_time", description=__doc__.split("\n")[0])
    add_workload_arguments(p)
    p.add_argument("--rounds", type=int, default=3, help="measured probe batches and full steps, taken in turn")
    p.add_argument("--selection", default="row", choices=("row", "column"))
    args = p.parse_args(argv)
    check_workload_arguments(args, ("rounds",))
    return args


def timed_probe_batch(method, model, batch, sync) -> float:
    sync()
    start = time.perf_counter()
    method.probe(model, [batch])
    sync()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    device = devices.resolve(args.device)
    torch.set_num_threads(args.threads)
    sync = devices.synchronizer(device)
    autocast = autocast_for(device, args.precision)
    full_work, _, inputs, labels = build_workload(args, device)
    full = prepare("full", full_work, args.k, sync)
    full_arm = (full, torch.optim.Adam(full.params, lr=args.lr, weight_decay=0.0), inputs, labels)
    probe_work, _, _, _ = build_workload(args, device)
    batch = probe_work.probe_batches[0]
    method, model = build_app_method(f"grft_{args.selection}", probe_work, args.k, probe_settings(args))
    # The passes a run would make on these batches, planned once (a run plans once, not per batch).
    plan = plan_passes(model, probe_work.probe_batches, method.settings.grft, method.arch, method.settings.probe)
    method.settings = replace(method.settings, probe=replace(method.settings.probe, passes=plan.passes))
    for _ in range(args.warmup):
        timed_step(*full_arm, autocast, sync)
        timed_probe_batch(method, model, batch, sync)
    probe_times, step_times = [], []
    for r in range(args.rounds):
        first_probe = r % 2 == 1
        if first_probe:
            probe_times.append(timed_probe_batch(method, model, batch, sync))
        step_times.append(timed_step(*full_arm, autocast, sync)[0])
        if not first_probe:
            probe_times.append(timed_probe_batch(method, model, batch, sync))
        log(
            f"{args.model}/probe vs full: round {r + 1}/{args.rounds} probe batch {probe_times[-1]:.2f}s, "
            f"full step {step_times[-1]:.2f}s"
        )
    return {
        "model": args.model,
        "rounds": args.rounds,
        "device": devices.describe(device),
        "selection": args.selection,
        "passes": plan.passes,
        "probe_batch_times": probe_times,
        "full_step_times": step_times,
    }


def main(argv=None) -> int:
    return print_record(lambda: run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())

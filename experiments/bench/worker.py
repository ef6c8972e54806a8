"""Measure one (model, method) pair in this process and print one JSON line.

Run by the driver (``python -m experiments.bench``) once per pair, so each method's peak memory
is its own. The process builds the model, lets the method set itself up (its probe, if any, is
timed as ``probe_s``), builds Adam (weight decay 0), starts a new memory peak, and runs
``warmup + steps`` training steps on one fixed batch. The peak is measured per phase (model build,
the method's setup with its probe, training) and over the whole run, as a user launches it. A step is
forward + loss + backward + Adam step; gradients are released right after each step, for every method alike.

    python -m experiments.bench.worker --model vit --method grft_row --steps 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import device as devices
from .arms import Trainable, check_method, prepare, probes, reads_k
from .memory import MB, Memory, Sampler, compact_allocator, trim_allocator
from .models import LLAMA_LAYERS, MODELS, build, call
from .names import DEFAULT_ARMS, add_llama_arguments, add_probe_arguments
from .row import WorkerRow


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by this worker and the interleaved one: which model, device, sizes, steps."""
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="fp32, or bf16 (autocast; weights and Adam stay fp32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    p.add_argument("--k", type=int, default=2, help="GRFT rows/columns (GPS: entries per row) per matrix")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--probe-batches", type=int, default=2)
    add_llama_arguments(p)
    add_probe_arguments(p)
    p.add_argument("--tiny", action="store_true", help="toy-sized models (tests)")
    p.add_argument("--lr", type=float, default=1e-4)


def probe_settings(args: argparse.Namespace):
    """The app's ``ProbeSettings`` from ``--probe-memory`` / ``--probe-passes`` (a bad value: ValueError)."""
    from grft_app.methods.probe_plan import ProbeSettings

    return ProbeSettings(memory=args.probe_memory, passes=args.probe_passes)


def check_workload_arguments(args: argparse.Namespace, counts: tuple[str, ...]) -> None:
    devices.check_precision(args.precision)
    probe_settings(args)
    for name in ("batch", "threads", "probe_batches", "seq_len", "k") + counts:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        raise ValueError("--warmup must be >= 0")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.worker", description=__doc__.split("\n")[0])
    add_workload_arguments(p)
    p.add_argument("--method", required=True, help=f"an arm: {', '.join(DEFAULT_ARMS)}, ... (names)")
    p.add_argument("--steps", type=int, default=4, help="measured steps (the median is reported)")
    p.add_argument("--trace", type=Path, default=None, help="also sample memory over time into this CSV")
    p.add_argument("--scratch", type=Path, default=None, help="folder for adapter files (default: a temp dir)")
    args = p.parse_args(argv)
    check_method(args.method)
    check_workload_arguments(args, ("steps",))
    return args


def build_workload(args: argparse.Namespace, device: torch.device):
    """The model (on ``device``) and its batch, the same weights and data for every method."""
    work = build(args.model, args.batch, args.tiny, args.probe_batches, LLAMA_LAYERS[args.llama_shape], args.seq_len)
    total_params = sum(p.numel() for p in work.model.parameters())
    work.model.to(device)
    return work, total_params, to_device(work.inputs, device), to_device(work.labels, device)


def autocast_for(device: torch.device, precision: str):
    bf16 = precision == "bf16"
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def timed_step(trainable, optimizer, inputs, labels, autocast, sync) -> tuple[float, float, float]:
    """One training step: (wall seconds, process CPU seconds, loss)."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    loss = train_step(trainable, optimizer, inputs, labels, autocast)
    sync()
    return time.perf_counter() - t0, time.process_time() - c0, float(loss)


def to_device(obj, device: torch.device):
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of Adam's moment buffers (``exp_avg``, ``exp_avg_sq``); its 0-dim step counters are left out."""
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t) and t.dim() > 0
    )


def train_step(trainable: Trainable, optimizer, inputs, labels, autocast) -> torch.Tensor:
    """Forward + loss (+ the method's extra loss) + backward (+ its gradient edit) + optimizer step."""
    with autocast():
        logits = call(trainable.model, inputs)
        loss = F.cross_entropy(logits.float(), labels)
        extra = trainable.extra_loss() if trainable.extra_loss is not None else None
        if extra is not None:
            loss = loss + extra
    loss.backward()
    if trainable.before_step is not None:
        trainable.before_step()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def measure_live_peak(memory: Memory, trainable, optimizer, inputs, labels, autocast, peak: float):
    """The peak of one more (untimed) step once the allocator returns freed memory at once.

    On GPU ``max_memory_allocated`` already counts live tensors only, so it is the peak itself.
    None where the C library cannot be told (not glibc).
    """
    if memory.cuda:
        return peak
    gc.collect()
    if not compact_allocator() or not memory.reset():
        return None
    train_step(trainable, optimizer, inputs, labels, autocast)
    return memory.peak_mb()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> WorkerRow:
    device = devices.resolve(args.device)
    torch.set_num_threads(args.threads)
    memory = Memory(device)
    sampler = Sampler(memory).start() if args.trace else None
    mark = sampler.mark if sampler else (lambda phase: None)
    sync = devices.synchronizer(device)
    tag = f"{args.model}/{args.method}"

    mark("build")
    work, total_params, inputs, labels = build_workload(args, device)
    log(f"{tag}: {work.describe}, {total_params / 1e6:.1f}M parameters")
    build_peak = memory.peak_mb()
    # Only the high-water mark restarts here (nothing is freed): the next peak is the setup's.
    memory.reset()

    mark("probe" if probes(args.method) else "setup")  # Fig. 3 shades the probe
    trainable = prepare(args.method, work, args.k, sync, probe_settings(args))
    optimizer = torch.optim.Adam(trainable.params, lr=args.lr, weight_decay=0.0)
    trainable_params = trainable.moving if trainable.moving is not None else sum(p.numel() for p in trainable.params)
    gc.collect()
    prepare_peak = memory.peak_mb()
    trim_allocator()
    peak_reset = memory.reset()

    autocast = autocast_for(device, args.precision)
    mark("train")
    wall, cpu, losses = [], [], []
    for i in range(args.warmup + args.steps):
        seconds, cpu_seconds, loss = timed_step(trainable, optimizer, inputs, labels, autocast, sync)
        losses.append(loss)
        if i >= args.warmup:
            wall.append(seconds)
            cpu.append(cpu_seconds)
        log(
            f"{tag}: step {i + 1}/{args.warmup + args.steps} {seconds:.2f}s" + (" (warm-up)" if i < args.warmup else "")
        )
    peak = memory.peak_mb()
    # Where a reset failed the later peak already includes the earlier phases: the maximum holds either way.
    whole_run_peak = max(build_peak, prepare_peak, peak)
    if sampler:
        sampler.stop()
        sampler.write(args.trace, args.method)
    live_peak = measure_live_peak(memory, trainable, optimizer, inputs, labels, autocast, peak)

    state_bytes = optimizer_state_bytes(optimizer)
    facts = trainable.probe_facts or {}
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        adapter_bytes = trainable.save(Path(scratch)).stat().st_size
    quartiles = statistics.quantiles(wall, n=4, method="inclusive") if len(wall) > 1 else [wall[0]] * 3
    record = {
        "model": args.model,
        "method": args.method,
        "step_time_s": statistics.median(wall),
        "peak_mem_mb": peak,
        "trainable_params": trainable_params,
        "optimizer_state_mb": state_bytes / MB,
        "adapter_mb": adapter_bytes / MB,
        "probe_s": trainable.probe_s,
        "probe_batches": args.probe_batches if trainable.probe_s else 0,
        # The memory plan (two forwards on one batch, once per run) is left out of the per-batch time.
        "probe_batch_s": (trainable.probe_s - facts.get("plan_s", 0.0)) / args.probe_batches
        if trainable.probe_s
        else None,
        "probe_plan_s": facts.get("plan_s"),
        "probe_passes": facts.get("passes"),
        "probe_store_mb": facts.get("store_mb"),
        "probe_budget_mb": facts.get("budget_mb"),
        "probe_deferred_over_mb": facts.get("deferred_over_mb"),
        "build_peak_mb": build_peak,
        "prepare_peak_mb": prepare_peak,
        "whole_run_peak_mb": whole_run_peak,
        "device": devices.describe(device),
        "step_time_p25": quartiles[0],
        "step_time_p75": quartiles[2],
        "step_cpu_s": statistics.median(cpu),
        "live_peak_mb": live_peak,
        "setup_peak_mb": max(build_peak, prepare_peak),
        "peak_after_setup_reset": peak_reset,
        "mem_source": memory.source,
        "total_params": total_params,
        "optimizer_state_bytes": state_bytes,
        "adapter_bytes": adapter_bytes,
        "k": args.k if reads_k(args.method) else None,
        "batch": args.batch,
        "workload": work.describe,
        "precision": args.precision,
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "load_avg_1m": os.getloadavg()[0],
        "torch": torch.__version__,
        "step_times": wall,
    }
    return WorkerRow.read(record)  # strict: a value the row does not declare is an error here, in the worker


def print_record(measure) -> int:
    """Print ``measure()``'s record (a ``WorkerRow``, or a dict) as one JSON line (what the driver reads);
    a bad option: exit 2."""
    try:
        record = measure()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(record.to_line() if isinstance(record, WorkerRow) else json.dumps(record), flush=True)
    return 0


def main(argv=None) -> int:
    return print_record(lambda: run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())

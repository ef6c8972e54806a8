"""The benchmark's options and how it launches a worker process: what the driver and the Fig. 3 trace share.

Both ``driver`` (every model and method) and ``memory_trace`` (Fig. 3) read the same options and
start the same workers; they import this module, never each other. Like the driver, it imports
neither torch nor the models: a worker's ``ru_maxrss`` starts from its parent's resident set.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from grft_app.paths import ROOT

from . import names
from .names import DEFAULT_ARMS, MODELS, add_llama_arguments, add_probe_arguments

# Steps per device: (warm-up, measured, interleaved rounds per model). A CPU ViT-B/16 step takes
# seconds; the CPU Llama's (2 layers) a quarter of that, so it gets three times the rounds.
STEPS = {"cpu": (1, 3, {"vit": 12, "llama": 36}), "cuda": (5, 20, {"vit": 20, "llama": 20})}
# Probe batches timed side by side with full fine-tuning steps, per device.
PROBE_ROUNDS = {"cpu": 3, "cuda": 10}
# The close comparisons of the targets, timed side by side in one process.
INTERLEAVED = ("lora", "grft_row", "grft_column", "floor")


class WorkerError(RuntimeError):
    pass


def csv_list(allowed: tuple[str, ...], what: str):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [t for t in items if t not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown or text!r}; choose from {', '.join(allowed)}")
        return items

    return parse


def arm_list(text: str) -> list[str]:
    try:
        return names.arm_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description="GRFT vs full, GPS, LoRA, linear, floor: time, memory, optimizer state, adapter size, probe time.",
    )
    p.add_argument("--models", type=csv_list(MODELS, "model"), default=list(MODELS), help="comma-separated: vit,llama")
    p.add_argument(
        "--methods",
        type=arm_list,
        default=list(DEFAULT_ARMS),
        help=f"comma-separated arms (default {','.join(DEFAULT_ARMS)}): any method=<name> of conf/method, "
        "<method>_<selection> (grft_row), floor",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"), help="default: fp32 on cpu, bf16 on cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="measured steps per process (cpu 3, cuda 20)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured steps first (cpu 1, cuda 5)")
    p.add_argument("--k", type=int, default=2, help="GRFT rows/columns per matrix (GPS: entries per row)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads in every worker")
    add_llama_arguments(p)
    add_probe_arguments(p)
    p.add_argument("--probe-batches", type=int, default=2)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the whole method list this many times, order reversed every other time; statistics pool the repeats",
    )
    p.add_argument(
        "--interleave",
        default=",".join(INTERLEAVED),
        help="methods also timed side by side in one process, steps in turn ('none': skip)",
    )
    p.add_argument(
        "--rounds", type=int, default=None, help="interleaved steps per method (cpu: vit 12, llama 36; cuda 20)"
    )
    p.add_argument(
        "--probe-rounds",
        type=int,
        default=None,
        help="probe batches timed side by side with full fine-tuning steps (cpu 3, cuda 10; 0: skip); "
        "needs full and grft_row among --methods",
    )
    p.add_argument(
        "--fig3",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also record memory over the whole run for grft_row, gps and lora (paper Fig. 3)",
    )
    p.add_argument("--fig3-steps", type=int, default=None, help="training steps in the Fig. 3 trace (cpu 8, cuda 200)")
    p.add_argument("--tiny", action="store_true", help="toy-sized models (tests, smoke runs)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--note", default=None, help="a line for the report's header (what this run is)")
    args = p.parse_args(argv)
    if args.device.split(":")[0] not in STEPS:
        p.error(f"--device must be cpu or cuda, got {args.device!r}")
    kind = args.device.split(":")[0]
    warmup, steps, rounds = STEPS[kind]
    args.warmup = warmup if args.warmup is None else args.warmup
    args.steps = steps if args.steps is None else args.steps
    args.rounds = dict(rounds) if args.rounds is None else dict.fromkeys(rounds, args.rounds)
    args.interleave = [] if args.interleave == "none" else arm_list(args.interleave)
    args.interleave = [m for m in args.interleave if m in args.methods]
    args.precision = args.precision or ("bf16" if kind == "cuda" else "fp32")
    args.fig3_steps = args.fig3_steps or (8 if kind == "cpu" else 200)
    args.probe_rounds = PROBE_ROUNDS[kind] if args.probe_rounds is None else args.probe_rounds
    if args.probe_rounds < 0:
        p.error("--probe-rounds must be >= 0")
    for name in ("batch", "steps", "k", "threads", "seq_len", "probe_batches", "repeats", "fig3_steps", "rounds"):
        value = getattr(args, name)
        if (min(value.values()) if isinstance(value, dict) else value) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def common_options(args: argparse.Namespace) -> list[str]:
    cmd = [
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--k",
        str(args.k),
        "--threads",
        str(args.threads),
        "--llama-shape",
        args.llama_shape,
        "--seq-len",
        str(args.seq_len),
        "--probe-batches",
        str(args.probe_batches),
        "--probe-memory",
        str(args.probe_memory),
    ] + (["--probe-passes", str(args.probe_passes)] if args.probe_passes is not None else [])
    return cmd + (["--tiny"] if args.tiny else [])


def worker_command(args: argparse.Namespace, model: str, method: str, extra: tuple[str, ...] = ()) -> list[str]:
    return (
        [
            sys.executable,
            "-m",
            "experiments.bench.worker",
            "--model",
            model,
            "--method",
            method,
            "--steps",
            str(args.steps),
        ]
        + common_options(args)
        + list(extra)
    )


def interleave_command(args: argparse.Namespace, model: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments.bench.interleave",
        "--model",
        model,
        "--methods",
        ",".join(args.interleave),
        "--rounds",
        str(args.rounds[model]),
    ] + common_options(args)


def probe_time_command(args: argparse.Namespace, model: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments.bench.probe_time",
        "--model",
        model,
        "--rounds",
        str(args.probe_rounds),
    ] + common_options(args)


def worker_env() -> dict:
    """The child imports this checkout's code, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_worker(cmd: list[str]) -> dict:
    """Run one worker (its progress goes straight to our stderr) and parse its JSON line."""
    proc = subprocess.run(cmd, cwd=ROOT, env=worker_env(), stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise WorkerError(f"worker failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return json.loads(lines[-1])

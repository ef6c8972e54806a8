"""Run every (model, method) in its own worker process and write the results.

    python -m experiments.bench                       # CPU defaults (make bench)
    python -m experiments.bench --device cuda --precision bf16 --batch 64 --llama-shape 1b

Writes ``latest.csv`` (one row per model and method), ``latest_runs.jsonl`` (every worker's
record), ``latest.md`` (tables, ratios, targets) and ``latest.png`` under ``--out``, and with
``--fig3`` the memory-over-time figure (``memory_trace``). This process imports neither torch nor
the models: a worker's ``ru_maxrss`` starts from its parent's resident set, so the parent stays
small.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from grft_app.paths import ROOT

from .names import LLAMA_LAYERS, METHODS, MODELS

# Steps per device: (warm-up, measured, interleaved rounds per model). A CPU ViT-B/16 step takes
# seconds; the CPU Llama's (2 layers) a quarter of that, so it gets three times the rounds.
STEPS = {"cpu": (1, 3, {"vit": 12, "llama": 36}), "cuda": (5, 20, {"vit": 20, "llama": 20})}
# Probe batches timed side by side with full fine-tuning steps, per device.
PROBE_ROUNDS = {"cpu": 3, "cuda": 10}
PROBE_JOB = "probe vs full"
# The close comparisons of the targets, timed side by side in one process.
INTERLEAVED = ("lora", "grft_row", "grft_column", "floor")
CSV_COLUMNS = ("model", "method", "step_time_s", "peak_mem_mb", "trainable_params", "optimizer_state_mb", "adapter_mb",
               "probe_s", "device", "step_time_p25", "step_time_p75", "step_cpu_s", "step_time_interleaved_s",
               "step_time_interleaved_p25", "step_time_interleaved_p75", "live_peak_mb", "whole_run_peak_mb",
               "build_peak_mb", "prepare_peak_mb", "setup_peak_mb", "probe_batches", "probe_batch_s",
               "probe_batch_x_full_step", "probe_batch_x_full_step_p25", "probe_batch_x_full_step_p75",
               "total_params", "optimizer_state_bytes", "adapter_bytes", "k", "batch", "workload", "precision",
               "threads", "steps", "warmup", "repeats", "loss_first", "loss_last", "load_avg_1m", "mem_source",
               "peak_after_setup_reset", "torch")


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


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description="GRFT vs full, GPS, LoRA, linear, floor: "
                                "time, memory, optimizer state, adapter size, probe time.")
    p.add_argument("--models", type=csv_list(MODELS, "model"), default=list(MODELS), help="comma-separated: vit,llama")
    p.add_argument("--methods", type=csv_list(METHODS, "method"), default=list(METHODS),
                   help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"), help="default: fp32 on cpu, bf16 on cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="measured steps per process (cpu 3, cuda 20)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured steps first (cpu 1, cuda 5)")
    p.add_argument("--k", type=int, default=2, help="GRFT rows/columns per matrix (GPS: entries per row)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads in every worker")
    p.add_argument("--llama-shape", default="cpu", choices=sorted(LLAMA_LAYERS),
                   help="layers of the Llama-3.2-1B-wide model: cpu=%d, 1b=%d" % (LLAMA_LAYERS["cpu"], LLAMA_LAYERS["1b"]))
    p.add_argument("--seq-len", type=int, default=32, help="tokens per Llama sequence")
    p.add_argument("--probe-batches", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="run the whole method list this many times, order "
                   "reversed every other time; statistics pool the repeats")
    p.add_argument("--interleave", default=",".join(INTERLEAVED),
                   help="methods also timed side by side in one process, steps in turn ('none': skip)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved steps per method (cpu: vit 12, llama 36; cuda 20)")
    p.add_argument("--probe-rounds", type=int, default=None,
                   help="probe batches timed side by side with full fine-tuning steps (cpu 3, cuda 10; 0: skip); "
                        "needs full and grft_row among --methods")
    p.add_argument("--fig3", action=argparse.BooleanOptionalAction, default=True,
                   help="also record memory over the whole run for grft_row, gps and lora (paper Fig. 3)")
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
    args.interleave = [] if args.interleave == "none" else csv_list(METHODS, "method")(args.interleave)
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
    cmd = ["--device", args.device, "--precision", args.precision, "--batch", str(args.batch), "--warmup",
           str(args.warmup), "--k", str(args.k), "--threads", str(args.threads), "--llama-shape", args.llama_shape,
           "--seq-len", str(args.seq_len), "--probe-batches", str(args.probe_batches)]
    return cmd + (["--tiny"] if args.tiny else [])


def worker_command(args: argparse.Namespace, model: str, method: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ([sys.executable, "-m", "experiments.bench.worker", "--model", model, "--method", method,
             "--steps", str(args.steps)] + common_options(args) + list(extra))


def interleave_command(args: argparse.Namespace, model: str) -> list[str]:
    return ([sys.executable, "-m", "experiments.bench.interleave", "--model", model, "--methods",
             ",".join(args.interleave), "--rounds", str(args.rounds[model])] + common_options(args))


def probe_time_command(args: argparse.Namespace, model: str) -> list[str]:
    return ([sys.executable, "-m", "experiments.bench.probe_time", "--model", model, "--rounds",
             str(args.probe_rounds)] + common_options(args))


def times_probe(args: argparse.Namespace) -> bool:
    return args.probe_rounds > 0 and {"full", "grft_row"} <= set(args.methods)


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


def schedule(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Per model: every method in its own process (the order reversed on every other repeat),
    then the side-by-side timing of ``--interleave`` (method ``None``), then the probe batches
    timed beside full fine-tuning steps (``PROBE_JOB``)."""
    jobs = []
    for model in args.models:
        for r in range(args.repeats):
            methods = args.methods if r % 2 == 0 else args.methods[::-1]
            jobs += [(model, m) for m in methods]
        if len(args.interleave) > 1:
            jobs.append((model, None))
        if times_probe(args):
            jobs.append((model, PROBE_JOB))
    return jobs


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(p25, median, p75), the quartiles within the data's range."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def probe_ratios(record: dict) -> list[float]:
    """Per-round ratios of a probe batch's time to the full fine-tuning step taken beside it."""
    return [p / s for p, s in zip(record["probe_batch_times"], record["full_step_times"])]


def aggregate(records: list[dict], interleaved: list[dict] = (), probe_times: list[dict] = ()):
    """One row per (model, method): pooled step times over repeats, median of the rest, the
    side-by-side step times where the method was interleaved, and for ``grft_row`` its probe
    batch over a full fine-tuning step, timed side by side."""
    import pandas as pd

    rows = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["model"], rec["method"]), []).append(rec)
    side_by_side = {(rec["model"], m): t["step_times"] for rec in interleaved for m, t in rec["methods"].items()}
    for runs in groups.values():
        row = dict(runs[0])
        p25, median, p75 = quartiles([t for r in runs for t in r["step_times"]])
        row.update(step_time_s=median, step_time_p25=p25, step_time_p75=p75, repeats=len(runs))
        times = side_by_side.get((row["model"], row["method"]))
        if times:
            p25, median, p75 = quartiles(times)
            row.update(step_time_interleaved_s=median, step_time_interleaved_p25=p25, step_time_interleaved_p75=p75)
        probe = [rec for rec in probe_times if rec["model"] == row["model"]]
        if probe and row["method"] == "grft_" + probe[0]["selection"]:
            p25, _, p75 = quartiles(probe_ratios(probe[0]))
            ratio = statistics.median(probe[0]["probe_batch_times"]) / statistics.median(probe[0]["full_step_times"])
            row.update(probe_batch_x_full_step=ratio, probe_batch_x_full_step_p25=p25, probe_batch_x_full_step_p75=p75)
        for key in ("peak_mem_mb", "live_peak_mb", "whole_run_peak_mb", "build_peak_mb", "prepare_peak_mb",
                    "setup_peak_mb", "step_cpu_s", "probe_s", "probe_batch_s", "load_avg_1m"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "k" in frame.columns:
        frame["k"] = frame["k"].astype("Int64")
    return frame[[c for c in CSV_COLUMNS if c in frame.columns]]


def code_version() -> str:
    """The checkout's commit (and whether it had changes), for the report's header."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return commit + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = schedule(args)
    records, interleaved, probe_times = [], [], []
    for i, (model, method) in enumerate(jobs, 1):
        what = method or f"interleaved {','.join(args.interleave)}"
        print(f"[{i}/{len(jobs)}] {model} {what} ({time.perf_counter() - started:.0f}s elapsed)", file=sys.stderr, flush=True)
        try:
            if method is None:
                interleaved.append(run_worker(interleave_command(args, model)))
            elif method == PROBE_JOB:
                probe_times.append(run_worker(probe_time_command(args, model)))
            else:
                records.append(run_worker(worker_command(args, model, method)))
        except WorkerError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    bench_s = time.perf_counter() - started
    with open(args.out / "latest_runs.jsonl", "w") as f:
        for rec in records + interleaved + probe_times:
            f.write(json.dumps(rec) + "\n")
    results = aggregate(records, interleaved, probe_times)
    results.to_csv(args.out / "latest.csv", index=False)

    fig3_note = "not run (--no-fig3)"
    if args.fig3:
        from .memory_trace import trace

        t0 = time.perf_counter()
        trace(args, args.out)
        fig3_note = f"fig3_memory.csv/.png, {time.perf_counter() - t0:.0f} s"
    total_s = time.perf_counter() - started
    meta = {"note": args.note} if args.note else {}
    meta |= {
        "command": "python -m experiments.bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "code": code_version(),
        "device": records[0]["device"],
        "threads": args.threads,
        "precision": args.precision,
        "steps": f"{args.warmup} warm-up + {args.steps} measured per process, {args.repeats} repeat(s); "
                 f"interleaved: {args.warmup} warm-up + "
                 f"{', '.join(f'{n} ({m})' for m, n in args.rounds.items() if m in args.models)} rounds of "
                 f"{','.join(args.interleave) or 'none'}; probe vs full: "
                 + (f"{args.warmup} warm-up + {args.probe_rounds} rounds" if times_probe(args) else "not run"),
        "python / torch": f"{platform.python_version()} / {records[0]['torch']}",
        "benchmark wall time": f"{bench_s:.0f} s (all workers)",
        "Fig. 3 trace": fig3_note,
        "total wall time": f"{total_s:.0f} s",
    }
    (args.out / "latest_meta.json").write_text(json.dumps(meta, indent=1))
    from .report import write

    write(results, args.out, meta, interleaved)
    print((args.out / "latest.md").read_text())
    print(f"wrote {args.out}/latest.csv, latest.md, latest.png in {total_s:.0f} s", file=sys.stderr)
    return 0

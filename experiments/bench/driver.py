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
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone

from grft_app.paths import ROOT

from .launch import WorkerError, interleave_command, parse, probe_time_command, run_worker, worker_command
from .row import WorkerRow

PROBE_JOB = "probe vs full"
PAPER_EPOCHS = 110  # the paper's schedule: 100 epochs after 10 warm-up epochs (§4.1)
CSV_COLUMNS = (
    "model",
    "method",
    "step_time_s",
    "peak_mem_mb",
    "trainable_params",
    "optimizer_state_mb",
    "adapter_mb",
    "probe_s",
    "device",
    "step_time_p25",
    "step_time_p75",
    "step_cpu_s",
    "step_time_interleaved_s",
    "step_time_interleaved_p25",
    "step_time_interleaved_p75",
    "live_peak_mb",
    "whole_run_peak_mb",
    "build_peak_mb",
    "prepare_peak_mb",
    "setup_peak_mb",
    "probe_batches",
    "probe_batch_s",
    "probe_batch_x_full_step",
    "probe_batch_x_full_step_p25",
    "probe_batch_x_full_step_p75",
    "probe_passes",
    "probe_epochs",
    "probe_share_110",
    "probe_plan_s",
    "probe_store_mb",
    "probe_budget_mb",
    "probe_deferred_over_mb",
    "total_params",
    "optimizer_state_bytes",
    "adapter_bytes",
    "k",
    "batch",
    "workload",
    "precision",
    "threads",
    "steps",
    "warmup",
    "repeats",
    "loss_first",
    "loss_last",
    "load_avg_1m",
    "mem_source",
    "peak_after_setup_reset",
    "torch",
)


def times_probe(args: argparse.Namespace) -> bool:
    return args.probe_rounds > 0 and {"full", "grft_row"} <= set(args.methods)


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
    return [p / s for p, s in zip(record["probe_batch_times"], record["full_step_times"], strict=True)]


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
        for key in (
            "peak_mem_mb",
            "live_peak_mb",
            "whole_run_peak_mb",
            "build_peak_mb",
            "prepare_peak_mb",
            "setup_peak_mb",
            "step_cpu_s",
            "probe_s",
            "probe_batch_s",
            "load_avg_1m",
        ):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        if row.get("probe_batch_s"):
            # One probe over the training set (all its passes) in training epochs, and against the
            # paper's 110-epoch run (100 + 10 warm-up).
            row["probe_epochs"] = row["probe_batch_s"] / row["step_time_s"]
            row["probe_share_110"] = row["probe_epochs"] / PAPER_EPOCHS
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "k" in frame.columns:
        frame["k"] = frame["k"].astype("Int64")
    return frame[[c for c in CSV_COLUMNS if c in frame.columns]]


def code_version() -> str:
    """The checkout's commit (and whether it had changes), for the report's header."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
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
        print(
            f"[{i}/{len(jobs)}] {model} {what} ({time.perf_counter() - started:.0f}s elapsed)",
            file=sys.stderr,
            flush=True,
        )
        try:
            if method is None:
                interleaved.append(run_worker(interleave_command(args, model)))
            elif method == PROBE_JOB:
                probe_times.append(run_worker(probe_time_command(args, model)))
            else:
                records.append(asdict(WorkerRow.read(run_worker(worker_command(args, model, method)))))
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

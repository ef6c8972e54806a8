"""Paper Fig. 3 from measurements: memory over the whole run while GRFT, GPS and LoRA fine-tune ViT-B/16.

One worker process per method runs with a sampler thread recording memory every 50 ms (CPU:
resident set from ``/proc/self/statm``; GPU: ``torch.cuda.memory_allocated``) through model
build, the method's setup (GRFT's and GPS's probe) and training, so the figure shows the whole
run a user launches, the probe included, with LoRA (no probe) beside. Writes ``fig3_memory.csv``
(``method,t_s,memory_mb,phase``) and
``fig3_memory.png``.

    python -m experiments.bench.memory_trace --out results/bench/
    python -m experiments.bench.memory_trace --device cuda --batch 64 --fig3-steps 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .launch import parse as parse_bench
from .launch import run_worker, worker_command

TRACE_METHODS = ("grft_row", "gps", "lora")


def trace(args: argparse.Namespace, out: Path, methods: tuple[str, ...] = TRACE_METHODS):
    """Run the traced workers on ViT and write the CSV and the figure; returns the samples."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            path = Path(tmp) / f"{method}.csv"
            print(f"[fig3] vit {method}: {args.fig3_steps} steps", file=sys.stderr, flush=True)
            extra = ("--trace", str(path), "--steps", str(args.fig3_steps), "--warmup", "0")
            cmd = worker_command(args, "vit", method)
            # The trace's own step count replaces the benchmark's.
            cmd = _drop_option(_drop_option(cmd, "--steps"), "--warmup") + list(extra)
            run_worker(cmd)
            frames.append(pd.read_csv(path))
    samples = pd.concat(frames, ignore_index=True)
    samples.to_csv(out / "fig3_memory.csv", index=False)
    plot(samples, out / "fig3_memory.png", gpu=args.device.startswith("cuda"))
    return samples


def _drop_option(cmd: list[str], option: str) -> list[str]:
    i = cmd.index(option)
    return cmd[:i] + cmd[i + 2 :]


def plot(samples, path: Path, gpu: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"grft_row": "#2ca02c", "grft_column": "#98df8a", "gps": "#d62728", "lora": "#1f77b4"}
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for method, part in samples.groupby("method", sort=False):
        color = colors.get(method)
        peak = part["memory_mb"].max() / 1024
        ax.plot(part["t_s"], part["memory_mb"] / 1024, color=color, label=f"{method} (peak {peak:.2f} GiB)", lw=1.4)
        probe = part.loc[part["phase"] == "probe", "t_s"]
        train = part.loc[part["phase"] == "train", "t_s"]
        if len(probe) and len(train):
            ax.axvspan(probe.min(), train.min(), color=color, alpha=0.08)
        if len(train):
            ax.axvline(train.min(), color=color, ls="--", lw=0.8)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time since the worker started (s): model build, probe (shaded), training (from the dashed line)")
    ax.set_ylabel("GPU memory allocated (GiB)" if gpu else "resident memory (GiB)")
    ax.set_title("Memory over the whole run: GRFT, GPS and LoRA (ViT-B/16)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_bench(argv)
    trace(args, args.out)
    print(f"wrote {args.out}/fig3_memory.csv and fig3_memory.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

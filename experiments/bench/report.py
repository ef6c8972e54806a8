"""Tables and charts computed from the benchmark's CSV (never typed): ratios, targets, bars.

python -m experiments.bench.report results/bench/latest.csv   # re-render latest.md/.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from .names import DEFAULT_ARMS
from .targets import evaluate

METHOD_ORDER = DEFAULT_ARMS  # other arms follow them
REFERENCES = ("full", "lora", "floor")
COLORS = {
    "full": "#7f7f7f",
    "gps": "#d62728",
    "lora": "#1f77b4",
    "grft_row": "#2ca02c",
    "grft_column": "#98df8a",
    "linear": "#bcbd22",
    "floor": "#000000",
}


def ordered(results: pd.DataFrame) -> pd.DataFrame:
    """Models in the order they ran, methods in ``METHOD_ORDER``."""
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(results["model"]))}
    method_rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    key = results["model"].map(model_rank) * len(METHOD_ORDER) + results["method"].map(method_rank)
    return results.assign(_order=key).sort_values("_order", kind="stable").drop(columns="_order")


def with_ratios(part: pd.DataFrame) -> pd.DataFrame:
    """Add ``<metric>_x_<reference>`` columns: each method's value over the reference's (same model)."""
    out = part.copy()
    values = part.set_index("method")
    for metric in ("step_time_s", "step_time_interleaved_s", "peak_mem_mb", "whole_run_peak_mb"):
        for ref in REFERENCES + (("gps",) if metric == "whole_run_peak_mb" else ()):
            known = metric in values.columns and ref in values.index
            out[f"{metric}_x_{ref}"] = part[metric] / values.at[ref, metric] if known else float("nan")
    if "full" in values.index:
        out["adapter_pct_of_full"] = 100.0 * part["adapter_mb"] / values.at["full", "adapter_mb"]
    else:
        out["adapter_pct_of_full"] = float("nan")
    return out


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:,.{digits}f}"


def _spread(row: pd.Series, prefix: str) -> str:
    if pd.isna(row.get(f"{prefix}_s")):
        return "–"
    return f"{row[f'{prefix}_s']:.2f} ({row[f'{prefix}_p25']:.2f}–{row[f'{prefix}_p75']:.2f})"


def _markdown(rows: list[dict]) -> str:
    # disable_numparse: keep the formatted digits ("1.00", not "1").
    return pd.DataFrame(rows).to_markdown(
        index=False, disable_numparse=True, colalign=["left"] + ["right"] * (len(rows[0]) - 1)
    )


def time_table(part: pd.DataFrame) -> str:
    part = with_ratios(part)
    rows = []
    for _, r in part.iterrows():
        rows.append(
            {
                "method": r["method"],
                "step s (p25–p75)": _spread(r, "step_time"),
                "×full": _fmt(r["step_time_s_x_full"], 2),
                "×LoRA": _fmt(r["step_time_s_x_lora"], 2),
                "×floor": _fmt(r["step_time_s_x_floor"], 2),
                "CPU s/step": _fmt(r.get("step_cpu_s"), 2),
                "side by side s (p25–p75)": _spread(r, "step_time_interleaved"),
                "side by side ×LoRA": _fmt(r["step_time_interleaved_s_x_lora"], 3),
                "side by side ×floor": _fmt(r["step_time_interleaved_s_x_floor"], 3),
            }
        )
    return _markdown(rows)


def memory_table(part: pd.DataFrame) -> str:
    part = with_ratios(part)
    rows = []
    for _, r in part.iterrows():
        rows.append(
            {
                "method": r["method"],
                "peak MB": _fmt(r["peak_mem_mb"], 0),
                "×full": _fmt(r["peak_mem_mb_x_full"], 3),
                "×LoRA": _fmt(r["peak_mem_mb_x_lora"], 3),
                "×floor": _fmt(r["peak_mem_mb_x_floor"], 3),
                "live peak MB": _fmt(r.get("live_peak_mb"), 0),
                "trainable": f"{int(r['trainable_params']):,}",
                "Adam state MB": _fmt(r["optimizer_state_mb"], 2),
                "adapter MB": _fmt(r["adapter_mb"], 3),
                "adapter % of full": _fmt(r["adapter_pct_of_full"], 3),
                "probe s": _fmt(r["probe_s"], 1),
            }
        )
    return _markdown(rows)


def whole_run_table(part: pd.DataFrame) -> str:
    """Each phase's peak and the whole run's against LoRA's, full fine-tuning's and GPS's; the
    probe's passes (and the size over which a weight's sum waits until after its pass), and its time
    in training epochs, in the paper's 110 epochs and in full steps."""
    part = with_ratios(part)
    rows = []
    for _, r in part.iterrows():
        passes = r.get("probe_passes")
        share = r.get("probe_share_110")
        rows.append(
            {
                "method": r["method"],
                "build peak MB": _fmt(r.get("build_peak_mb"), 0),
                "setup + probe peak MB": _fmt(r.get("prepare_peak_mb"), 0),
                "training peak MB": _fmt(r["peak_mem_mb"], 0),
                "whole-run peak MB": _fmt(r.get("whole_run_peak_mb"), 0),
                "whole run ×LoRA": _fmt(r.get("whole_run_peak_mb_x_lora"), 3),
                "×full": _fmt(r.get("whole_run_peak_mb_x_full"), 3),
                "×GPS": _fmt(r.get("whole_run_peak_mb_x_gps"), 3),
                "probe passes": "–" if passes is None or passes != passes else f"{int(passes)}",
                "sums deferred over MB": _fmt(r.get("probe_deferred_over_mb"), 1),
                "probe s": _fmt(r["probe_s"], 1),
                "probe s/batch": _fmt(r.get("probe_batch_s"), 2),
                "probe ÷ epoch": _fmt(r.get("probe_epochs"), 2),
                "probe % of 110 epochs": _fmt(None if share is None else 100 * share, 1),
                "probe batch ÷ full step, side by side (p25–p75)": _ratio_spread(r, "probe_batch_x_full_step"),
            }
        )
    return _markdown(rows)


def _ratio_spread(row: pd.Series, column: str) -> str:
    if pd.isna(row.get(column)):
        return "–"
    return f"{row[column]:.2f} ({row[f'{column}_p25']:.2f}–{row[f'{column}_p75']:.2f})"


def device_kind(results: pd.DataFrame) -> str:
    return "cuda" if results["device"].astype(str).str.startswith("cuda").any() else "cpu"


def markdown(results: pd.DataFrame, meta: dict, interleaved: list[dict] = ()) -> str:
    """The whole report: run header, one table per model, the targets, how it was measured.

    interleaved: the side-by-side records, for the per-round spread of the time targets.
    """
    results = ordered(results)
    kind = device_kind(results)
    lines = ["# Benchmark: GRFT against full fine-tuning, GPS, LoRA, linear probing and the floor", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines += [""]
    for _model, part in results.groupby("model", sort=False):
        lines += [
            f"## {part['workload'].iloc[0]}",
            "",
            "Time per training step:",
            "",
            time_table(part),
            "",
            "Memory, state and storage:",
            "",
            memory_table(part),
            "",
        ]
        if "whole_run_peak_mb" in part.columns:
            lines += [
                "The whole run as a user launches it (model build, the method's setup with its probe, training):",
                "",
                whole_run_table(part),
                "",
            ]
    targets = evaluate(results, kind, interleaved)
    lines += [
        f"## Targets ({kind})",
        "",
        "The benchmark's goals, each a ratio measured in this run. Step-time ratios "
        "come from the side-by-side timing where both methods have one (ratio of the medians; "
        "`per-round p25–p75`: the spread of the ratio between steps taken in the same round).",
        "",
    ]
    if len(targets):
        shown = targets.assign(ratio=targets["ratio"].map(lambda v: _fmt(v, 4)))
        lines += [
            shown.to_markdown(
                index=False, disable_numparse=True, colalign=("left", "left", "left", "right", "right", "left")
            ),
            "",
        ]
    met = int((targets["status"] == "met").sum())
    lines += [f"{met} of {len(targets)} met.", ""]
    lines += [HOW_MEASURED]
    return "\n".join(lines)


HOW_MEASURED = """## How it was measured

- Each (model, method) runs in its own process (`python -m experiments.bench.worker`), one after
  the other; `torch.set_num_threads` is the same for all. A step is forward + cross-entropy (+ the
  GRFT penalty, squared L2, lambda 1e-3, last 2 blocks + stem + head) + backward + Adam (weight
  decay 0) on one fixed random batch. `step s`: median of the measured steps after the warm-up,
  p25–p75 their spread; `CPU s/step`: process CPU time per step (all threads).
- `side by side`: the methods that the step-time targets compare are also timed in one process
  (`python -m experiments.bench.interleave`), each with its own model, taking steps in turn (order
  reversed every other round). The per-process runs are minutes apart, and on a shared machine
  the load changes between them by more than the few percent that separate these methods; taken
  in turn, a change of load hits all of them alike. The step-time targets use these ratios.
- Peak memory (CPU): `ru_maxrss` of the worker over the training steps; after setup (model build,
  probe, optimizer) glibc hands back what setup freed (`malloc_trim`) and the kernel's high-water
  mark is reset, for every method alike, so `peak MB` is training's alone. The whole-run table
  gives each phase's peak (the high-water mark is also reset after the model build, which frees
  nothing) and `whole-run peak MB`, the largest of the three: what the run as a user launches it
  needs, probe included (Fig. 3 shows it over time). `live peak MB`: `ru_maxrss` of one more step after glibc
  is told to map every allocation of 64 KiB or more on its own and to return what is freed at
  once (mallopt): the memory the step's live tensors need, without the allocator's fragmentation.
  GPU: `torch.cuda.max_memory_allocated` over the training steps.
- Methods: every one but floor is the app's `method=<name>`, built by its factory and trained
  through its hooks (`prepare`, `probe`, `extra_loss`, `before_optimizer_step`, `save_adapter`).
- Probe: `probe s` is the setup's probe (the method's `probe`: `grft.select` /
  `grft.accumulate_gradients`, the low-memory probe: every block but the last checkpointed and,
  on CPU, the heap's freed pages handed back between blocks, `grft/checkpointing.py`) over `--probe-batches` batches;
  ViT probe batches hold two views of each image, as `grft_app.lit`'s probe loader gives them.
  `probe ÷ epoch`: a probe batch over the method's own training step, i.e. one probe pass over
  the training set (at the training batch size, the default) in training epochs. `probe batch ÷
  full step, side by side`: `python -m experiments.bench.probe_time` holds a full fine-tuning
  model and a GRFT model and times one probe batch and one full step in turn (order reversed every
  other round); median ratio and the per-round p25–p75.
- Trainable: entries that can change (GPS: the mask's ones plus biases and head). Adam state: the
  bytes of its `exp_avg` and `exp_avg_sq` tensors after the steps (step counters left out).
- Adapter: the file each method must keep. GRFT: `grft.save_adapter` (indices int16, slices,
  eligible biases, head). LoRA: peft's LoRA state dict (A, B) and the head. full: every
  parameter. linear/floor: their trainable tensors. GPS: `save_gps` of `method=gps` (per masked
  matrix the selected entries' indices and values), plus biases and head.
- GPS: the framework's `method=gps` (`grft_app/methods/gps.py`): every eligible weight holds a full
  gradient and full-size Adam state; the gradient is zeroed outside a full-size bool mask (top-k
  |H| per row of the SCL probe gradient) before the step. Probe: `grft.accumulate_gradients`.
- LoRA: `method=lora` with the paper table's recipe: ViT `recipe=lora_vtab` (r=16, alpha=16 on
  `qkv`), Llama `recipe=lora_glue` (r=16, alpha=16 on `q_proj`, `k_proj`, `v_proj`); head trained.
- floor: the head and the bias of the network's first layer, so backward crosses every layer but
  computes no weight gradient inside it — ViT: the patch embedding's bias; Llama (no biases): a
  zero bias given to layer 0's `q_proj` (the outputs do not change).
- Random weights (timm `vit_base_patch16_224`, 100 classes; `LlamaForSequenceClassification`
  from a Llama-3.2-1B-wide config, 2 labels): time and memory do not depend on the values. In the
  CPU Llama configuration (2 layers, 8 x 32 tokens) the weights (1.5 GB, of which the 128256 x 2048
  token embedding is 1 GB) dwarf the activations, so the methods' peak memories barely differ;
  full fine-tuning also trains that embedding, which GPS (like GRFT) leaves frozen. The CPU
  training-memory targets are therefore set for the ViT only; the whole-run targets (GRFT's probe
  within its training peak and LoRA's) hold for every model: there the probe's gradient store,
  a second copy of the eligible weights if held at once, is what GRFT must keep within budget
  (`probe passes`: one group of layers per pass over the probe data).
"""


def chart(results: pd.DataFrame, path: Path) -> Path:
    """Bars of step time (p25–p75 whiskers) and peak memory per method, one row per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = ordered(results)
    models = list(dict.fromkeys(results["model"]))
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 3.6 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        part = results[results["model"] == model]
        x = range(len(part))
        colors = [COLORS.get(m, "#888888") for m in part["method"]]
        t = part["step_time_s"]
        err = [(t - part["step_time_p25"]).clip(lower=0), (part["step_time_p75"] - t).clip(lower=0)]
        ax = axes[row][0]
        ax.bar(x, t, color=colors, yerr=err, capsize=3, label="own process (median, p25–p75)")
        if "step_time_interleaved_s" in part and part["step_time_interleaved_s"].notna().any():
            ax.scatter(
                list(x),
                part["step_time_interleaved_s"],
                color="white",
                edgecolor="black",
                zorder=3,
                label="side by side (median)",
            )
        ax.legend(loc="upper right", fontsize=8)
        ax.set_ylabel("step time (s)")
        ax.set_title(f"{part['workload'].iloc[0]}: median step time")
        ax = axes[row][1]
        ax.bar(
            x,
            part["peak_mem_mb"] / 1024,
            color=colors,
            label="peak (ru_maxrss)" if "cpu" in part["device"].iloc[0] else "peak",
        )
        if "live_peak_mb" in part and part["live_peak_mb"].notna().any():
            ax.scatter(
                list(x), part["live_peak_mb"] / 1024, color="white", edgecolor="black", zorder=3, label="live peak"
            )
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylabel("peak memory (GiB)")
        ax.set_title(f"{part['workload'].iloc[0]}: peak memory")
        for a in axes[row]:
            a.set_xticks(list(x))
            a.set_xticklabels(part["method"], rotation=30, ha="right")
    fig.suptitle(f"{results['device'].iloc[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(results: pd.DataFrame, out: Path, meta: dict, interleaved: list[dict] = ()) -> None:
    """latest.md and latest.png next to latest.csv."""
    (out / "latest.md").write_text(markdown(results, meta, interleaved))
    chart(results, out / "latest.png")


def read_interleaved(runs: Path) -> list[dict]:
    """The side-by-side records among a run's worker records (latest_runs.jsonl)."""
    if not runs.is_file():
        return []
    records = [json.loads(line) for line in runs.read_text().splitlines() if line.strip()]
    return [r for r in records if "methods" in r]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.report", description="re-render the tables and chart")
    p.add_argument("csv", type=Path)
    args = p.parse_args(argv)
    results = pd.read_csv(args.csv)
    meta_path = args.csv.with_name(args.csv.stem + "_meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    write(results, args.csv.parent, meta, read_interleaved(args.csv.with_name(args.csv.stem + "_runs.jsonl")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedded default (`make run`) over several seeds: each method's mean ± sd test accuracy.

    python -m experiments.default_seeds                     # seeds 0-4
    python -m experiments.default_seeds --seeds 0,1,2 k=2   # other seeds; Hydra overrides after them

Why: the toy trains on 200 images and tests on ~700, so one seed's accuracy moves by points with
the seed, and with anything that changes the order of floating-point sums (another CPU family's
vector kernels, another PyTorch). A single run's numbers are not what another machine prints; the
spread over seeds says how far apart two machines' numbers can be, and whether an ordering of the
methods holds. Each seed is one ``python run.py seed=<s>`` (GRFT and its side-by-side baselines,
exactly what ``make run ARGS=seed=<s>`` prints); finished runs are skipped, so a second call only
reads their records. Printed: the machine (CPU model, ATen's vector capability, PyTorch), each
seed's accuracies, and per method the mean, sample sd, min and max.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from grft_app.paths import CONF_DIR, ROOT


def cpu_name() -> str:
    """The CPU model as the OS names it (Linux: /proc/cpuinfo), else what Python's platform module says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    import torch

    return (
        f"{cpu_name()} ({os.cpu_count()} cores), ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"PyTorch {torch.__version__}"
    )


def records_of(overrides: list[str]) -> list:
    """The records of the default's runs (GRFT, then each baseline) for these overrides, in that order."""
    from hydra import compose, initialize_config_dir

    from grft_app.lit.app import baseline_specs, run_dir_of, with_method
    from grft_app.lit.settings import register_resolvers
    from grft_app.record import read_record

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
        dirs = [run_dir_of(cfg)] + [
            run_dir_of(with_method(cfg, name, extra)) for name, extra in baseline_specs(cfg.baselines or [])
        ]
    records = [read_record(d) for d in dirs]
    missing = [str(d) for d, r in zip(dirs, records, strict=True) if r is None or not r.done]
    if missing:
        command = " ".join(["python run.py", *overrides])
        raise SystemExit(f"error: no finished record in {', '.join(missing)}; run `{command}`")
    return records


def label(record) -> str:
    return record.method + (f" ({record.selection}, k={record.k})" if record.method == "grft" else "")


def summary(accuracies: dict[str, list[float]]) -> list[tuple[str, float, float, float, float]]:
    """(method, mean, sample sd, min, max) in percent; sd is 0 for a single seed."""
    rows = []
    for method, values in accuracies.items():
        pct = [100 * v for v in values]
        sd = statistics.stdev(pct) if len(pct) > 1 else 0.0
        rows.append((method, statistics.fmean(pct), sd, min(pct), max(pct)))
    return rows


def orderings(per_seed: list[dict[str, float]]) -> dict[str, int]:
    """How many seeds rank the methods in each order (highest accuracy first; a tie reads as '=')."""
    counts: dict[str, int] = {}
    for accs in per_seed:
        ranked = sorted(accs, key=lambda m: -accs[m])
        text = ranked[0].split(" (")[0]
        for before, method in zip(ranked, ranked[1:], strict=False):
            text += (" = " if accs[method] == accs[before] else " > ") + method.split(" (")[0]
        counts[text] = counts.get(text, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (as for run.py)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds {args.seeds!r} is not comma-separated integers; e.g. --seeds 0,1,2") from None
    if not seeds:
        raise SystemExit("error: --seeds is empty; give at least one seed, e.g. --seeds 0,1,2")
    if any(o.split("=", 1)[0].lstrip("+~") == "seed" for o in args.overrides):
        raise SystemExit("error: give the seeds with --seeds, not as a seed= override")

    per_seed: list[dict[str, float]] = []
    for seed in seeds:
        overrides = [*args.overrides, f"seed={seed}"]
        print(f"--- seed {seed}: python run.py {' '.join(overrides)}", flush=True)
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides])
        if proc.returncode != 0:
            raise SystemExit(f"error: seed {seed}'s run failed (status {proc.returncode}); its output is above")
        per_seed.append({label(r): r.reported("test_acc") for r in records_of(overrides)})

    methods = list(per_seed[0])
    accuracies = {m: [accs[m] for accs in per_seed] for m in methods}
    print(f"\nthe embedded default over {len(seeds)} seeds ({', '.join(map(str, seeds))}) on {machine()}")
    print("test accuracy (%) per seed:")
    for seed, accs in zip(seeds, per_seed, strict=True):
        print(f"  seed {seed}: " + ", ".join(f"{m} {100 * a:.1f}" for m, a in accs.items()))
    print("\n| method | test acc (%), mean ± sd | min | max | seeds |\n| --- | --- | --- | --- | --- |")
    for method, mean, sd, low, high in summary(accuracies):
        print(f"| {method} | {mean:.1f} ± {sd:.1f} | {low:.1f} | {high:.1f} | {len(seeds)} |")
    print("\nordering by test accuracy:")
    for text, count in sorted(orderings(per_seed).items(), key=lambda kv: -kv[1]):
        print(f"  {text}: {count} of {len(seeds)} seeds")


if __name__ == "__main__":
    main()

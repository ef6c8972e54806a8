"""The training loop's overhead on the embedded default: Lightning's step against a plain loop's.

    python -m experiments.overhead                 # GRFT, linear and full (the `make run` methods)
    python -m experiments.overhead --methods full --epochs 8 --rounds 5

For each method it trains the embedded default (digits, the small ViT) through the app's own
``run_task`` (Lightning, progress bar, CSV logger, checkpoints, memory trace: what ``make run``
runs) and times every training epoch after the first, from the start of the epoch to the end of
its checkpoint: data loading and everything Lightning does between steps included. Then, in the
same process, on the same model, data loader and threads, a plain loop does the same work per
step (forward, loss with the method's penalty, backward, the method's gradient hook, Adam step)
for as many steps. Arms alternate ``--rounds`` times; the medians are printed with their ratio.
A benchmark, not a test: only the ratio inside one run means anything on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from grft_app.paths import ROOT


class EpochClock(L.Callback):
    """Wall time and step count of the training epochs after the first (the first warms up)."""

    def __init__(self):
        self.seconds, self.steps, self.module, self.datamodule = 0.0, 0, None, None
        self._start = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.module, self.datamodule = pl_module, trainer.datamodule
        if trainer.current_epoch >= 1:
            self._start, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module):  # runs after ModelCheckpoint's (listed first)
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.steps += trainer.global_step - self._step0
            self._start = None


def plain_loop(module, datamodule, steps: int, lr: float) -> float:
    """Seconds per step of the same work without Lightning: forward, loss, backward, hook, Adam."""
    from grft.probe import call_model, split_batch

    model, method = module.model, module.method
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    done, start = 0, time.perf_counter()
    while done < steps:
        for batch in datamodule.train_dataloader():
            inputs, labels = split_batch(batch)
            out = call_model(model, inputs)
            logits = out.logits if hasattr(out, "logits") else out
            loss = F.cross_entropy(logits.float(), labels)
            extra = method.extra_loss(model)
            if extra is not None:
                loss = loss + extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.before_optimizer_step(model)
            optimizer.step()
            done += 1
            if done == steps:
                break
    return (time.perf_counter() - start) / steps


def compose(method: str, epochs: int, runs: Path, extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from grft_app.run.settings import register_resolvers

    register_resolvers()
    from grft_app.run.app import baseline_specs

    overrides = [f"method={method}", f"epochs={epochs}", "warmup_epochs=1", f"paths.runs={runs}", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        # A baseline trains with the settings `make run` gives it (the task's `baselines`, conf/dataset/digits.yaml).
        task = hydra_compose("config", overrides=[o for o in overrides if not o.startswith("method=")])
        own = dict(baseline_specs(task.baselines or [])).get(method, {})
        return hydra_compose("config", overrides=[*overrides, "baselines=null", *(f"{k}={v}" for k, v in own.items())])


def measure(method: str, epochs: int, rounds: int, extra: list[str]) -> dict:
    from grft_app.lit.quiet import quiet_lightning
    from grft_app.run.app import run_dir_of
    from grft_app.run.runner import run_task

    quiet_lightning()
    lightning, plain, step_only = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as runs:  # a fresh run each round (no checkpoint to resume)
            cfg = compose(method, epochs, Path(runs), extra)
            clock = EpochClock()
            record = run_task(cfg, run_dir_of(cfg), extra_callbacks=[clock])
            lightning.append(clock.seconds / clock.steps)
            step_only.append(record.timings.step_s_median)
            plain.append(plain_loop(clock.module, clock.datamodule, clock.steps, float(cfg.lr)))
    return {
        "method": method,
        "lightning_s": statistics.median(lightning),
        "plain_s": statistics.median(plain),
        "step_only_s": statistics.median(step_only),
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="grft,linear,full", help="comma-separated methods (default: make run's)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per round; the first is not timed")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two arms; medians are shown")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (e.g. cpu_threads=2)")
    args = parser.parse_args(argv)
    rows = [measure(m, args.epochs, args.rounds, args.overrides) for m in args.methods.split(",")]
    print(f"\nper training step, embedded default, {args.epochs - 1} timed epochs x {args.rounds} rounds (medians)")
    print(f"{'method':8} {'lightning (ms)':>15} {'plain loop (ms)':>16} {'ratio':>6} {'step only (ms)':>15} threads")
    for r in rows:
        print(
            f"{r['method']:8} {1000 * r['lightning_s']:15.2f} {1000 * r['plain_s']:16.2f} "
            f"{r['lightning_s'] / r['plain_s']:6.2f} {1000 * r['step_only_s']:15.2f} {r['threads']:7d}"
        )
    print(
        "lightning: epoch wall time / steps (data, loop, logging, progress, checkpoint included); "
        "step only: the record's step_s_median"
    )


if __name__ == "__main__":
    main()

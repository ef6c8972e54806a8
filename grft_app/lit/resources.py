"""Step time, peak memory and a memory-over-time trace of a training run (paper Fig. 3)."""

from __future__ import annotations

import csv
import resource
import statistics
import time
from pathlib import Path

import lightning as L
import torch


def current_memory_mb(device: torch.device) -> float:
    """Allocated accelerator memory, or the process's resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class ResourceMonitor(L.Callback):
    """Times every training step and samples memory every ``trace_every`` steps into a CSV."""

    def __init__(self, trace_path: Path | None = None, trace_every: int = 10, warmup_steps: int = 5):
        self.trace_path = trace_path
        self.trace_every = trace_every
        self.warmup_steps = warmup_steps
        self.step_times: list[float] = []
        self.trace: list[tuple[float, int, float]] = []
        self.fit_seconds = 0.0
        self._t0 = self._step_start = self._fit_start = None

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = self._t0 = time.perf_counter()
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_seconds += time.perf_counter() - self._fit_start
        if trainer.is_global_zero:
            self.write_trace()
            summary = {k: v for k, v in self.summary(pl_module.device).items() if isinstance(v, (int, float))}
            for logger in trainer.loggers:
                logger.log_metrics({f"resources/{k}": v for k, v in summary.items()}, step=trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        now = time.perf_counter()
        self.step_times.append(now - self._step_start)
        if trainer.global_step % self.trace_every == 0:
            self.trace.append((now - self._t0, trainer.global_step, current_memory_mb(pl_module.device)))

    def summary(self, device: torch.device) -> dict:
        timed = self.step_times[self.warmup_steps :] or self.step_times
        return {
            "fit_s": round(self.fit_seconds, 3),
            "step_s_median": statistics.median(timed) if timed else None,
            "steps_timed": len(timed),
            "peak_mem_mb": round(peak_memory_mb(device), 1),
            "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else "ru_maxrss",
        }

    def write_trace(self) -> None:
        if self.trace_path is None or not self.trace:
            return
        with open(self.trace_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t_s", "step", "memory_mb"])
            writer.writerows(self.trace)

"""Which device a run measures on, checked up front and described for the CSV's ``device`` column."""

from __future__ import annotations

import platform

import torch

PRECISIONS = ("fp32", "bf16")


def resolve(device: str) -> torch.device:
    """``cpu`` or ``cuda[:n]``; a clear error when CUDA is asked for and absent."""
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA GPU; run with --device cpu")
    return dev


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    """E.g. ``cpu: AMD EPYC, 2 threads`` or ``cuda: NVIDIA H100 80GB HBM3``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"


def synchronizer(device: torch.device):
    """A function that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None

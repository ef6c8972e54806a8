"""Peak and current memory of this process, the same way for every method.

CPU: the peak is ``getrusage(RUSAGE_SELF).ru_maxrss`` (resident set high-water mark); the current
value is the resident set from ``/proc/self/statm``. GPU: ``torch.cuda.max_memory_allocated`` and
``torch.cuda.memory_allocated`` (tensors only, not the caching allocator's reserve).

``reset`` starts a new peak after setup (model build, probe, optimizer), so the peak a method
reports is that of training. On Linux the kernel's high-water mark is reset by writing ``5`` to
``/proc/self/clear_refs``; memory the allocator kept from setup still counts (it is resident), so
the reset can only make a method look heavier, never lighter, than its training alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import threading
import time

import torch

from grft.heap import release_free_pages

MB = 1024 * 1024
CLEAR_REFS = "/proc/self/clear_refs"


class Memory:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    @property
    def source(self) -> str:
        return "cuda max_memory_allocated" if self.cuda else "ru_maxrss"

    def reset(self) -> bool:
        """Start a new peak; False where the platform cannot (the peak then includes setup)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return True
        try:
            with open(CLEAR_REFS, "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def peak_mb(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MB
        # Linux reports ru_maxrss in KiB.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def current_mb(self) -> float:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device) / MB
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * self.page / MB


# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
COMPACT_MMAP_BYTES = 64 * 1024


def compact_allocator() -> bool:
    """Make glibc map each allocation of 64 KiB or more on its own and give back what is freed.

    Then the resident set follows the live tensors: what a step needs, free of the fragmentation
    the default (dynamic) thresholds leave behind. It makes allocations slower (every large one
    is fresh, zeroed pages), so the worker only switches it on after the timed steps. False where
    the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, COMPACT_MMAP_BYTES) == 1
        ok = ok and libc.mallopt(M_TRIM_THRESHOLD, 2 * COMPACT_MMAP_BYTES) == 1
        libc.malloc_trim(0)
        return ok
    except (OSError, AttributeError):
        return False


def trim_allocator() -> bool:
    """Give the freed memory glibc still holds back to the system (``malloc_trim``).

    Run after setup, before the peak is reset, for every method alike: what the probe or the
    model build freed must not count as the training peak. False where the C library is not glibc.
    """
    return release_free_pages()


class Sampler:
    """Samples ``Memory.current_mb`` every ``interval_s`` on a daemon thread (paper Fig. 3).

    ``mark(phase)`` labels the samples that follow (build, probe, train, ...).
    """

    def __init__(self, memory: Memory, interval_s: float = 0.05):
        self.memory = memory
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, str]] = []
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="memory-sampler")
        self._t0 = time.perf_counter()

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def mark(self, phase: str) -> None:
        self.phase = phase
        self._take()

    def _take(self) -> None:
        self.samples.append((time.perf_counter() - self._t0, self.memory.current_mb(), self.phase))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def write(self, path, method: str) -> None:
        """CSV with columns ``method,t_s,memory_mb,phase``."""
        with open(path, "w") as f:
            f.write("method,t_s,memory_mb,phase\n")
            for t, mb, phase in self.samples:
                f.write(f"{method},{t:.3f},{mb:.1f},{phase}\n")

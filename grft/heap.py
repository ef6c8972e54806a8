"""Handing the C heap's free pages back to the system between the probe's blocks (CPU, glibc).

Why: on CPU, tensors smaller than glibc's mmap threshold (raised on the fly up to 32 MiB) live in
its heap, and glibc keeps the pages freed inside the heap resident (it only trims the top). The probe's pattern of sizes
fragments that heap: each block's wide activations (ViT-B/16 at twice the training batch: a
27.7 MB qkv between 9.2 MB hidden states) no longer fit into the holes the previous block left,
so the heap grows by tens of MB per block while what is live stays flat. Measured on ViT-B/16,
batch 8 with two views, CPU: the free-but-resident part of the heap reached 450-600 MB during the
probe, and the probe's resident peak (2.0-2.2 GB) stood above a training step's (about 1.95 GB).

``malloc_trim(0)`` returns those free pages (``madvise``) without moving or changing any tensor,
so the probe's results are the same bits; it sets nothing, so there is nothing to restore. Its
cost is a page fault for each released page that is used again: 3-5% more CPU time in the
probe there. glibc's other lever, a fixed mmap threshold (1 MiB), maps and zeroes every large
tensor afresh (8% more CPU time, for a peak of about 1.75 GB) and cannot be put back to glibc's
own dynamic threshold afterwards.

The probe calls it only for blocks that run on CPU (a GPU's tensors live in torch's caching
allocator, not in this heap); without glibc (macOS, musl) it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> ctypes._CFuncPtr | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): no malloc_trim
        return None


def release_free_pages() -> bool:
    """Return the heap's free pages to the system (glibc's ``malloc_trim(0)``); False where there is no glibc."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

"""Handing the C heap's free pages back to the system between the probe's blocks (CPU, glibc).

Why: on CPU, tensors smaller than glibc's mmap threshold (raised on the fly up to 32 MiB) live in
its heap, and glibc keeps every page it has freed there resident. The probe's pattern of sizes
fragments that heap: each block's wide activations (ViT-B/16 at twice the training batch: a
27.7 MB qkv between 9.2 MB hidden states) no longer fit into the holes the previous block left,
so the heap grows by tens of MB per block while what is live stays flat. Measured on ViT-B/16,
batch 8 with two views, CPU: the free-but-resident part of the heap reached 450-600 MB during the
probe, and the probe's resident peak (about 2.15 GB) stood above the whole training step's.

``malloc_trim(0)`` returns those free pages (``madvise``) without moving or changing any tensor,
so the probe's results are the same bits; it sets nothing, so there is nothing to restore. Its
cost is a page fault for each released page that is used again, a few percent of the probe's
time; glibc's other lever, a fixed mmap threshold, would map and zero every large tensor afresh
(measured about 8% slower for the same memory) and could not be put back to glibc's own dynamic
threshold afterwards.

Elsewhere (another C library, or tensors on a GPU, whose caching allocator glibc does not see)
there is nothing to release and ``release_free_pages`` returns False.
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

"""Keep a long search or training run at constant memory although every sub-network has new shapes.

Two things grow with the number of distinct shapes, not with live memory (bench/bench_search_memory.py, a
500-sample MiniLM search, RSS after sample 50 to the end): glibc's heap of freed activation and
weight-slice buffers, which it keeps fragmented instead of returning it (+235 MB), and oneDNN's cache of
compiled kernels, one per GELU input shape, an LRU of 1024 by default that sliced shapes never hit
(+13 MB). `release_freed_memory` returns the first after every sample or step (a few milliseconds on
glibc, nothing elsewhere); `bound_kernel_cache` caps the second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

KERNEL_CACHE_CAPACITY = 64


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS, Windows)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    return getattr(ctypes.CDLL(library), "malloc_trim", None)


def release_freed_memory() -> None:
    """Return the free parts of the heap to the OS, so the process's RSS follows its live memory."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def bound_kernel_cache(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Cap oneDNN's per-shape kernel cache; oneDNN reads the setting at its first kernel, so call this before
    the first forward pass. A capacity the user set in ONEDNN_PRIMITIVE_CACHE_CAPACITY is kept."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))

"""Keep freed memory in the process's heap, so a CPU forward pass does not page-fault its activations afresh.

glibc's malloc serves every block above its mmap threshold (at most 32 MB by default) with a fresh
``mmap`` and returns it to the kernel on ``free``. A backbone's activations are such blocks, allocated
and freed on every forward pass, so every pass touches hundreds of MB of pages the kernel must map and
zero again — on a CPU, a large share of the features stage is then kernel time. Raising the mmap and trim
thresholds keeps freed blocks in the heap for the next pass; a process's memory stays at its peak instead
of shrinking between passes. ``scripts/bench_features.py`` measures both (page faults per image and
patches/s, ``results/features/features.json``).

Hand-written: no library sets malloc's options; this is ``mallopt(3)`` through :mod:`ctypes`, a no-op
where the C library is not glibc. ``DOR_IQA_KEEP_FREED_MEMORY=0`` leaves malloc as it is (to measure the
difference, or where memory matters more than time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""``mallopt`` parameters (glibc's ``malloc.h``)."""
THRESHOLD = 1 << 30
"""Blocks up to 1 GiB come from the heap and stay there when freed."""
OLD_GLIBC_MMAP_LIMIT = 32 << 20
"""The largest mmap threshold glibc releases before 2.35 accept (``HEAP_MAX_SIZE / 2`` on 64-bit)."""
SWITCH_ENV = "DOR_IQA_KEEP_FREED_MEMORY"


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where that is not possible or
    ``$DOR_IQA_KEEP_FREED_MEMORY`` is ``0``."""
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in the C library %s: freed memory is left to its allocator", name)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap = next((size for size in (THRESHOLD, OLD_GLIBC_MMAP_LIMIT) if mallopt(M_MMAP_THRESHOLD, size)), 0)
    trim = bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    if mmap < THRESHOLD or not trim:
        log.info("malloc keeps freed blocks up to %d bytes (asked %d; trim threshold set: %s): larger activations "
                 "are still mapped afresh on every forward pass", mmap, THRESHOLD, trim)
    return mmap == THRESHOLD and trim


__all__ = ["OLD_GLIBC_MMAP_LIMIT", "SWITCH_ENV", "THRESHOLD", "keep_freed_memory"]

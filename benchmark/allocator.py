"""Keep freed memory in the process's heap, so a CPU forward pass does not page-fault its activations afresh.

glibc's malloc serves every block above its mmap threshold (at most 32 MB by default) with a fresh
``mmap`` and returns it to the kernel on ``free``. A backbone's activations are such blocks, allocated
and freed on every forward pass, so every pass touches hundreds of MB of pages the kernel must map and
zero again: efficientnet_lite0 on 25 patches of 224 px page-faults 157,000 times per image, and the
kernel time was 40 % of the features stage (``scripts/bench_features.py``). Raising the mmap and trim
thresholds keeps freed blocks in the heap for the next pass: the same stage then faults ~5 times per
image and runs 2x faster; a process's memory stays at its peak instead of shrinking between passes.

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
    done = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    log.debug("malloc keeps freed blocks up to %d bytes in the heap: %s", THRESHOLD, done)
    return done


__all__ = ["SWITCH_ENV", "keep_freed_memory"]

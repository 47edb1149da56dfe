"""Freed memory kept in the heap: repeated forward passes no longer page-fault their activations afresh."""

import ctypes.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark import allocator

pytestmark = pytest.mark.skipif(sys.platform != "linux" or "libc.so" not in str(ctypes.util.find_library("c")),
                                reason="mallopt and /proc/self/stat are glibc/Linux features")

ACTIVATION_PAGES = 4 * 32 * 256 * 256 * 4 // 4096
"""Pages of one activation of the net below (batch 4, 32 channels, 256 x 256, float32)."""


def _faults() -> int:
    return int(Path("/proc/self/stat").read_text().split()[9])


def _faults_per_forward(passes: int = 8) -> float:
    """Mean minor page faults of a forward pass whose activations exceed glibc's default mmap threshold
    (with malloc's defaults ~7 x ACTIVATION_PAGES: every activation is mapped and zeroed afresh)."""
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(4, 3, 256, 256)
    with torch.inference_mode():
        net(x), net(x)  # the heap grows to the pass's peak once
        before = _faults()
        for _ in range(passes):
            net(x)
    return (_faults() - before) / passes


def test_keeping_freed_memory_removes_most_page_faults_of_a_forward_pass(monkeypatch):
    monkeypatch.delenv(allocator.SWITCH_ENV, raising=False)
    allocator.keep_freed_memory.cache_clear()
    assert allocator.keep_freed_memory() is True
    assert _faults_per_forward() < 2 * ACTIVATION_PAGES


def test_the_switch_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(allocator.SWITCH_ENV, "0")
    allocator.keep_freed_memory.cache_clear()
    try:
        assert allocator.keep_freed_memory() is False
    finally:
        allocator.keep_freed_memory.cache_clear()

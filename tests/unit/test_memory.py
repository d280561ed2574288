"""PeakMemory: the peak RSS of a ``with`` block, including memory that was freed before the block ended."""

from __future__ import annotations

import sys

import psutil
import pytest

from explaunch.measure.memory import PeakMemory

MB = 1024 * 1024
PAGE = 4096


def allocate_and_free(size: int) -> None:
    block = bytearray(size)
    for offset in range(0, size, PAGE):  # touch every page so that it is resident
        block[offset] = 1
    assert block[size - PAGE] == 1
    del block


def test_peak_rss_includes_memory_freed_inside_the_block() -> None:
    rss_before = psutil.Process().memory_info().rss

    with PeakMemory() as m:
        allocate_and_free(200 * MB)

    assert m.peak_rss_bytes is not None
    assert m.peak_rss_bytes >= rss_before + 150 * MB
    assert m.cuda_max_allocated_bytes is None  # no CUDA device asked for


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's high-water mark is Linux only")
def test_peak_rss_is_measured_with_linux_vmhwm() -> None:
    with PeakMemory() as m:
        allocate_and_free(8 * MB)

    assert "VmHWM" in m.method


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's high-water mark is Linux only")
def test_peak_rss_is_reset_at_the_start_of_each_block() -> None:
    rss_before = psutil.Process().memory_info().rss
    with PeakMemory() as first:
        allocate_and_free(200 * MB)

    with PeakMemory() as second:
        pass

    assert first.peak_rss_bytes is not None
    assert second.peak_rss_bytes is not None
    assert first.peak_rss_bytes >= rss_before + 150 * MB
    assert second.peak_rss_bytes < rss_before + 100 * MB

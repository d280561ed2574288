"""Peak memory of a code region: process RSS (Linux high-water mark, reset at the start) and CUDA allocations."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _read_hwm_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0). False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak RSS of this process over the ``with`` block and, when ``torch_device`` is CUDA, peak CUDA allocation.

    On Linux the kernel's high-water mark is exact; elsewhere the figure is psutil's RSS at the end of the block
    (``method`` says which).
    """

    def __init__(self, torch_device: Any = None) -> None:
        self.torch_device = torch_device
        self.peak_rss_bytes: int | None = None
        self.cuda_max_allocated_bytes: int | None = None
        self.method = ""
        self._hwm_ok = False

    def _is_cuda(self) -> bool:
        return self.torch_device is not None and getattr(self.torch_device, "type", "") == "cuda"

    def __enter__(self) -> PeakMemory:
        self._hwm_ok = _reset_hwm()
        if self._is_cuda():
            import torch

            torch.cuda.reset_peak_memory_stats(self.torch_device)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        hwm = _read_hwm_bytes() if self._hwm_ok else None
        if hwm is not None:
            self.peak_rss_bytes, self.method = hwm, "linux VmHWM (reset at region start)"
        else:
            import psutil

            self.peak_rss_bytes, self.method = psutil.Process().memory_info().rss, "psutil rss at region end"
        if self._is_cuda():
            import torch

            self.cuda_max_allocated_bytes = int(torch.cuda.max_memory_allocated(self.torch_device))

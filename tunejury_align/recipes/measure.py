"""Measuring a block of work: peak memory, out-of-memory errors.

Peak memory (bytes): on CUDA ``torch.cuda.max_memory_allocated`` (tensor
bytes, reset by ``start``); on the CPU the peak resident set size of the whole process
during the block (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; where that reset is
not allowed, the process's lifetime peak ``ru_maxrss``). RSS includes the loaded models and the
allocator's caches; ``start()`` returns the same measure at the block's start.
"""

from __future__ import annotations

import resource
import sys

import torch


class PeakMemory:
    """Peak memory of one block of work on ``device`` (see the module docstring for what it counts)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "cpu_peak_rss" if self._reset_rss_peak() else "cpu_lifetime_peak_rss"

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    @staticmethod
    def _status_bytes(key: str) -> int | None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _maxrss(self) -> int:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def start(self) -> int:
        """Reset the peak; return the current memory (bytes)."""
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        if self.kind == "cpu_peak_rss":
            self._reset_rss_peak()
        return self._status_bytes("VmRSS") or self._maxrss()

    def peak(self) -> int:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        if self.kind == "cpu_peak_rss":
            return self._status_bytes("VmHWM") or self._maxrss()
        return self._maxrss()


def is_out_of_memory(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    text = str(error).lower()
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text))

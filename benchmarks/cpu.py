"""What the benchmarks print about the machine, and whether it can accelerate bf16.

bf16 matmuls are fast on CPUs with AVX512-BF16 or AMX-BF16 instructions (and on CUDA GPUs); on AVX2-only or
plain AVX-512 CPUs PyTorch emulates them, several times slower than fp32, so a bf16 comparison there measures
the emulation: benchmarks skip it with a note unless asked (``--force-bf16``).
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bf16_accelerated(device: torch.device | str) -> bool:
    """True on CUDA, and on CPUs with AVX512-BF16 or AMX-BF16."""
    if torch.device(device).type == "cuda":
        return True
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe_machine(device: torch.device | str) -> str:
    """One line: the CPU model, its relevant features, torch's threads, and whether bf16 is accelerated."""
    flags = cpu_flags()
    present = [f for f in FEATURES if f in flags]
    bf16 = "bf16 accelerated" if bf16_accelerated(device) else "bf16 emulated (no avx512_bf16 / amx_bf16)"
    return (f"cpu: {cpu_model()}; features: {' '.join(present) or 'none of ' + ', '.join(FEATURES)}; "
            f"torch threads {torch.get_num_threads()}; device {device}: {bf16}")

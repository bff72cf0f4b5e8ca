"""The CPU this runs on: its model and flags, whether it computes in bf16, and the signature that per-machine
decisions (vaelab.precision, the compile probe) are cached under."""
from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch


@functools.cache
def cpu_info() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and all its flags (x86 ``flags``, Arm ``Features``); empty flags where unreadable. Read
    once per process: the probes ask for it at every decision and cache lookup."""
    model, flags = platform.processor(), ()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    lines = text.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
    first = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    return model, tuple(first.split(":", 1)[1].split()) if ":" in first else ()


def cpu_signature() -> str:
    """CPU model, the flags that decide bf16 speed, threads and torch version: what a cached probe is valid for."""
    model, flags = cpu_info()
    chosen = " ".join(sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2"))))
    return f"{model} | {chosen} | threads {torch.get_num_threads()} | torch {torch.__version__}"


def bf16_arithmetic() -> bool | None:
    """Whether the CPU computes in bf16 (AMX or AVX-512 BF16 on x86, the bf16 feature on Arm); None where its flags
    cannot be read. Without it PyTorch emulates bf16 at 1/20 to 1/450 of the fp32 rate (benchmarks/README.md)."""
    flags = set(cpu_info()[1])
    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"}) if flags else None

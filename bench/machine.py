"""What machine a bench ran on: every bench prints this line first, so numbers are never read without it."""

from __future__ import annotations

import os
import platform
import time

import torch

# The flags that decide which kernels (and so which precision) pay on a CPU.
FLAG_PREFIXES = ("avx", "amx", "sse4", "fma", "f16c")


def cpu_summary() -> str:
    """Model name, core count and the vector flags that matter, from /proc/cpuinfo (platform info elsewhere)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return f"{platform.processor() or platform.machine()}; {os.cpu_count()} cores"
    first = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    first = {k.strip(): v.strip() for k, v in first.items()}
    flags = sorted(f for f in first.get("flags", "").split() if f.startswith(FLAG_PREFIXES))
    return f"{first.get('model name', '?')}; {os.cpu_count()} cores; flags {' '.join(flags)}"


def machine_floor(device: str = "cpu") -> dict[str, float]:
    """Best of a few runs: square-matmul GFLOP/s in fp32 and bf16, and the read bandwidth in GB/s (summing 1 GiB)."""
    if device == "cpu":
        torch.set_num_threads(os.cpu_count())
    out: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(2048, 2048, device=device, dtype=dtype)
        b = torch.randn(2048, 2048, device=device, dtype=dtype)
        best = 0.0
        for _ in range(5):
            t = time.perf_counter()
            torch.mm(a, b)
            if device != "cpu":
                torch.cuda.synchronize()
            best = max(best, 2 * 2048**3 / (time.perf_counter() - t) / 1e9)
        out[str(dtype).removeprefix("torch.")] = best
    big = torch.ones(2**28, device=device)  # 1 GiB
    bandwidth = 0.0
    for _ in range(4):
        t = time.perf_counter()
        big.sum().item()
        bandwidth = max(bandwidth, big.numel() * 4 / (time.perf_counter() - t) / 1e9)
    out["read_gbs"] = bandwidth
    return out

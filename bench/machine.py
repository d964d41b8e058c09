"""What machine a bench ran on: every bench prints this line first, so numbers are never read without it."""

from __future__ import annotations

import os
import platform

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

"""Benchmark: build N emoji-world items (default 100k at 64×64) with 2 workers and print items/s.

Target (issue 3): 100,000 items at 64×64 in ≤ 2 minutes on 2 cores.

    .venv/bin/python bench/world.py [-n 100000] [--workers 2] [--size 64] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from crayonbox.data.world.build import build_world
from crayonbox.data.world.config import load_world_config


def main() -> None:
    """Build into a temp dir (or --keep DIR), then print items/s and the size on disk."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--config", type=Path, help="world config (default: the shipped default.yaml)")
    parser.add_argument("--keep", type=Path, help="build here and keep the output (must be empty or new)")
    args = parser.parse_args()

    config = load_world_config(args.config)
    config.size = args.size
    with tempfile.TemporaryDirectory(prefix="crayonbox-world-bench-") as tmp:
        out = args.keep or Path(tmp)
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        build_world(config, out, n=args.n, workers=args.workers, seed=0)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        size = sum(p.stat().st_size for p in out.iterdir())
    load = os.getloadavg()[0]
    print(f"world build: {args.n} items at {args.size}x{args.size}, {args.workers} workers, "
          f"{os.cpu_count()} CPUs visible, load {load:.1f}: {seconds:.1f} s wall, "
          f"{args.n / seconds:.0f} items/s")
    # On a shared machine wall time depends on the neighbours; CPU time does not (much), so also say what
    # the build costs in CPU and what that means on `workers` otherwise idle cores.
    idle_rate = args.n / (cpu / args.workers)
    print(f"cpu: {cpu:.1f} s ({cpu / args.n * 1000:.2f} ms/item) → {idle_rate:.0f} items/s on "
          f"{args.workers} idle cores; {size / 2**20:.0f} MiB on disk ({size / args.n / 1024:.1f} KiB/item)")


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the build's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()

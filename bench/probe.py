"""Probe throughput: blank-prompt images per second with the default model, stored exactly as the lab stores
them (decode, VQGAN, PNG, SQLite row). The claim to check: 5,000 images in ≤ 5 minutes on 2 cores (16.7/s).

    python bench/probe.py                      # default model, 1,000 images of "" at scale 10
    python bench/probe.py -n 5000 --workers 2  # the full claim, two single-thread worker processes
    python bench/probe.py --random-small       # a random model at the "small" presets (no default needed)

Prints wall-clock images/s and CPU seconds per image (the latter is what other load on the machine does not
change). The run folder is temporary unless --out is given.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from crayonbox.errors import CrayonboxError


def random_small_model(folder: Path) -> Path:
    """A model folder at the "small" presets with random weights: same shapes and so the same cost as the
    default model, for benching before it ships."""
    from crayonbox.train.random_model import random_model

    return random_model(folder, "small")


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints images/s and CPU seconds per image."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: the shipped default model)")
    parser.add_argument("--random-small", action="store_true",
                        help="bench a random model at the small presets")
    parser.add_argument("-n", type=int, default=1000, help="images (default 1000)")
    parser.add_argument("--prompt", default="", help='prompt to repeat (default "", the blank prompt)')
    parser.add_argument("--condition-scale", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--batch-images", type=int, default=256)
    parser.add_argument("--out", help="keep the run here (default: a temporary folder)")
    args = parser.parse_args(argv)

    from crayonbox.lab.families import PromptSpec
    from crayonbox.lab.probe import ProbeConfig, run_probe

    with tempfile.TemporaryDirectory(prefix="crayonbox-bench-probe-") as tmp:
        model = Path(args.model) if args.model else None
        if args.random_small:
            model = random_small_model(Path(tmp))
        config = ProbeConfig(model=model, prompts=[PromptSpec(args.prompt, "bench")], n=args.n,
                             condition_scales=(args.condition_scale,), workers=args.workers,
                             threads=args.threads, batch_images=args.batch_images)
        out = Path(args.out) if args.out else Path(tmp) / "run"
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        try:
            summary = run_probe(config, out)
        except CrayonboxError as e:
            print(f"bench/probe.py: {e}", file=sys.stderr)
            return 1
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    print(f"model: {'random small presets' if args.random_small else model or 'default'}; "
          f"workers {args.workers}, threads {args.threads or 'default'}, batch {args.batch_images}")
    print(f"{summary.generated} images of {args.prompt!r} at scale {args.condition_scale:g} in "
          f"{wall:.1f} s: {summary.generated / wall:.2f} images/s wall, "
          f"{cpu / max(1, summary.generated):.3f} CPU s/image; 5,000 would take "
          f"{5000 * wall / max(1, summary.generated) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

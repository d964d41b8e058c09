"""How fast is `crayonbox lab blame`? 30,000 captions × every candidate arm, target ≤ 60 s.

    python bench/blame.py [--captions CAPS] [--work DIR] [-n 30000]

Without --captions it builds a 16-px default world of n items and runs the default caption pipeline over it
(reused from --work on a second run). Prints the CPU, the seconds of the blame alone and captions/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from machine import cpu_summary

from crayonbox.lab.blame import blame_run, read_caption_run
from crayonbox.lab.blame_report import summaries
from crayonbox.lab.families import UNCONDITIONAL

TOKENIZER = Path(__file__).parents[1] / "crayonbox" / "assets" / "default" / "tokenizer"


def ensure_captions(work: Path, n: int) -> Path:
    from crayonbox.data.caption_run import run_caption_pipeline
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config

    caps = work / f"captions{n}"
    if not (caps / "caption_pipeline.json").exists():
        config = load_world_config()
        config.size = 16
        build_world(config, work / f"world{n}", n=n, workers=1, seed=0, progress=True)
        run_caption_pipeline(work / f"world{n}", caps, progress=True)
    return caps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/crayonbox-bench-blame"))
    parser.add_argument("-n", type=int, default=30_000)
    args = parser.parse_args()
    caps = args.captions or ensure_captions(args.work, args.n)
    _, items, _ = read_caption_run(caps)
    print(cpu_summary())
    start = time.perf_counter()
    result = blame_run(caps, TOKENIZER, ["", UNCONDITIONAL], progress=False)
    seconds = time.perf_counter() - start
    distinct = len({raw for _, raw, _ in items})
    print(f"{len(items)} captions ({distinct} distinct raw) × {len(result.table.arms)} arms + baseline, "
          f"2 prompts: {seconds:.1f} s, {len(items) / seconds:.0f} captions/s "
          f"(baseline disagreements with the provenance: {result.baseline_disagreements})")
    for summary in summaries(result.table):
        print(f"  {summary['label']}: {summary['matched']['n']} matched, groups {summary['groups']}")


if __name__ == "__main__":
    main()

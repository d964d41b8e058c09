"""Counterfactual retraining speed: a 4-arm × 2-seed ablation of a planted run. The claim to check: ≤ 20
minutes on 2 cores (the transformer retrains once per arm and seed; VQGAN codes and tokenizer are reused).

    python bench/ablate.py --run RUN                 # RUN from `crayonbox train all --recipe planted`
    python bench/ablate.py --run RUN --arms english_only:drop,english_only:off,dropout:off

Prints the machine, minutes per arm (wall, all seeds of the arm, two trained at once) and the total; the
ablation folder is temporary unless --out is given. A baseline arm at the run's own seed reuses the run's
model, so the baseline costs one retraining per extra seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_summary

from crayonbox.errors import CrayonboxError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a planted recipe run folder")
    parser.add_argument("--arms", default="english_only:drop,min_length:off,dropout:off",
                        help="three arms (plus the baseline: four)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from crayonbox.lab.ablation import RESULT_FILE, arm_slug, load_ablation
    from crayonbox.train.ablate import AblateConfig, run_ablation

    print(cpu_summary())
    out = args.out or Path(tempfile.mkdtemp(prefix="ablate-bench-")) / "abl"
    arms = [a for a in args.arms.split(",") if a]
    start = time.perf_counter()
    try:
        run_ablation(args.run, out, AblateConfig(arms=arms, seeds=args.seeds, n=args.n), progress=True)
    except CrayonboxError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    total = time.perf_counter() - start
    # Each job's result.json is written when the job ends: its mtime minus the start is the job's finish.
    for arm in ["baseline", *arms]:
        ends = [(out / "arms" / arm_slug(arm) / f"seed{s}" / RESULT_FILE).stat().st_mtime
                for s in load_ablation(out).manifest["seeds"]]
        print(f"{arm}: finished {(max(ends) - (time.time() - total)) / 60:.1f} min after the start")
    print(json.dumps({"arms": len(arms) + 1, "seeds": args.seeds, "minutes": round(total / 60, 2),
                      "minutes_per_arm": round(total / 60 / (len(arms) + 1), 2)}))
    for line in load_ablation(out).summary_lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

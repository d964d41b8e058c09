"""This checkout against another revision, on the same workloads, alternating, in one command: did a change
(a refactor, a new code path) keep the speed?

    python bench/against.py a421149                      # ~6 min on 2 cores
    python bench/against.py HEAD~3 --rounds 5 --workloads grid,mini1

Each revision is checked out once into a temporary git worktree; every run is a fresh subprocess that imports
crayonbox from that tree (PYTHONPATH), so the two share nothing but the machine. Runs alternate A, B, A, B, …
(these machines drift), and the table gives medians and the ratio this / other with the spread of the per-round
ratios. Workloads use only the API both sides have (`Pipeline.from_pretrained(folder, dtype)`, `pipe(prompt,
num_images, seed, callback)`):

- grid: the shipped default model, a 3×3 grid, float32 (the README's first command, minus loading);
- grid-fp16w: the same in fp16w;
- mini1 / mini9: random weights at the DALL·E mini shapes, 1 image / 9 images, the first 16 decode steps timed
  (ms per step), fp16w.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_summary

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ("grid", "grid-fp16w", "mini1", "mini9")

# Runs inside the checkout under test: prints one JSON number (seconds, or ms per step).
CHILD = r"""
import json, sys, time, tempfile
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[3]))
from crayonbox.pipeline import Pipeline
workload, model = sys.argv[1], sys.argv[2]
if workload.startswith("grid"):
    pipe = Pipeline.from_pretrained(model, dtype="fp16w" if workload.endswith("fp16w") else "float32")
    pipe("a dog on a yellow background", num_images=9, seed=0)  # warm-up
    t = time.perf_counter()
    pipe("a woman wearing a sari on a blue background", num_images=9, seed=1)
    print(json.dumps(time.perf_counter() - t))
else:
    pipe = Pipeline.from_pretrained(model, dtype="fp16w")
    n, times, last = (1 if workload == "mini1" else 9), [], [time.perf_counter()]

    class Stop(Exception):
        pass

    def step(i):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        if i >= 20:
            raise Stop

    try:
        pipe("a red dog", num_images=n, seed=0, callback=step)
    except Stop:
        pass
    print(json.dumps(1000 * sorted(times[4:])[len(times[4:]) // 2]))
"""


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(where), rev], check=True,
                   capture_output=True)
    return where


def mini_model(tree: Path, out: Path) -> Path:
    """Random DALL·E-mini-shape weights, written once by this checkout's converter (both sides read them)."""
    code = ("import sys, torch; from crayonbox.config import MODEL_PRESETS, VQGAN_PRESETS; "
            "from crayonbox.model.bart import DalleBart; from crayonbox.model.vqgan import VQGAN; "
            "from crayonbox.pipeline import Pipeline; from crayonbox.text.tokenizer import Tokenizer; "
            "from crayonbox import default_model_dir; torch.manual_seed(0); b = DalleBart(MODEL_PRESETS['mini']); "
            "b.init_weights(); v = VQGAN(VQGAN_PRESETS['f16_16384']); "
            "t = Tokenizer.from_folder(default_model_dir() / 'tokenizer'); "
            "Pipeline(b, v, t).save_pretrained(sys.argv[1], dtype=torch.float16)")
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    return out


def run(tree: Path, workload: str, model: Path, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, workload, str(model), str(threads)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(tree)}, check=False)
    if out.returncode:
        raise SystemExit(f"{workload} failed in {tree}:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("other", help="the revision to compare with (a commit, tag or branch)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}: choose from {', '.join(WORKLOADS)}")
    print(f"machine: {cpu_summary()}")
    with tempfile.TemporaryDirectory(prefix="crayonbox-against-") as tmp:
        other = worktree(args.other, Path(tmp) / "other")
        try:
            this = REPO
            default = this / "crayonbox" / "assets" / "default"
            mini = mini_model(this, Path(tmp) / "mini") if any(w.startswith("mini") for w in workloads) else None
            print(f"this: {REPO} (working tree); other: {args.other}; {args.rounds} rounds, alternating")
            print("| workload | unit | this (median) | other (median) | this / other | per-round ratios |")
            print("|---|---|---|---|---|---|")
            for w in workloads:
                model = default if w.startswith("grid") else mini
                pairs = [(run(this, w, model, args.threads), run(other, w, model, args.threads))
                         for _ in range(args.rounds)]
                ratios = [a / b for a, b in pairs]
                unit = "s per grid" if w.startswith("grid") else "ms per step"
                print(f"| {w} | {unit} | {statistics.median(a for a, _ in pairs):.3f} | "
                      f"{statistics.median(b for _, b in pairs):.3f} | {statistics.median(ratios):.3f} | "
                      f"{min(ratios):.3f}–{max(ratios):.3f} |", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(other)], check=False,
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a finer code grid costs the transformer: training throughput at small32's 8×8 codes against small32f2's
16×16 (same 32-px images), in one command.

    python bench/image_tokens.py                   # ~3 minutes on 2 cores
    python bench/image_tokens.py --steps 5 --repeats 3

Times full training steps (forward, backward, AdamW) of the default recipe's transformer (`small`, batch 64, 2,048
codes, 4,096 text ids) with the image sequence each VQGAN preset makes, in the precision `--precision auto`
picks on this machine, random inputs. The two alternate within each repeat and the best repeat counts. The
ratio is how many fewer captions the recipe's 68 transformer minutes would see with 16×16 codes. Run it on an
otherwise idle machine: beside another training job (threads oversubscribed) it read 0.63× where the idle
machine and the recipe itself give 0.34×.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from pathlib import Path

import torch
from machine import cpu_summary
from train_precision import samples_per_s, transformer_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crayonbox.config import VQGAN_PRESETS
from crayonbox.model.hardware import training_precision
from crayonbox.train.model import model_config

GRIDS = ("small32", "small32f2")  # 8×8 and 16×16 codes at 32 px


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per grid and repeat")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--codes", type=int, default=2048, help="codebook size (the default recipe's)")
    args = ap.parse_args()
    precision = training_precision("auto", torch.device("cpu"))
    print(f"machine: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"precision {precision}")
    tokenizer = types.SimpleNamespace(vocab_size=4096)  # model_config reads only its size
    steps = {}
    for preset in GRIDS:
        torch.manual_seed(0)
        vq = dataclasses.replace(VQGAN_PRESETS[preset], n_embed=args.codes)
        steps[preset] = (vq.tokens_side, *transformer_step(64, model_config("small", tokenizer, vq)))
    best = dict.fromkeys(GRIDS, 0.0)
    for _ in range(args.repeats):
        for preset, (_, model, loss) in steps.items():
            best[preset] = max(best[preset], samples_per_s(model, loss, precision, 64, args.steps))
    for preset, (side, _, _) in steps.items():
        print(f"{preset} ({side}×{side} = {side * side} image tokens): {best[preset]:.1f} captions/s")
    print(f"16×16 against 8×8: {best[GRIDS[1]] / best[GRIDS[0]]:.2f}× the captions per second")


if __name__ == "__main__":
    main()

"""Separate against packed weight-only projections: why weight-only modes pack q‖k‖v and fc0‖fc1.

    python bench/fused_projections.py                  # DALL·E mini shapes, ~3 minutes
    python bench/fused_projections.py --model mega --rounds 9 --step-rounds 5

A decode step's self-attention projects one input three times (q, k, v) and its GLU twice (fc0, fc1).
`quantize_linears` packs each group as one layer (model/packed_linear.py). Two measurements, each with rounds
alternated so that a noisy VM moves both sides alike:

- calls: those five fp16w calls per layer against two calls on the concatenated weights, over every decoder
  layer with its own random weights (so no layer's weights are still in cache), 2 rows (one image under
  guidance): the kernels alone.
- step: whole decode steps (fp16w, one image) of two decoders with the same random weights, one packed and one
  not, both in this process, at positions --position … +48: what a user's step gains, with attention, norms
  and Python around the calls.

Prints the CPU, medians, the effective read bandwidth of the calls and the ratios packed / separate.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from generate_vs_mindalle import SHAPES  # the DALL·E mini / mega shapes, defined once for the benches
from machine import cpu_summary

from crayonbox.config import MODEL_PRESETS
from crayonbox.model.bart import DalleBart
from crayonbox.model.packed_linear import quantize_linears

STEPS_PER_ROUND = 48


def time_calls(model: str, rounds: int, rows: int) -> None:
    s = SHAPES[model]
    d, g, layers = s["d"], s["glu"], s["layers"]
    pack, linear = torch.ops.quantized.linear_prepack_fp16, torch.ops.quantized.linear_dynamic_fp16
    torch.manual_seed(0)
    separate = [[pack(torch.randn(n, d), None) for n in (d, d, d, g, g)] for _ in range(layers)]
    packed = [[pack(torch.randn(3 * d, d), None), pack(torch.randn(2 * g, d), None)] for _ in range(layers)]
    x = torch.randn(rows, 1, d)
    times: dict[str, list[float]] = {"separate": [], "packed": []}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for name, weights in (("separate", separate), ("packed", packed)):
            start = time.perf_counter()
            for layer in weights:
                for w in layer:
                    linear(x, w)
            times[name].append(time.perf_counter() - start)
    streamed = layers * (3 * d * d + 2 * g * d) * 2  # fp16 weights read once
    median = {name: statistics.median(t[1:]) for name, t in times.items()}
    for name, t in median.items():
        print(f"calls {name:>9}: {1e3 * t:7.3f} ms a step ({streamed / t / 1e9:5.1f} GB/s of {streamed / 1e6:.0f} MB)")
    print(f"calls packed / separate = {median['packed'] / median['separate']:.3f}", flush=True)


@torch.inference_mode()
def time_steps(model: str, rounds: int, position: int) -> None:
    cfg = MODEL_PRESETS[model]
    torch.manual_seed(0)
    base = DalleBart(cfg)
    base.init_weights()
    base = base.half()
    decoders = {"separate": quantize_linears(copy.deepcopy(base), "fp16w", pack_together=False).decoder,
                "packed": quantize_linears(base, "fp16w").decoder}
    states = torch.randn(2, 12, cfg.d_model)  # one image under guidance: 2 rows, a 12-token prompt
    text_mask = torch.ones(2, 12, dtype=torch.bool)
    tokens = torch.full((2,), 5)
    caches = {name: decoder.new_cache(states, text_mask) for name, decoder in decoders.items()}
    for name, decoder in decoders.items():
        for p in range(position):
            decoder.step(tokens, torch.tensor([p, p]), caches[name])
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for r in range(rounds):
        for name in sorted(decoders, reverse=r % 2 == 1):  # who goes first alternates too
            start = time.perf_counter()
            for p in range(position, position + STEPS_PER_ROUND):
                decoders[name].step(tokens, torch.tensor([p, p]), caches[name])
            times[name].append((time.perf_counter() - start) / STEPS_PER_ROUND)
    ratios = sorted(a / b for a, b in zip(times["packed"], times["separate"], strict=True))
    for name, t in times.items():
        print(f"step  {name:>9}: {1e3 * statistics.median(t):7.2f} ms (positions {position}–{position + 47})")
    print(f"step  packed / separate = {statistics.median(ratios):.3f} "
          f"(per-round ratios {ratios[0]:.3f}–{ratios[-1]:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="mini")
    parser.add_argument("--rounds", type=int, default=40, help="alternated rounds of the calls")
    parser.add_argument("--rows", type=int, default=2, help="rows per call (2 per image under guidance)")
    parser.add_argument("--step-rounds", type=int, default=15, help="alternated rounds of decode steps (0: none)")
    parser.add_argument("--position", type=int, default=100, help="first decode position timed")
    args = parser.parse_args()
    if not 0 <= args.position <= 256 - STEPS_PER_ROUND:
        raise SystemExit(f"--position must be in [0, {256 - STEPS_PER_ROUND}]")
    print(cpu_summary(), flush=True)
    time_calls(args.model, args.rounds, args.rows)
    if args.step_rounds > 0:
        time_steps(args.model, args.step_rounds, args.position)


if __name__ == "__main__":
    main()

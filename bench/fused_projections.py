"""Separate against fused weight-only projections in one decode step's shapes: what fusing would buy.

    python bench/fused_projections.py                  # DALL·E mini shapes, ~1 minute
    python bench/fused_projections.py --model mega --rounds 20

A decode step's self-attention projects one input three times (q, k, v) and its GLU twice (fc0, fc1). This
times those five fp16w calls per layer against two calls on the concatenated weights (q‖k‖v, fc0‖fc1), over
every decoder layer with its own random weights (so no layer's weights are still in cache), 2 rows (one image
under guidance), rounds alternated so that a noisy VM moves both alike. Prints the CPU, the medians, the
effective read bandwidth of each and the ratio fused / separate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from generate_vs_mindalle import SHAPES  # the DALL·E mini / mega shapes, defined once for the benches
from machine import cpu_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="mini")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--rows", type=int, default=2, help="rows per call (2 per image under guidance)")
    args = parser.parse_args()
    print(cpu_summary(), flush=True)
    s = SHAPES[args.model]
    d, g, layers = s["d"], s["glu"], s["layers"]
    pack, linear = torch.ops.quantized.linear_prepack_fp16, torch.ops.quantized.linear_dynamic_fp16
    torch.manual_seed(0)
    separate = [[pack(torch.randn(n, d), None) for n in (d, d, d, g, g)] for _ in range(layers)]
    fused = [[pack(torch.randn(3 * d, d), None), pack(torch.randn(2 * g, d), None)] for _ in range(layers)]
    x = torch.randn(args.rows, 1, d)
    times: dict[str, list[float]] = {"separate": [], "fused": []}
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for name, weights in (("separate", separate), ("fused", fused)):
            start = time.perf_counter()
            for layer in weights:
                for w in layer:
                    linear(x, w)
            times[name].append(time.perf_counter() - start)
    streamed = layers * (3 * d * d + 2 * g * d) * 2  # fp16 weights read once
    median = {name: statistics.median(t[1:]) for name, t in times.items()}
    for name, t in median.items():
        print(f"{name:>9}: {1e3 * t:7.3f} ms a step ({streamed / t / 1e9:5.1f} GB/s of {streamed / 1e6:.0f} MB)")
    print(f"fused / separate = {median['fused'] / median['separate']:.3f} "
          f"({1e3 * (median['separate'] - median['fused']):.2f} ms a step saved)")


if __name__ == "__main__":
    main()

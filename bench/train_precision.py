"""Training throughput per autocast precision, on this machine, in one command: what `--precision auto` should be.

    python bench/train_precision.py                 # the default recipe's shapes, ~2 minutes on 2 cores
    python bench/train_precision.py --steps 20 --repeats 3

Times full training steps (forward, backward, AdamW) of the default recipe's transformer (`small`, batch 64,
64 text and 64 image positions) and VQGAN (`small32`, batch 16 at 32 px, encode → quantize → decode, L1) in
float32 and under bf16 autocast, with random inputs (speed does not depend on the data). Precisions alternate
within each repeat and the best repeat counts, so a noisy VM moves both alike. Prints samples/s per precision,
the ratio bf16 / fp32, and what `auto` picks on this machine (crayonbox.model.hardware.training_precision).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crayonbox.config import MODEL_PRESETS, VQGAN_PRESETS, ModelConfig
from crayonbox.model.bart import DalleBart
from crayonbox.model.hardware import training_precision
from crayonbox.model.vqgan import VQGAN
from crayonbox.train.runtime import autocast_for

PRECISIONS = ("float32", "bfloat16")


def transformer_step(batch: int, cfg: ModelConfig = MODEL_PRESETS["small"]
                     ) -> tuple[torch.nn.Module, Callable[[str], torch.Tensor]]:
    model = DalleBart(cfg).train()
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(0, cfg.text_vocab_size, (batch, cfg.text_length), generator=gen)
    mask = torch.ones(batch, cfg.text_length)
    image = torch.randint(0, cfg.image_vocab_size, (batch, cfg.image_length), generator=gen)

    def loss(precision: str) -> torch.Tensor:
        with autocast_for(precision, torch.device("cpu")):
            logits = model(text, mask, image)
        return F.cross_entropy(logits.float().flatten(0, 1), image.flatten())

    return model, loss


def vqgan_step(batch: int) -> tuple[torch.nn.Module, Callable[[str], torch.Tensor]]:
    cfg = VQGAN_PRESETS["small32"]
    model = VQGAN(cfg).train()
    x = torch.rand(batch, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def loss(precision: str) -> torch.Tensor:
        with autocast_for(precision, torch.device("cpu")):
            z = model.encode_latent(x)
        z = z.float()
        z_q = model.quantize.lookup(model.quantize.nearest(z).view(z.shape[0], -1), z.shape[-1])
        with autocast_for(precision, torch.device("cpu")):
            recon = model.decode_latent(z + (z_q - z).detach()).float()
        return (recon - x).abs().mean() + F.mse_loss(z, z_q)

    return model, loss


def samples_per_s(model: torch.nn.Module, loss: Callable[[str], torch.Tensor], precision: str, batch: int,
                  steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(2):  # warm-up: oneDNN picks and caches its kernels for these shapes
        loss(precision).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for _ in range(steps):
        loss(precision).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per precision and repeat")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"machine: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"auto picks: {training_precision('auto', torch.device('cpu'))}")
    for name, make, batch in (("transformer small, batch 64", transformer_step, 64),
                              ("VQGAN small32, batch 16", vqgan_step, 16)):
        torch.manual_seed(0)
        model, loss = make(batch)
        best = dict.fromkeys(PRECISIONS, 0.0)
        for _ in range(args.repeats):
            for precision in PRECISIONS:
                best[precision] = max(best[precision], samples_per_s(model, loss, precision, batch, args.steps))
        ratio = best["bfloat16"] / best["float32"]
        print(f"{name}: float32 {best['float32']:.1f} samples/s, bfloat16 autocast {best['bfloat16']:.1f} "
              f"samples/s, ratio bf16/fp32 {ratio:.2f}")


if __name__ == "__main__":
    main()

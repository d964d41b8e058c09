"""Does a precision mode keep the images? Each mode against float32, in one command, on this machine.

    python bench/precision_quality.py                          # auto, bfloat16, fp16w, int8; ~8 min on 2 cores
    python bench/precision_quality.py --modes bfloat16 --n 200 --skip-random

1. Teacher forcing: the float32 model draws image tokens for a set of prompts; every mode then scores the same
   token sequences. Per mode: KL(fp32 ‖ mode) of the next-token distributions (mean and 99th percentile, nats),
   top-1 agreement, and the overlap of the top-k sets (k = the model's top_k). On the trained default model
   (where the distributions are peaked, as in real use) and on random weights at the DALL·E mini shapes (where
   logits are nearly flat, so every near-tie flips top-1: KL is the measure that stays meaningful there).
   Beside it, the PSNR of the VQGAN's pixels in the mode's VQGAN dtype against fp32 (same tokens).
2. Judged adherence: `crayonbox eval`'s one-object "all attributes" share of the default model's images in each
   mode, with its 95 % Wilson interval, judged by the model's own judge.

A mode passes when its KL on the default model stays under the bounds and its adherence interval overlaps
float32's. The bounds are per image: an image is 256 draws, so a mean KL of k nats per position is 256·k nats
per image, and by Pinsker's inequality the mode's image distribution is within total variation √(128·k) of
float32's. KL_MEAN_BOUND = 0.1 / 256 keeps that under 0.22 (a mode whose images one could tell apart from
fp32's in more than about one case in five fails); KL_P99_BOUND is ten times it, for the worst positions.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from machine import cpu_summary

from crayonbox import default_model_dir
from crayonbox.config import MODEL_PRESETS
from crayonbox.lab.stats import wilson_interval
from crayonbox.model.bart import DalleBart
from crayonbox.model.hardware import auto_precision
from crayonbox.model.packed_linear import WEIGHT_ONLY, quantize_linears
from crayonbox.pipeline import DTYPES, Pipeline
from crayonbox.train.eval import evaluate

KL_MEAN_BOUND = 0.1 / 256  # nats per position: 0.1 nats per 256-token image
KL_P99_BOUND = 10 * KL_MEAN_BOUND
PROMPTS = ["a woman wearing a sari on a yellow background", "a red apple", "a dog on a blue background",
           "a man with dark skin tone wearing a kimono", "two cats on a white background", "", "a big green tree",
           "a woman with light skin tone on a black background"]


def distribution_gap(ref_logits: torch.Tensor, logits: torch.Tensor, k: int) -> dict[str, float]:
    """KL(ref ‖ other) per position (mean, p99), top-1 agreement and top-k set overlap."""
    ref_logp = torch.log_softmax(ref_logits.float(), -1).flatten(0, 1)
    logp = torch.log_softmax(logits.float(), -1).flatten(0, 1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).clamp_min(0).numpy()
    top_ref, top = ref_logp.topk(k, -1).indices, logp.topk(k, -1).indices
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_ref, top, strict=True)])
    return {"kl_mean": float(kl.mean()), "kl_p99": float(np.quantile(kl, 0.99)),
            "top1": float((ref_logp.argmax(-1) == logp.argmax(-1)).float().mean()), "topk_overlap": float(overlap)}


def transformer_mode(mode: str) -> str:
    return auto_precision().mode if mode == "auto" else mode


def vqgan_dtype(mode: str) -> torch.dtype:
    """The VQGAN's dtype in a mode, as Pipeline.from_pretrained sets it."""
    if mode == "auto":
        choice = auto_precision()
        return DTYPES[choice.vqgan or ("float32" if choice.mode in WEIGHT_ONLY else choice.mode)]
    return torch.float32 if mode in WEIGHT_ONLY else DTYPES[mode]


def vqgan_psnr(pipe: Pipeline, tokens: torch.Tensor, mode: str) -> float:
    vqgan = copy.deepcopy(pipe.vqgan).to(vqgan_dtype(mode))
    with torch.inference_mode():
        ref, out = pipe.vqgan.decode(tokens).float(), vqgan.decode(tokens).float()
    mse = float(((ref - out) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(1 / mse))


def in_mode(bart: DalleBart, mode: str) -> DalleBart:
    """A copy of `bart` in `mode`, the way Pipeline.from_pretrained converts it."""
    mode = transformer_mode(mode)
    model = DalleBart(bart.cfg)
    model.load_state_dict(bart.state_dict())
    return quantize_linears(model, mode) if mode in WEIGHT_ONLY else model.to(DTYPES[mode])


def teacher_forced(pipe: Pipeline, modes: list[str], images: int) -> dict[str, dict[str, float]]:
    out = pipe(PROMPTS, num_images=images, seed=0)
    enc = [pipe.tokenizer.encode(p) for p in PROMPTS for _ in range(images)]
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
    with torch.inference_mode():
        ref = pipe.bart(ids, mask, out.tokens)
        gaps = {m: distribution_gap(ref, in_mode(pipe.bart, m)(ids, mask, out.tokens), pipe.defaults.top_k or 50)
                for m in modes}
    for m in modes:
        gaps[m]["vqgan_psnr"] = vqgan_psnr(pipe, out.tokens, m)
    return gaps


def random_mini(modes: list[str], batch: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    bart = DalleBart(MODEL_PRESETS["mini"])
    bart.init_weights()
    bart.eval()
    ids = torch.randint(3, 1000, (batch, 64))
    mask = torch.ones_like(ids, dtype=torch.bool)
    tokens = torch.randint(0, bart.cfg.image_vocab_size, (batch, bart.cfg.image_length))
    with torch.inference_mode():
        ref = bart(ids, mask, tokens)
        return {m: distribution_gap(ref, in_mode(bart, m)(ids, mask, tokens), 256) for m in modes}


def adherence(model: Path, mode: str, n: int, tmp: Path) -> tuple[float, float, float]:
    result = evaluate(model, model / "judge", tmp / mode, world=model / "world.yaml", prompts=n, blank=2,
                      reference=10, dtype=mode,
                      progress=False)
    block = result["by_objects"]["1"]
    count, total = round(block["adherence"]["all"] * block["applies_to"]["all"]), block["applies_to"]["all"]
    interval = wilson_interval(count, total)
    return interval.estimate, interval.low, interval.high


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="auto,bfloat16,fp16w,int8")
    p.add_argument("--n", type=int, default=100, help="held-out one-object prompts judged per mode")
    p.add_argument("--images", type=int, default=4, help="images per prompt for teacher forcing")
    p.add_argument("--skip-random", action="store_true", help="skip the random mini-shape check (~1 GB RAM)")
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {cpu_summary()}")
    choice = auto_precision()
    print(f"auto here: {choice.mode} ({choice.reason})")
    model = Path(default_model_dir())
    pipe = Pipeline.from_pretrained(model)
    trained = teacher_forced(pipe, modes, args.images)
    random = {} if args.skip_random else random_mini(modes, 2)
    with tempfile.TemporaryDirectory(prefix="crayonbox-precision-") as tmp:
        judged = {m: adherence(model, m, args.n, Path(tmp)) for m in ["float32", *modes]}
    print(f"\nKL bounds: mean ≤ {KL_MEAN_BOUND:.2e}, p99 ≤ {KL_P99_BOUND:.2e} nats; adherence: one-object all "
          "attributes, "
          f"n = {args.n}, 95 % Wilson")
    print("| mode | default: KL mean | KL p99 | top-1 | top-k overlap | VQGAN PSNR dB | random mini: KL mean | "
          "top-1 | adherence [95 %] | passes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    f32 = judged["float32"]
    print(f"| float32 | 0 | 0 | 1 | 1 | ∞ | 0 | 1 | {f32[0]:.1%} [{f32[1]:.1%}, {f32[2]:.1%}] | reference |")
    for m in modes:
        t, r, a = trained[m], random.get(m), judged[m]
        passes = (t["kl_mean"] <= KL_MEAN_BOUND and t["kl_p99"] <= KL_P99_BOUND and a[1] <= f32[2]
                  and f32[1] <= a[2])
        rand = f"{r['kl_mean']:.2e} | {r['top1']:.4f}" if r else "– | –"
        name = f"auto ({choice.describe()})" if m == "auto" else m
        print(f"| {name} | {t['kl_mean']:.2e} | {t['kl_p99']:.2e} | {t['top1']:.4f} | {t['topk_overlap']:.4f} | "
              f"{t['vqgan_psnr']:.1f} | {rand} | {a[0]:.1%} [{a[1]:.1%}, {a[2]:.1%}] | "
              f"{'yes' if passes else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the VQGAN (image → codes → image) on a shard folder: `crayonbox train vqgan --data DIR --out DIR`.

What pays off on two CPU cores, in a few minutes, for flat emoji renders:
- reconstruction = L1 + L2 + an image-gradient L1 (edges of sprites stay sharp; a VGG perceptual loss needs
  pretrained weights we cannot download, and a GAN discriminator costs a second network per step);
- an EMA codebook (VQ-VAE-2): codes move to the mean of the encoder outputs assigned to them, no gradient,
  initialised by k-means on the first encoder outputs so every code starts in use;
- dead codes (unused for `dead_after` steps) restart at random encoder outputs of the current batch;
- a commitment loss pulls the encoder towards its codes; gradients pass the quantizer straight through.

OUT/vqgan/ is a model-folder component (config.json + model.safetensors, encoder included); OUT/report.json
holds held-out PSNR and codebook usage/perplexity; OUT/train/ the checkpoint, metrics.csv and a
reconstruction grid. Training resumes after kill -9 like the transformer's (see checkpoint.py).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from crayonbox.config import VQGAN_PRESETS, VQGANConfig, write_json
from crayonbox.data.shards import ProblemLog, decode_image, iter_items
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import make_grid, pixels_of, to_pil, to_unit
from crayonbox.model.vqgan import VQGAN
from crayonbox.model_folder import save_component
from crayonbox.outdir import claim_output_folder
from crayonbox.train import checkpoint as ckpt
from crayonbox.train.data import EpochSampler, held_out
from crayonbox.train.runtime import Dist, autocast_for
from crayonbox.train.schedule import StepPlan, WarmupCosine

# Shapes trained here: config.VQGAN_PRESETS ("small32" is the default model's, sized for the CPU budget).
TRAIN_VQGAN_PRESETS: dict[str, VQGANConfig] = VQGAN_PRESETS
VQGAN_KIND = "vqgan"  # the kind of output folder (crayonbox.outdir)
METRICS = ["step", "lr", "loss", "l1", "l2", "edge", "commit", "restarted", "eval_psnr", "eval_usage",
           "eval_perplexity", "samples_per_s", "elapsed_s"]


@dataclass
class VQGANTrainConfig:
    data: str = ""  # shard folder (webdataset tars; `crayonbox world build` or img2dataset output)
    out: str = ""  # output folder: vqgan/ component, report.json, train/
    preset: str = "small32"  # VQGAN shape: TRAIN_VQGAN_PRESETS (config.VQGAN_PRESETS plus small32)
    steps: int = 3000  # optimizer steps in all; 0 = as many as fit in --max-minutes (speed measured early on)
    batch_size: int = 32  # images per step
    learning_rate: float = 1e-3  # peak; warmup then cosine to a tenth
    warmup_steps: int = 100  # linear warmup from ~0 to learning_rate
    l2_weight: float = 1.0  # reconstruction = L1 + l2_weight·L2 + edge_weight·|∇x − ∇x̂|
    edge_weight: float = 0.5  # weight of the image-gradient L1 (sharp sprite edges)
    commitment: float = 0.25  # β of the commitment loss
    ema_decay: float = 0.99  # codebook EMA
    dead_after: int = 100  # steps without use before a code is restarted
    quantize_after: float = 0.0  # plain autoencoding (no quantizer) before the codebook is k-means'd in: steps,
    # or below 1 a share of the run (0.5 = the first half; with --steps 0 the share of the timed plan)
    kmeans_batches: int = 8  # batches of encoder outputs for the k-means init (0 = keep the random init)
    precision: str = "float32"  # autocast dtype: float32 | bfloat16
    eval_fraction: float = 0.02  # share of images held out (by key hash) for PSNR and usage
    eval_images: int = 512  # at most this many held-out images per evaluation
    eval_every: int = 250  # steps between evaluations (and at the end)
    checkpoint_every: int = 100  # steps between checkpoints (and at the end)
    seed: int = 0  # initial weights, k-means, batch order and code restarts all follow it
    resume: bool = False  # continue from OUT/train/checkpoint.pt
    max_minutes: float = 0.0  # stop (checkpoint + export) after this much training time; 0 = off
    threads: int = 0  # torch threads; 0 = all cores
    progress: bool = True  # tqdm progress bar


def load_images(folder: str | Path, resolution: int, progress: bool = True) -> tuple[list[str], Tensor]:
    """Every image of a shard folder as (keys, uint8 tensor (N, 3, res, res)); other sizes are resized."""
    problems = ProblemLog()
    keys, arrays = [], []
    for item in tqdm(iter_items(Path(folder), problems=problems), desc="reading images", unit="img",
                     disable=not progress):
        if not item.image:
            continue
        keys.append(item.key)
        arrays.append(pixels_of(decode_image(item), resolution))
    if not arrays:
        raise CrayonboxError(f"no images in {folder} ({problems.summary()}); build one with `crayonbox world "
                             "build --out DIR`")
    return keys, torch.from_numpy(np.stack(arrays))


class EMACodebook:
    """Codebook statistics for EMA updates and dead-code restarts (the weight is the model's codebook)."""

    def __init__(self, weight: Tensor, decay: float):
        self.weight, self.decay = weight, decay  # the embedding weight itself, updated in place
        self.cluster_size = torch.ones(weight.shape[0])
        self.embed_sum = weight.detach().clone()
        self.last_used = torch.zeros(weight.shape[0], dtype=torch.long)

    @torch.no_grad()
    def update(self, flat: Tensor, ids: Tensor, step: int) -> None:
        """Move every code towards the mean of the vectors assigned to it this step."""
        counts = torch.bincount(ids, minlength=self.weight.shape[0]).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, ids, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (n + self.weight.shape[0] * 1e-5) * n  # Laplace smoothing
        self.weight.copy_(self.embed_sum / smoothed[:, None])
        self.last_used[counts > 0] = step

    @torch.no_grad()
    def restart_dead(self, flat: Tensor, step: int, dead_after: int, gen: torch.Generator) -> int:
        """Re-seed codes unused for `dead_after` steps with random encoder outputs; returns how many."""
        dead = torch.nonzero(step - self.last_used > dead_after)[:, 0]
        if len(dead) == 0:
            return 0
        picks = flat[torch.randint(len(flat), (len(dead),), generator=gen)]
        self.weight[dead] = picks
        self.embed_sum[dead], self.cluster_size[dead], self.last_used[dead] = picks, 1.0, step
        return len(dead)

    def state_dict(self) -> dict:
        return {"cluster_size": self.cluster_size, "embed_sum": self.embed_sum, "last_used": self.last_used}

    def load_state_dict(self, state: dict) -> None:
        self.cluster_size, self.embed_sum, self.last_used = (state[k].clone() for k in
                                                             ("cluster_size", "embed_sum", "last_used"))


def kmeans(vectors: Tensor, k: int, iterations: int, gen: torch.Generator) -> Tensor:
    """Plain Lloyd's k-means from k random vectors; empty clusters keep their previous centre."""
    centres = vectors[torch.randperm(len(vectors), generator=gen)[:k]].clone()
    if len(centres) < k:  # fewer vectors than codes: repeat with a little noise
        extra = centres[torch.randint(len(centres), (k - len(centres),), generator=gen)]
        centres = torch.cat([centres, extra + 1e-3 * torch.randn(extra.shape, generator=gen)])
    for _ in range(iterations):
        ids = torch.cdist(vectors, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, ids, vectors)
        counts = torch.bincount(ids, minlength=k).float()
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


@torch.no_grad()
def init_codebook(model: VQGAN, codebook: EMACodebook, x: Tensor, gen: torch.Generator, step: int) -> None:
    """k-means the encoder outputs of `x` into the codebook (every code starts in use at `step`)."""
    z = model.encode_latent(x)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    codebook.weight.copy_(kmeans(flat, codebook.weight.shape[0], 10, gen))
    codebook.embed_sum.copy_(codebook.weight)
    codebook.cluster_size.fill_(1.0)
    codebook.last_used.fill_(step)


def edge_loss(x: Tensor, y: Tensor) -> Tensor:
    """L1 between the horizontal and vertical finite differences of two image batches."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


@torch.no_grad()
def evaluate(model: VQGAN, pixels: Tensor, batch: int = 64) -> dict[str, float]:
    """Held-out PSNR (mean over images, recon clamped to [0, 1]), codebook usage and perplexity."""
    was_training = model.training
    model.eval()
    psnrs, counts = [], torch.zeros(model.cfg.n_embed)
    for chunk in pixels.split(batch):
        x = to_unit(chunk)
        ids = model.encode(x)
        recon = model.decode(ids)
        mse = (recon - x).pow(2).flatten(1).mean(1).clamp(min=1e-10)
        psnrs.append(10 * torch.log10(1 / mse))
        counts += torch.bincount(ids.flatten(), minlength=model.cfg.n_embed).float()
    model.train(was_training)
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"eval_psnr": float(torch.cat(psnrs).mean()), "eval_usage": float((counts > 0).float().mean()),
            "eval_perplexity": float(entropy.exp())}


def save_reconstructions(model: VQGAN, pixels: Tensor, path: Path) -> None:
    """Originals (top row) above their reconstructions (bottom row), as one PNG."""
    with torch.no_grad():
        model.eval()
        x = to_unit(pixels[:8])
        recon = model.decode(model.encode(x))
        model.train()
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(to_pil(x) + to_pil(recon), columns=len(x)).save(path)


def train_vqgan(cfg: VQGANTrainConfig) -> dict:
    """Train (or resume), export OUT/vqgan/ and OUT/report.json; returns the report."""
    if not (cfg.data and cfg.out):
        raise CrayonboxError("give --data (a shard folder) and --out")
    presets = {**TRAIN_VQGAN_PRESETS, **VQGAN_PRESETS}  # VQGAN_PRESETS read now: tests add to it
    if cfg.preset not in presets:
        raise CrayonboxError(f"unknown VQGAN preset {cfg.preset!r}; choose one of {sorted(presets)}")
    autocast_for(cfg.precision, torch.device("cpu"))  # reject a bad --precision before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out, work = Path(cfg.out), Path(cfg.out) / "train"
    ckpt_path = work / "checkpoint.pt"
    claim_output_folder(out, VQGAN_KIND, "train/checkpoint.pt")  # never into someone's folder
    if ckpt_path.exists() and not cfg.resume:
        raise CrayonboxError(f"{out} already holds a VQGAN run: pass --resume to continue it, or choose "
                             "another --out")
    vq_cfg: VQGANConfig = presets[cfg.preset]
    keys, pixels = load_images(cfg.data, vq_cfg.resolution, cfg.progress)
    split = held_out(keys, cfg.eval_fraction)
    train_pixels, eval_pixels = pixels[~split], pixels[split][:cfg.eval_images]
    if len(train_pixels) == 0 or len(eval_pixels) == 0:
        raise CrayonboxError(f"{len(pixels)} images leave an empty train or eval split; use more images or "
                             "change --eval-fraction")
    sampler = EpochSampler(len(train_pixels), cfg.seed)

    torch.manual_seed(cfg.seed)
    model = VQGAN(vq_cfg).train()
    model.quantize.embedding.weight.requires_grad_(False)  # the codebook follows the EMA, not the optimizer
    codebook = EMACodebook(model.quantize.embedding.weight.data, cfg.ema_decay)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  betas=(0.9, 0.99), weight_decay=0.0)
    shape = WarmupCosine(cfg.warmup_steps, cfg.steps, 0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    if cfg.steps == 0 and cfg.max_minutes <= 0:
        raise CrayonboxError("--steps 0 means 'as many as fit in the time budget': give --max-minutes too")
    restart_gen = torch.Generator().manual_seed(cfg.seed)
    identity = {"images": len(train_pixels), "batch_size": cfg.batch_size, "seed": cfg.seed}
    start, elapsed_before = 0, 0.0
    if cfg.resume and ckpt_path.exists():
        state = ckpt.load_checkpoint(ckpt_path)
        ckpt.check_same_run(state, identity)
        model.load_state_dict(state["model"])
        codebook.load_state_dict(state["codebook"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        restart_gen.set_state(state["restart_rng"])
        ckpt.restore_rng(state["rng"])
        start, elapsed_before = int(state["step"]), float(state["elapsed_s"])
    ckpt.remove_stale_temporaries(work)
    log = ckpt.MetricsLog(work / "metrics.csv", METRICS, resume_step=start if cfg.resume else None)

    plan, single = StepPlan(shape, cfg.max_minutes, start), Dist(0, 1, torch.device("cpu"))
    bar = tqdm(initial=start, total=shape.total or None, desc="train vqgan", unit="step",
               disable=not cfg.progress)
    started, done, report = time.perf_counter(), start, {}
    def quantize_from() -> float:
        """The first quantized step (inf while a share-of-the-run start waits for the timed plan)."""
        if cfg.quantize_after >= 1 or cfg.quantize_after == 0:
            return int(cfg.quantize_after)
        return int(cfg.quantize_after * shape.total) if shape.total else math.inf

    while shape.total == 0 or done < shape.total:
        step, tick = done, time.perf_counter()
        if step == quantize_from() and cfg.kmeans_batches > 0:  # codes start at the encoder's outputs
            rows = torch.cat([sampler.rows(step + i, cfg.batch_size) for i in range(cfg.kmeans_batches)])
            init_codebook(model, codebook, to_unit(train_pixels[rows]), restart_gen, step)
        x = to_unit(train_pixels[sampler.rows(step, cfg.batch_size)])
        with autocast_for(cfg.precision, x.device):
            z = model.encode_latent(x)
        z = z.float()
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        ids = model.quantize.nearest(z).flatten()
        z_q = model.quantize.lookup(ids.view(z.shape[0], -1), z.shape[-1])
        quantizing = step >= quantize_from()
        commit = F.mse_loss(z, z_q) if quantizing else torch.zeros(())
        with autocast_for(cfg.precision, x.device):  # straight-through estimator once quantizing
            recon = model.decode_latent(z + (z_q - z).detach() if quantizing else z).float()
        l1, l2, edge = (recon - x).abs().mean(), F.mse_loss(recon, x), edge_loss(recon, x)
        loss = l1 + cfg.l2_weight * l2 + cfg.edge_weight * edge + cfg.commitment * commit
        loss.backward()
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        restarted = 0
        if quantizing:
            codebook.update(flat.detach(), ids, step)
            restarted = codebook.restart_dead(flat.detach(), step, cfg.dead_after, restart_gen)
        done = step + 1
        elapsed = elapsed_before + time.perf_counter() - started
        row = {"step": done, "lr": lr, "restarted": restarted, "elapsed_s": round(elapsed, 3),
               "samples_per_s": cfg.batch_size / (time.perf_counter() - tick),
               **{k: v.item() for k, v in (("loss", loss), ("l1", l1), ("l2", l2), ("edge", edge),
                                           ("commit", commit))}}
        plan.update(done, time.perf_counter() - started, elapsed, single)
        bar.total = shape.total or None
        bar.update(1)
        out_of_time = cfg.max_minutes > 0 and elapsed >= cfg.max_minutes * 60
        finished = done == shape.total or out_of_time
        if done % cfg.eval_every == 0 or finished:
            report = evaluate(model, eval_pixels)
            row.update(report)
            bar.set_postfix(psnr=f"{report['eval_psnr']:.2f}", usage=f"{report['eval_usage']:.2f}")
        log.write(row)
        if done % cfg.checkpoint_every == 0 or finished:
            ckpt.save_checkpoint(ckpt_path, {
                "step": done, "elapsed_s": elapsed, "model": model.state_dict(),
                "codebook": codebook.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                "restart_rng": restart_gen.get_state(), "rng": ckpt.capture_rng(), "data": identity})
        if out_of_time:
            break
    bar.close()
    log.close()

    report = report or evaluate(model, eval_pixels)
    rows = ckpt.read_metrics(work / "metrics.csv")
    report.update({"steps": done, "planned_steps": shape.total, "images": {"train": len(train_pixels),
                   "eval": len(eval_pixels)}, "train_seconds": float(rows[-1]["elapsed_s"]) if rows else 0.0,
                   "restarted_codes": sum(int(r["restarted"]) for r in rows),
                   "data": str(Path(cfg.data).resolve()),
                   "config": dataclasses.asdict(cfg), "vqgan_config": vq_cfg.to_dict()})
    save_component(out, "vqgan", vq_cfg.to_dict(), model.state_dict())
    write_json(out / "report.json", report)
    save_reconstructions(model, eval_pixels, work / "reconstructions.png")
    if not math.isfinite(report["eval_psnr"]):
        raise CrayonboxError("VQGAN training diverged (PSNR is not finite); lower --learning-rate")
    return report

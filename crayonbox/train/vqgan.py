"""Train the VQGAN (image → codes → image) on a shard folder: `crayonbox train vqgan --data DIR --out DIR`.

What pays off on two CPU cores, in a few minutes, for flat emoji renders:
- reconstruction = L1 + L2 + an image-gradient L1 (edges of sprites stay sharp; a VGG perceptual loss needs
  pretrained weights we cannot download, and a GAN discriminator costs a second network per step);
- an object-aware weight (as Make-A-Scene's VQ-IMG weights faces and objects): pixels inside the objects'
  boxes, where the data says where they are (world items' `bbox`), count `object_weight` times as much as the
  background. Uniformly weighted, a small VQGAN spends its codes on the high-contrast stripes and checks of the
  backgrounds and blurs the faces, whose few pixels carry gender and skin tone;
- an EMA codebook (VQ-VAE-2): codes move to the mean of the encoder outputs assigned to them, no gradient,
  initialised by k-means on the first encoder outputs so every code starts in use;
- dead codes (unused for `dead_after` steps) restart at random encoder outputs of the current batch;
- a commitment loss pulls the encoder towards its codes; gradients pass the quantizer straight through;
- `--finetune-decoder`: a trained VQGAN's decoder alone trains on (as Stable Diffusion's fine-tuned VAE decoders
  did), so codes stay as they were and a transformer trained on them keeps its meaning: a cheap way to sharpen
  the pixels (say with a larger `--object-weight`) of a model that is already trained.

OUT/vqgan/ is a model-folder component (config.json + model.safetensors, encoder included); OUT/report.json
holds held-out PSNR and codebook usage/perplexity; OUT/train/ the checkpoint, metrics.csv and a
reconstruction grid. The loss is the `VQGANTask` that train/loop.py's `TrainingLoop` runs (resume, schedule,
checkpoints, time budget, log), so training resumes after kill -9 like the transformer's. The options are
`VQGANTrainConfig` (train/configs.py).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from crayonbox.config import VQGAN_PRESETS, VQGANConfig, write_json
from crayonbox.data.shards import ProblemLog, decode_image, iter_items
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import make_grid, pixels_of, to_pil, to_unit
from crayonbox.model.vqgan import VQGAN
from crayonbox.model.vqgan_io import load_vqgan
from crayonbox.model_folder import save_component
from crayonbox.train import checkpoint as ckpt
from crayonbox.train.configs import VQGANTrainConfig
from crayonbox.train.data import EpochSampler, held_out
from crayonbox.train.loop import LoopSettings, Task, TrainingLoop, check_run_options, claim_run_folder
from crayonbox.train.runtime import autocast_for, single_process

# Shapes trained here: config.VQGAN_PRESETS ("small32" is the default model's, sized for the CPU budget).
TRAIN_VQGAN_PRESETS: dict[str, VQGANConfig] = VQGAN_PRESETS
VQGAN_KIND = "vqgan"  # the kind of output folder (crayonbox.outdir)
METRICS = ["step", "lr", "loss", "l1", "l2", "edge", "commit", "restarted", "eval_psnr", "eval_psnr_objects",
           "eval_usage", "eval_perplexity", "samples_per_s", "elapsed_s"]


def object_mask(meta: dict, resolution: int) -> np.ndarray | None:
    """(res, res) bool: the pixels inside the boxes of an item's objects (world ground truth `bbox`, in px of
    the `size` it was drawn at), or None when its metadata says nothing about where objects are."""
    world = meta.get("world") or {}
    objects, size = world.get("objects"), world.get("size")
    if objects is None or not size:
        return None
    mask = np.zeros((resolution, resolution), dtype=bool)
    scale = resolution / size
    for obj in objects:
        x0, y0, x1, y1 = obj["bbox"]
        mask[math.floor(y0 * scale):math.ceil(y1 * scale), math.floor(x0 * scale):math.ceil(x1 * scale)] = True
    return mask


def load_images(folder: str | Path, resolution: int, progress: bool = True,
                with_masks: bool = False) -> tuple[list[str], Tensor, Tensor | None]:
    """Every image of a shard folder as (keys, uint8 tensor (N, 3, res, res), object masks); other sizes are
    resized. The masks (bool (N, 1, res, res), `object_mask`) come only `with_masks` and only when every
    item's metadata places its objects (None otherwise)."""
    problems = ProblemLog()
    keys, arrays, masks = [], [], []
    for item in tqdm(iter_items(Path(folder), problems=problems), desc="reading images", unit="img",
                     disable=not progress):
        if not item.image:
            continue
        keys.append(item.key)
        arrays.append(pixels_of(decode_image(item), resolution))
        if with_masks:
            masks.append(object_mask(item.meta, resolution))
    if not arrays:
        raise CrayonboxError(f"no images in {folder} ({problems.summary()}); build one with `crayonbox world "
                             "build --out DIR`")
    placed = with_masks and all(m is not None for m in masks)
    return keys, torch.from_numpy(np.stack(arrays)), torch.from_numpy(np.stack(masks))[:, None] if placed else None


class EMACodebook:
    """Codebook statistics for EMA updates and dead-code restarts (the weight is the model's codebook)."""

    def __init__(self, weight: Tensor, decay: float):
        self.weight, self.decay = weight, decay  # the embedding weight itself, updated in place
        self.cluster_size = torch.ones(weight.shape[0], device=weight.device)
        self.embed_sum = weight.detach().clone()
        self.last_used = torch.zeros(weight.shape[0], dtype=torch.long, device=weight.device)

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
        self.cluster_size, self.embed_sum, self.last_used = (state[k].to(self.weight.device, copy=True) for k in
                                                             ("cluster_size", "embed_sum", "last_used"))


def kmeans(vectors: Tensor, k: int, iterations: int, gen: torch.Generator) -> Tensor:
    """Plain Lloyd's k-means from k random vectors; empty clusters keep their previous centre."""
    centres = vectors[torch.randperm(len(vectors), generator=gen)[:k]].clone()
    if len(centres) < k:  # fewer vectors than codes: repeat with a little noise
        extra = centres[torch.randint(len(centres), (k - len(centres),), generator=gen)]
        centres = torch.cat([centres, extra + 1e-3 * torch.randn(extra.shape, generator=gen).to(extra.device)])
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


def pixel_weights(masks: Tensor | None, object_weight: float) -> Tensor | None:
    """Per-pixel loss weights (N, 1, H, W): `object_weight` inside the objects' boxes, 1 outside, scaled to a
    mean of 1 per batch (so the loss, and the learning rate that suits it, keep their size); None = uniform."""
    if masks is None or object_weight == 1.0:
        return None
    weights = 1.0 + (object_weight - 1.0) * masks.float()
    return weights / weights.mean()


def reconstruction_losses(recon: Tensor, x: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(L1, L2, image-gradient L1) between two image batches, each weighted per pixel when `weights` are given
    (a difference between two neighbours takes the mean of their weights)."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    if weights is None:
        return ((recon - x).abs().mean(), F.mse_loss(recon, x),
                (dx(recon) - dx(x)).abs().mean() + (dy(recon) - dy(x)).abs().mean())
    wx = (weights[..., :, 1:] + weights[..., :, :-1]) / 2
    wy = (weights[..., 1:, :] + weights[..., :-1, :]) / 2
    return ((weights * (recon - x).abs()).mean(), (weights * (recon - x).pow(2)).mean(),
            (wx * (dx(recon) - dx(x)).abs()).mean() + (wy * (dy(recon) - dy(x)).abs()).mean())


@torch.no_grad()
def evaluate(model: VQGAN, pixels: Tensor, masks: Tensor | None = None, batch: int = 64) -> dict[str, float]:
    """Held-out PSNR (mean over images, recon clamped to [0, 1]), codebook usage and perplexity; with object
    masks also the PSNR over the pixels inside the objects' boxes (pooled over the images)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    psnrs, counts = [], torch.zeros(model.cfg.n_embed, device=device)
    object_error, object_pixels = 0.0, 0.0
    for i, chunk in enumerate(pixels.split(batch)):
        x = to_unit(chunk.to(device))
        ids = model.encode(x)
        recon = model.decode(ids)
        error = (recon - x).pow(2)
        psnrs.append(10 * torch.log10(1 / error.flatten(1).mean(1).clamp(min=1e-10)))
        counts += torch.bincount(ids.flatten(), minlength=model.cfg.n_embed).float()
        if masks is not None:
            inside = masks[i * batch:(i + 1) * batch].to(device).float()
            object_error += float((error * inside).sum())
            object_pixels += float(inside.sum()) * x.shape[1]
    model.train(was_training)
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    result = {"eval_psnr": float(torch.cat(psnrs).mean()), "eval_usage": float((counts > 0).float().mean()),
              "eval_perplexity": float(entropy.exp())}
    if object_pixels:
        result["eval_psnr_objects"] = 10 * math.log10(object_pixels / max(object_error, 1e-10))
    return result


def save_reconstructions(model: VQGAN, pixels: Tensor, path: Path) -> None:
    """Originals (top row) above their reconstructions (bottom row), as one PNG."""
    with torch.no_grad():
        model.eval()
        x = to_unit(pixels[:8].to(next(model.parameters()).device))
        recon = model.decode(model.encode(x))
        model.train()
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(to_pil(x) + to_pil(recon), columns=len(x)).save(path)


class VQGANTask(Task):
    """Reconstruction + commitment loss of the VQGAN, with its EMA codebook: plain autoencoding until
    `quantize_after`, then k-means'd codes, a straight-through quantizer and dead-code restarts."""

    def __init__(self, cfg: VQGANTrainConfig, model: VQGAN, train_pixels: Tensor, eval_pixels: Tensor,
                 train_masks: Tensor | None = None, eval_masks: Tensor | None = None):
        """`train_pixels` / `eval_pixels` stay on the CPU (uint8), like their object masks (bool, or None when
        the data does not place its objects); each batch moves to the model's device."""
        self.cfg, self.model, self.train_pixels, self.eval_pixels = cfg, model, train_pixels, eval_pixels
        self.train_masks, self.eval_masks = train_masks, eval_masks
        self.device = next(model.parameters()).device
        self.sampler = EpochSampler(len(train_pixels), cfg.seed)
        self.codebook = EMACodebook(model.quantize.embedding.weight.data, cfg.ema_decay)
        self.restart_gen = torch.Generator().manual_seed(cfg.seed)
        self.frozen_codes = bool(cfg.finetune_decoder)  # encoder and codebook fixed: decoder-only training
        self._assigned: tuple[Tensor, Tensor] | None = None  # this step's encoder outputs and their codes

    def quantize_from(self) -> float:
        """The first quantized step (inf while a share-of-the-run start waits for the timed plan)."""
        cfg, total = self.cfg, self.loop.shape.total
        if self.frozen_codes:
            return 0
        if cfg.quantize_after >= 1 or cfg.quantize_after == 0:
            return int(cfg.quantize_after)
        return int(cfg.quantize_after * total) if total else math.inf

    def forward_backward(self, step: int, model: nn.Module) -> dict[str, Any]:
        cfg, sampler = self.cfg, self.sampler
        # codes start at the encoder's outputs (a fine-tuned decoder keeps its base's)
        if step == self.quantize_from() and cfg.kmeans_batches > 0 and not self.frozen_codes:
            rows = torch.cat([sampler.rows(step + i, cfg.batch_size) for i in range(cfg.kmeans_batches)])
            init_codebook(self.model, self.codebook, to_unit(self.train_pixels[rows].to(self.device)),
                          self.restart_gen, step)
        rows = sampler.rows(step, cfg.batch_size)
        x = to_unit(self.train_pixels[rows].to(self.device))
        masks = None if self.train_masks is None else self.train_masks[rows].to(self.device)
        with autocast_for(cfg.precision, x.device):
            z = self.model.encode_latent(x)
        z = z.float()
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        ids = self.model.quantize.nearest(z).flatten()
        z_q = self.model.quantize.lookup(ids.view(z.shape[0], -1), z.shape[-1])
        quantizing = step >= self.quantize_from()
        commit = F.mse_loss(z, z_q) if quantizing else torch.zeros(())
        with autocast_for(cfg.precision, x.device):  # straight-through estimator once quantizing
            recon = self.model.decode_latent(z + (z_q - z).detach() if quantizing else z).float()
        l1, l2, edge = reconstruction_losses(recon, x, pixel_weights(masks, cfg.object_weight))
        loss = l1 + cfg.l2_weight * l2 + cfg.edge_weight * edge + cfg.commitment * commit
        loss.backward()
        self._assigned = (flat.detach(), ids) if quantizing and not self.frozen_codes else None
        return {"loss": loss, "l1": l1, "l2": l2, "edge": edge, "commit": commit}

    def after_update(self, step: int, row: dict[str, Any]) -> None:
        row["restarted"] = 0
        if self._assigned is not None:  # the codebook follows the EMA, not the optimizer
            flat, ids = self._assigned
            self.codebook.update(flat, ids, step)
            row["restarted"] = self.codebook.restart_dead(flat, step, self.cfg.dead_after, self.restart_gen)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate(self.model, self.eval_pixels, self.eval_masks)

    def postfix(self, row: dict[str, Any], evaluation: dict[str, float]) -> dict[str, str]:
        if not evaluation:
            return {}
        return {"psnr": f"{evaluation['eval_psnr']:.2f}", "usage": f"{evaluation['eval_usage']:.2f}"}

    def extra_state(self) -> dict[str, Any]:
        return {"codebook": self.codebook.state_dict(), "restart_rng": self.restart_gen.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.codebook.load_state_dict(state["codebook"])
        self.restart_gen.set_state(state["restart_rng"])


def train_vqgan(cfg: VQGANTrainConfig) -> dict:
    """Train (or resume), export OUT/vqgan/ and OUT/report.json; returns the report."""
    if not (cfg.data and cfg.out):
        raise CrayonboxError("give --data (a shard folder) and --out")
    presets = {**TRAIN_VQGAN_PRESETS, **VQGAN_PRESETS}  # VQGAN_PRESETS read now: tests add to it
    if cfg.preset not in presets:
        raise CrayonboxError(f"unknown VQGAN preset {cfg.preset!r}; choose one of {sorted(presets)}")
    check_run_options(cfg.precision, cfg.steps, cfg.max_minutes)
    dist = single_process(cfg.threads, cfg.device)
    vq_cfg: VQGANConfig = presets[cfg.preset]
    if cfg.n_embed < 0 or cfg.n_embed == 1:
        raise CrayonboxError(f"--n-embed must be at least 2 (or 0 for the preset's {vq_cfg.n_embed}), "
                             f"got {cfg.n_embed}")
    if cfg.n_embed:
        vq_cfg = dataclasses.replace(vq_cfg, n_embed=cfg.n_embed)
    if cfg.object_weight <= 0:
        raise CrayonboxError(f"--object-weight must be positive, got {cfg.object_weight}")
    base = None
    if cfg.finetune_decoder:
        base, _ = load_vqgan(cfg.finetune_decoder)
        if cfg.n_embed and cfg.n_embed != base.cfg.n_embed:
            raise CrayonboxError(f"--n-embed {cfg.n_embed} differs from the {base.cfg.n_embed} codes of "
                                 f"{cfg.finetune_decoder}, whose codebook --finetune-decoder keeps; leave it out")
        vq_cfg = base.cfg
    out, work = Path(cfg.out), Path(cfg.out) / "train"
    claim_run_folder(out, VQGAN_KIND, cfg.resume, "a VQGAN run")
    keys, pixels, masks = load_images(cfg.data, vq_cfg.resolution, cfg.progress, with_masks=True)
    split = held_out(keys, cfg.eval_fraction)
    train_pixels, eval_pixels = pixels[~split], pixels[split][:cfg.eval_images]
    if masks is None and cfg.object_weight != 1.0:
        raise CrayonboxError(f"--object-weight {cfg.object_weight:g} needs every item's objects placed (world "
                             f"metadata with a bbox per object); {cfg.data} does not say where its objects are, "
                             "so train it with --object-weight 1")
    train_masks = None if masks is None else masks[~split]
    eval_masks = None if masks is None else masks[split][:cfg.eval_images]
    if len(train_pixels) == 0 or len(eval_pixels) == 0:
        raise CrayonboxError(f"{len(pixels)} images leave an empty train or eval split; use more images or "
                             "change --eval-fraction")

    torch.manual_seed(cfg.seed)
    model = VQGAN(vq_cfg) if base is None else base
    model.quantize.embedding.weight.requires_grad_(False)  # the codebook follows the EMA, not the optimizer
    if base is not None:  # decoder-only: the encoder side is frozen, so every image keeps its codes
        for part in (model.encoder, model.quant_conv):
            part.requires_grad_(False)
    model = model.train().to(dist.device)
    task = VQGANTask(cfg, model, train_pixels, eval_pixels, train_masks, eval_masks)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  betas=(0.9, 0.99), weight_decay=0.0)
    settings = LoopSettings(
        out=out, name="train vqgan", steps=cfg.steps, warmup_steps=cfg.warmup_steps, min_lr_ratio=0.1,
        batch_size=cfg.batch_size, max_minutes=cfg.max_minutes, eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every, metrics=METRICS,
        identity={"images": len(train_pixels), "batch_size": cfg.batch_size, "seed": cfg.seed,
                  "codebook": vq_cfg.n_embed, **({"finetune_decoder": cfg.finetune_decoder} if base else {})},
        resume=cfg.resume, progress=cfg.progress)
    result = TrainingLoop(settings, dist, task, optimizer).run()

    report = dict(result.evaluation)
    rows = ckpt.read_metrics(work / "metrics.csv")
    report.update({"steps": result.steps, "planned_steps": result.planned,
                   "images": {"train": len(train_pixels), "eval": len(eval_pixels)},
                   "train_seconds": float(rows[-1]["elapsed_s"]) if rows else 0.0,
                   "restarted_codes": sum(int(r["restarted"]) for r in rows),
                   "data": str(Path(cfg.data).resolve()),
                   "finetuned_from": str(Path(cfg.finetune_decoder).resolve()) if base is not None else None,
                   "config": dataclasses.asdict(cfg), "vqgan_config": vq_cfg.to_dict()})
    save_component(out, "vqgan", vq_cfg.to_dict(), model.state_dict())
    write_json(out / "report.json", report)
    save_reconstructions(model, eval_pixels, work / "reconstructions.png")
    if not math.isfinite(report["eval_psnr"]):
        raise CrayonboxError("VQGAN training diverged (PSNR is not finite); lower --learning-rate")
    return report

"""Train the DALL·E mini transformer (`DalleBart`) on a token parquet: nanoGPT's train.py for image tokens.

    crayonbox train model --tokens tokens.parquet --tokenizer TOK --vqgan VQ --out MODEL [--preset small]
    torchrun --standalone --nproc_per_node=2 -m crayonbox.train.model --tokens … --out MODEL   # DDP

Top to bottom: the model's shape and optimizer, its loss, evaluation and sample grids (the `TransformerTask`
that train/loop.py's `TrainingLoop` runs: resume, schedule, checkpoints, time budget, log), then `train()`:
data, model, the loop, export. The options are `TrainConfig` (train/configs.py). DDP is on when torchrun sets
WORLD_SIZE (gloo on CPU, nccl on GPU); the global batch is split evenly over the processes, so N processes
follow the same loss curve as one.

MODEL ends up a complete model folder (`Pipeline.from_pretrained(MODEL)` loads it); MODEL/train/ holds the
checkpoint, metrics.csv (+ TensorBoard events when installed) and sample grids. Ship MODEL without train/.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crayonbox.config import MODEL_PRESETS, ModelConfig, VQGANConfig, atomic_write
from crayonbox.errors import CrayonboxError
from crayonbox.model.bart import DalleBart
from crayonbox.model.images import make_grid
from crayonbox.model.vqgan_io import load_vqgan
from crayonbox.model_folder import save_component, write_pipeline_json
from crayonbox.pipeline import Pipeline
from crayonbox.sample import SamplingSettings
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train import checkpoint as ckpt
from crayonbox.train.configs import TrainConfig
from crayonbox.train.data import Batch, TokenDataset, blank_draws, held_out, read_token_parquet
from crayonbox.train.loop import LoopSettings, Task, TrainingLoop, check_run_options, claim_run_folder
from crayonbox.train.options import add_config_arguments, config_from_args, fields_spec
from crayonbox.train.runtime import Dist, autocast_for, finish_distributed, setup_distributed
from crayonbox.train.schedule import WarmupCosine  # noqa: F401 - re-exported: tests and scripts import it here

# Shapes trained here; text/image vocabularies and image length always come from the tokenizer and VQGAN.
TRAIN_PRESETS: dict[str, ModelConfig] = {
    "tiny": MODEL_PRESETS["tiny"],
    "small": MODEL_PRESETS["small"],
}
MODEL_KIND = "model"  # the kind of output folder (crayonbox.outdir)
METRICS = ["step", "epoch", "lr", "loss", "grad_norm", "eval_loss", "samples_per_s", "elapsed_s"]


def model_config(preset: str, tokenizer: Tokenizer, vqgan_cfg: VQGANConfig) -> ModelConfig:
    """The preset's shape with the vocabularies and image length of this tokenizer and VQGAN."""
    if preset not in TRAIN_PRESETS:
        raise CrayonboxError(f"unknown preset {preset!r}; choose one of {sorted(TRAIN_PRESETS)}")
    codes = vqgan_cfg.n_embed
    return dataclasses.replace(TRAIN_PRESETS[preset], text_vocab_size=tokenizer.vocab_size,
                               image_vocab_size=codes, image_embed_rows=codes + 1, bos_token_id=codes,
                               image_length=vqgan_cfg.tokens_side**2)


def configure_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings, none on norms and biases (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))


def token_loss(model: nn.Module, batch: Batch, device: torch.device, precision: str) -> torch.Tensor:
    """Mean cross-entropy of the image tokens under teacher forcing (computed in fp32)."""
    targets = batch.image_tokens.to(device)
    with autocast_for(precision, device):
        logits = model(batch.text_ids.to(device), batch.text_mask.to(device), targets)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: TokenDataset, cfg: TrainConfig, dist: Dist, micro: int) -> float:
    """Mean token loss over (at most `eval_rows` of) the held-out split, summed over all processes."""
    was_training = model.training
    model.eval()
    rows = torch.arange(min(len(data), cfg.eval_rows))[dist.rank::dist.world]
    total = torch.zeros(2, dtype=torch.float64, device=dist.device)
    for chunk in rows.split(micro):
        loss = float(token_loss(model, data.batch(chunk), dist.device, cfg.precision))
        total += torch.tensor([loss * len(chunk), len(chunk)], dtype=torch.float64, device=dist.device)
    if dist.world > 1:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1].clamp(min=1))


def sample_grid(bart: DalleBart, vqgan: nn.Module, tokenizer: Tokenizer, prompts: list[str], path: Path,
                cfg: TrainConfig) -> None:
    """Draw one image per prompt (seed 0) with the current weights and save them as one PNG grid."""
    was_training = bart.training
    if next(bart.parameters()).device.type != "cpu":  # the Pipeline samples on the CPU
        bart, vqgan = copy.deepcopy(bart).cpu(), copy.deepcopy(vqgan).cpu()
    settings = SamplingSettings(condition_scale=cfg.condition_scale, top_k=cfg.top_k)
    images = Pipeline(bart, vqgan, tokenizer, settings)(prompts, num_images=1, seed=0).images
    bart.train(was_training)  # the Pipeline switched it to eval mode
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        make_grid(images).save(tmp, format="PNG")


def export_model(cfg: TrainConfig, bart: DalleBart, vqgan: nn.Module, tokenizer: Tokenizer,
                 provenance: dict) -> Path:
    """Write the model folder: bart/, vqgan/, tokenizer/ and pipeline.json (sampler defaults + provenance)."""
    dtypes = {"float32": None, "float16": torch.float16}
    if cfg.export_dtype not in dtypes:
        raise CrayonboxError(f"--export-dtype must be float32 or float16, not {cfg.export_dtype!r}")
    out = Path(cfg.out)
    save_component(out, "bart", bart.cfg.to_dict(), bart.state_dict(), dtypes[cfg.export_dtype])
    save_component(out, "vqgan", vqgan.cfg.to_dict(), vqgan.state_dict(), dtypes[cfg.export_dtype])
    tokenizer.save(out / "tokenizer")
    sampler = SamplingSettings(condition_scale=cfg.condition_scale, top_k=cfg.top_k).validate().to_dict()
    write_pipeline_json(out, sampler, provenance)
    return out


class TransformerTask(Task):
    """Teacher-forced token loss of `DalleBart`: step s reads global rows s·B … s·B+B−1 and this process takes
    its contiguous slice, in micro-batches; rank 0 draws sample grids."""

    def __init__(self, cfg: TrainConfig, dist: Dist, bart: DalleBart, train_data: TokenDataset,
                 eval_data: TokenDataset, vqgan: nn.Module, tokenizer: Tokenizer, work: Path):
        self.cfg, self.dist, self.model, self.vqgan, self.tokenizer = cfg, dist, bart, vqgan, tokenizer
        self.train_data, self.eval_data, self.work = train_data, eval_data, work
        if cfg.batch_size % dist.world:
            raise CrayonboxError(f"--batch-size {cfg.batch_size} does not split evenly over {dist.world} "
                                 "processes")
        self.local = cfg.batch_size // dist.world
        self.micro = cfg.micro_batch or self.local
        if self.local % self.micro:
            raise CrayonboxError(f"the per-process batch {self.local} is not a multiple of --micro-batch "
                                 f"{self.micro}")
        self.mine = slice(dist.rank * self.local, (dist.rank + 1) * self.local)
        self.prompts = [c for c in dict.fromkeys(eval_data.table.captions) if c][:cfg.sample_prompts] + [""]

    def forward_backward(self, step: int, model: nn.Module) -> dict[str, Any]:
        cfg, local, micro = self.cfg, self.local, self.micro
        rows = self.train_data.global_rows(step, cfg.batch_size)[self.mine]
        blank = blank_draws(cfg.seed, step, cfg.batch_size, cfg.blank_caption_prob)[self.mine]
        loss_sum = torch.zeros((), device=self.dist.device)
        for first in range(0, local, micro):
            part = slice(first, first + micro)
            with self.loop.no_sync(last_micro_batch=first + micro >= local):
                batch = self.train_data.batch(rows[part], blank[part])
                loss = token_loss(model, batch, self.dist.device, cfg.precision)
                (loss * (micro / local)).backward()
            loss_sum += loss.detach() * (micro / local)
        return {"epoch": (step + 1) * cfg.batch_size / len(self.train_data), "loss": loss_sum}

    def after_update(self, step: int, row: dict[str, Any]) -> None:
        if self.dist.world > 1:  # the logged loss is the global batch's
            torch.distributed.all_reduce(row["loss"])
            row["loss"] /= self.dist.world

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"eval_loss": evaluate_loss(model, self.eval_data, self.cfg, self.dist, self.micro)}

    def after_log(self, done: int, finished: bool) -> None:
        if (self.cfg.sample_every and done % self.cfg.sample_every == 0) or finished:
            sample_grid(self.model, self.vqgan, self.tokenizer, self.prompts,
                        self.work / "samples" / f"step_{done:06d}.png", self.cfg)

    def postfix(self, row: dict[str, Any], evaluation: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{row['loss']:.3f}", "eval": f"{evaluation.get('eval_loss', math.nan):.3f}"}

    def extra_state(self) -> dict[str, Any]:
        return {"model_config": self.model.cfg.to_dict()}


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training run and export the model folder; returns the provenance dict."""
    if not (cfg.tokens and cfg.tokenizer and cfg.vqgan and cfg.out):
        raise CrayonboxError("give --tokens, --tokenizer, --vqgan and --out")
    check_run_options(cfg.precision, cfg.steps, cfg.max_minutes)
    dist = setup_distributed(cfg.device, cfg.threads)
    work = Path(cfg.out) / "train"
    claim_run_folder(cfg.out, MODEL_KIND, cfg.resume, "a training run", dist)

    # ---- data: the held-out split is a hash of each key, so it never moves between runs
    vqgan, vqgan_info = load_vqgan(cfg.vqgan)
    vqgan = vqgan.eval().to(dist.device)
    model_cfg = model_config(cfg.preset, Tokenizer.from_folder(cfg.tokenizer), vqgan.cfg)
    tokenizer = Tokenizer.from_folder(cfg.tokenizer, text_length=model_cfg.text_length)
    table = read_token_parquet(cfg.tokens)
    if table.encodings.shape[1] != model_cfg.image_length or int(table.encodings.max()) >= vqgan.cfg.n_embed:
        raise CrayonboxError(f"{cfg.tokens} was not encoded with the VQGAN in {cfg.vqgan} (tokens per "
                             f"image {table.encodings.shape[1]}, largest code {int(table.encodings.max())}); "
                             "re-run `crayonbox encode` with this VQGAN")
    split = held_out(table.keys, cfg.eval_fraction)
    train_data = TokenDataset(table.subset(torch.nonzero(~split)[:, 0]), tokenizer, cfg.seed)
    eval_data = TokenDataset(table.subset(torch.nonzero(split)[:, 0]), tokenizer, cfg.seed)

    # ---- model and optimizer (one seed on every process; DDP also broadcasts rank 0's weights)
    torch.manual_seed(cfg.seed)
    bart = DalleBart(model_cfg)
    bart.init_weights(cfg.init_std)
    bart.to(dist.device).train()
    task = TransformerTask(cfg, dist, bart, train_data, eval_data, vqgan, tokenizer, work)
    settings = LoopSettings(
        out=Path(cfg.out), name="train model", steps=cfg.steps, warmup_steps=cfg.warmup_steps,
        min_lr_ratio=cfg.min_lr_ratio, batch_size=cfg.batch_size, max_minutes=cfg.max_minutes,
        eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, metrics=METRICS,
        identity={"global_batch": cfg.batch_size, "rows": len(train_data), "seed": cfg.seed}, resume=cfg.resume,
        progress=cfg.progress, grad_clip=cfg.grad_clip)
    result = TrainingLoop(settings, dist, task, configure_optimizer(bart, cfg)).run()

    # ---- export (main process only): the model folder, loadable by Pipeline.from_pretrained
    provenance: dict = {}
    if dist.main:
        sizes = {"train": len(train_data), "eval": len(eval_data), "processes": dist.world}
        provenance = run_provenance(cfg, vqgan_info, model_cfg, work / "metrics.csv", result.steps,
                                    result.planned, result.evaluation["eval_loss"], sizes)
        export_model(cfg, bart, vqgan, tokenizer, provenance)
    finish_distributed(dist)
    return provenance


def run_provenance(cfg: TrainConfig, vqgan_info: dict, model_cfg: ModelConfig, metrics: Path, steps: int,
                   planned: int, eval_loss: float, sizes: dict) -> dict:
    """What pipeline.json records about the run: data, sizes, steps, the loss curve (every evaluation)."""
    rows = ckpt.read_metrics(metrics)
    recent = [float(r["loss"]) for r in rows[-50:]]
    return {"trained_by": "crayonbox train model", "tokens": str(Path(cfg.tokens).resolve()),
            "tokenizer": str(Path(cfg.tokenizer).resolve()), "vqgan": vqgan_info, "rows": sizes,
            "steps": steps, "planned_steps": planned, "stopped_early": steps < planned,
            "samples_seen": steps * cfg.batch_size,
            "train_seconds": float(rows[-1]["elapsed_s"]) if rows else 0.0,
            "final_train_loss": sum(recent) / len(recent) if recent else None, "final_eval_loss": eval_loss,
            "eval_curve": [[int(r["step"]), float(r["eval_loss"])] for r in rows if r["eval_loss"]],
            "config": dataclasses.asdict(cfg), "model_config": model_cfg.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """`python -m crayonbox.train.model` (torchrun's entry point): the options of `crayonbox train model`."""
    parser = argparse.ArgumentParser(prog="crayonbox.train.model", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, fields_spec(TrainConfig))
    try:
        train(config_from_args(TrainConfig, parser.parse_args(argv)))
    except CrayonboxError as e:
        print(f"crayonbox: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

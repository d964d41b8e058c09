"""Train the DALL·E mini transformer (`DalleBart`) on a token parquet: nanoGPT's train.py for image tokens.

    crayonbox train model --tokens tokens.parquet --tokenizer TOK --vqgan VQ --out MODEL [--preset small]
    torchrun --standalone --nproc_per_node=2 -m crayonbox.train.model --tokens … --out MODEL   # DDP

Top to bottom: the config, distributed setup, data, model, optimizer and schedule, resume, the loop (log,
eval, sample grid, checkpoint), export. DDP is on when torchrun sets WORLD_SIZE (gloo on CPU, nccl on GPU);
the global batch is split evenly over the processes, so N processes follow the same loss curve as one.

MODEL ends up a complete model folder (`Pipeline.from_pretrained(MODEL)` loads it); MODEL/train/ holds the
checkpoint, metrics.csv (+ TensorBoard events when installed) and sample grids. Ship MODEL without train/.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from crayonbox.config import MODEL_PRESETS, ModelConfig, VQGANConfig
from crayonbox.errors import CrayonboxError
from crayonbox.model.bart import DalleBart
from crayonbox.model.images import make_grid
from crayonbox.model.vqgan_io import load_vqgan
from crayonbox.model_folder import save_component, write_pipeline_json
from crayonbox.outdir import claim_output_folder
from crayonbox.pipeline import Pipeline
from crayonbox.sample import SamplingSettings
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train import checkpoint as ckpt
from crayonbox.train.data import Batch, TokenDataset, blank_draws, held_out, read_token_parquet
from crayonbox.train.options import add_config_arguments, config_from_args, config_spec
from crayonbox.train.runtime import Dist, autocast_for
from crayonbox.train.schedule import StepPlan, WarmupCosine

# Shapes trained here; text/image vocabularies and image length always come from the tokenizer and VQGAN.
TRAIN_PRESETS: dict[str, ModelConfig] = {
    "tiny": MODEL_PRESETS["tiny"],
    "small": MODEL_PRESETS["small"],
}
MODEL_KIND = "model"  # the kind of output folder (crayonbox.outdir)
METRICS = ["step", "epoch", "lr", "loss", "grad_norm", "eval_loss", "samples_per_s", "elapsed_s"]


@dataclass
class TrainConfig:
    tokens: str = ""  # token parquet (file or folder) from `crayonbox encode`
    tokenizer: str = ""  # tokenizer folder from `crayonbox train tokenizer`
    vqgan: str = ""  # VQGAN folder from `crayonbox train vqgan` (or a model folder)
    out: str = ""  # the model folder to write
    preset: str = "small"  # transformer shape, see TRAIN_PRESETS
    steps: int = 4000  # optimizer steps in all; 0 = as many as fit in --max-minutes (speed measured early on)
    batch_size: int = 64  # global batch: rows per optimizer step, all processes together
    micro_batch: int = 0  # rows per forward pass and process (gradient accumulation); 0 = no accumulation
    learning_rate: float = 1e-3  # peak, reached after warmup
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate × this
    warmup_steps: int = 100  # linear warmup from ~0 to learning_rate
    weight_decay: float = 0.01  # matrices and embeddings only
    beta1: float = 0.9  # AdamW β1
    beta2: float = 0.95  # AdamW β2 (nanoGPT's; forgets stale curvature faster than 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    precision: str = "float32"  # float32 | bfloat16 (autocast; pays only on CPUs with AVX-512 BF16 or AMX)
    blank_caption_prob: float = 0.0  # extra caption dropout per step, on top of the caption pipeline's
    eval_fraction: float = 0.02  # share of rows held out (by key hash) for the eval loss
    eval_rows: int = 1024  # at most this many held-out rows per evaluation
    eval_every: int = 250  # steps between evaluations (and at the end)
    sample_every: int = 1000  # steps between sample grids (and at the end); 0 = only at the end
    sample_prompts: int = 8  # held-out captions drawn in each grid, plus the blank prompt
    checkpoint_every: int = 100  # steps between checkpoints (and at the end)
    seed: int = 0  # initial weights, batch order and extra caption dropout all follow it
    init_std: float = 0.02  # std of the normal init of matrices and embeddings (dalle-mini's init_std)
    condition_scale: float = 10.0  # sampler default written to pipeline.json (and used for sample grids)
    top_k: int = 50  # sampler default written to pipeline.json
    export_dtype: str = "float32"  # dtype of the exported weights: float32 | float16 (half the size)
    resume: bool = False  # continue from MODEL/train/checkpoint.pt
    max_minutes: float = 0.0  # stop (checkpoint + export) once this much training time has passed; 0 = off
    threads: int = 0  # torch threads per process; 0 = cores / processes
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True  # tqdm progress bar


def setup_distributed(cfg: TrainConfig) -> Dist:
    """One process, or DDP when launched by torchrun (WORLD_SIZE, RANK, LOCAL_RANK in the environment)."""
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // per_node))
    return Dist(rank, world, device)


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
    tmp = path.with_name(f".{path.name}.tmp")
    make_grid(images).save(tmp, format="PNG")
    os.replace(tmp, path)


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


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training run and export the model folder; returns the provenance dict."""
    if not (cfg.tokens and cfg.tokenizer and cfg.vqgan and cfg.out):
        raise CrayonboxError("give --tokens, --tokenizer, --vqgan and --out")
    autocast_for(cfg.precision, torch.device("cpu"))  # reject a bad --precision before any work
    dist = setup_distributed(cfg)
    work = Path(cfg.out) / "train"
    ckpt_path = work / "checkpoint.pt"
    claim_output_folder(cfg.out, MODEL_KIND, "train/checkpoint.pt")  # never into someone's folder
    if ckpt_path.exists() and not cfg.resume:
        raise CrayonboxError(f"{cfg.out} already holds a training run: pass --resume to continue it, or "
                             "choose another --out")

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
    if cfg.batch_size % dist.world:
        raise CrayonboxError(f"--batch-size {cfg.batch_size} does not split evenly over {dist.world} "
                             "processes")
    local = cfg.batch_size // dist.world
    micro = cfg.micro_batch or local
    if local % micro:
        raise CrayonboxError(f"the per-process batch {local} is not a multiple of --micro-batch {micro}")
    prompts = [c for c in dict.fromkeys(eval_data.table.captions) if c][:cfg.sample_prompts] + [""]

    # ---- model, optimizer, schedule (one seed on every process; DDP also broadcasts rank 0's weights)
    torch.manual_seed(cfg.seed)
    bart = DalleBart(model_cfg)
    bart.init_weights(cfg.init_std)
    bart.to(dist.device).train()
    optimizer = configure_optimizer(bart, cfg)
    shape = WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    if cfg.steps == 0 and cfg.max_minutes <= 0:
        raise CrayonboxError("--steps 0 means 'as many as fit in the time budget': give --max-minutes too")
    data_identity = {"global_batch": cfg.batch_size, "rows": len(train_data), "seed": cfg.seed}
    start, elapsed_before = 0, 0.0
    if cfg.resume and ckpt_path.exists():
        state = ckpt.load_checkpoint(ckpt_path)
        ckpt.check_same_run(state, data_identity)
        bart.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])  # also restores shape.total
        ckpt.restore_rng(state["rng"])
        start, elapsed_before = int(state["step"]), float(state["elapsed_s"])
    plan = StepPlan(shape, cfg.max_minutes, start)
    model: nn.Module = bart
    if dist.world > 1:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(bart, device_ids=ids)
    log = None
    if dist.main:
        ckpt.remove_stale_temporaries(work)
        log = ckpt.MetricsLog(work / "metrics.csv", METRICS, resume_step=start if cfg.resume else None)

    def save_state(step: int, elapsed: float) -> None:
        if dist.main:
            ckpt.save_checkpoint(ckpt_path, {
                "step": step, "elapsed_s": elapsed, "model": bart.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                "rng": ckpt.capture_rng(),
                "data": {**data_identity, "samples_seen": step * cfg.batch_size},
                "model_config": model_cfg.to_dict()})
        if dist.world > 1:
            torch.distributed.barrier()

    # ---- the loop: step s reads global rows s·B … s·B+B−1; this process takes its contiguous slice
    bar = tqdm(initial=start, total=shape.total or None, desc="train model", unit="step",
               disable=not (cfg.progress and dist.main))
    started, done, last_eval = time.perf_counter(), start, float("nan")
    mine = slice(dist.rank * local, (dist.rank + 1) * local)
    while shape.total == 0 or done < shape.total:
        step, tick = done, time.perf_counter()
        rows = train_data.global_rows(step, cfg.batch_size)[mine]
        blank = blank_draws(cfg.seed, step, cfg.batch_size, cfg.blank_caption_prob)[mine]
        loss_sum = torch.zeros((), device=dist.device)
        for first in range(0, local, micro):
            part = slice(first, first + micro)
            last_micro = first + micro >= local
            with model.no_sync() if dist.world > 1 and not last_micro else nullcontext():
                batch = train_data.batch(rows[part], blank[part])
                loss = token_loss(model, batch, dist.device, cfg.precision)
                (loss * (micro / local)).backward()
            loss_sum += loss.detach() * (micro / local)
        grad_norm = nn.utils.clip_grad_norm_(bart.parameters(), cfg.grad_clip or float("inf"))
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if dist.world > 1:
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= dist.world
        done = step + 1
        elapsed = elapsed_before + time.perf_counter() - started
        row = {"step": done, "epoch": done * cfg.batch_size / len(train_data), "lr": lr,
               "loss": float(loss_sum), "grad_norm": float(grad_norm), "elapsed_s": round(elapsed, 3),
               "samples_per_s": cfg.batch_size / (time.perf_counter() - tick)}
        plan.update(done, time.perf_counter() - started, elapsed, dist)
        bar.total = shape.total or None
        bar.update(1)
        out_of_time = time_is_up(cfg, elapsed, dist)
        finished = done == shape.total or out_of_time
        if done % cfg.eval_every == 0 or finished:
            row["eval_loss"] = last_eval = evaluate_loss(model, eval_data, cfg, dist, micro)
        if dist.main:
            log.write(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", eval=f"{last_eval:.3f}")
            if (cfg.sample_every and done % cfg.sample_every == 0) or finished:
                sample_grid(bart, vqgan, tokenizer, prompts, work / "samples" / f"step_{done:06d}.png", cfg)
        if done % cfg.checkpoint_every == 0 or finished:
            save_state(done, elapsed)
        if out_of_time:
            break
    bar.close()
    if math.isnan(last_eval):  # resuming a finished run: nothing to train, but the export needs the number
        last_eval = evaluate_loss(model, eval_data, cfg, dist, micro)

    # ---- export (main process only): the model folder, loadable by Pipeline.from_pretrained
    provenance: dict = {}
    if dist.main:
        log.close()
        sizes = {"train": len(train_data), "eval": len(eval_data), "processes": dist.world}
        provenance = run_provenance(cfg, vqgan_info, model_cfg, work / "metrics.csv", done, shape.total,
                                    last_eval, sizes)
        export_model(cfg, bart, vqgan, tokenizer, provenance)
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return provenance


def time_is_up(cfg: TrainConfig, elapsed: float, dist: Dist) -> bool:
    """Whether the --max-minutes budget is spent; every process gets rank 0's answer (all stop together)."""
    if cfg.max_minutes <= 0:
        return False
    flag = torch.tensor([float(elapsed >= cfg.max_minutes * 60)], device=dist.device)
    if dist.world > 1:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


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
    add_config_arguments(parser, config_spec(__spec__.name if __spec__ else __name__, "TrainConfig"))
    try:
        train(config_from_args(TrainConfig, parser.parse_args(argv)))
    except CrayonboxError as e:
        print(f"crayonbox: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

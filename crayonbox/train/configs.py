"""The options of the three trainers: `TrainConfig` (transformer, train/model.py), `VQGANTrainConfig` (train/vqgan.py)
and `JudgeTrainConfig` (train/judge_train.py). Every field carries its help text in `metadata["help"]`, and
train/options.py turns each field into a command-line option (`--learning-rate` sets `learning_rate`).

They live here, apart from their trainers, because this module imports nothing heavy: `crayonbox --help` reads
the fields with `dataclasses.fields()` without importing torch (seconds on a busy machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str) -> Any:  # noqa: A002 - the name argparse and the metadata use
    """A config field with a default and the help text of its command-line option."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """`crayonbox train model`: the transformer."""

    tokens: str = option("", "token parquet (file or folder) from `crayonbox encode`")
    tokenizer: str = option("", "tokenizer folder from `crayonbox train tokenizer`")
    vqgan: str = option("", "VQGAN folder from `crayonbox train vqgan` (or a model folder)")
    out: str = option("", "the model folder to write")
    preset: str = option("small", "transformer shape, see TRAIN_PRESETS")
    steps: int = option(4000, "optimizer steps in all; 0 = as many as fit in --max-minutes (speed measured early "
                              "on)")
    batch_size: int = option(64, "global batch: rows per optimizer step, all processes together")
    micro_batch: int = option(0, "rows per forward pass and process (gradient accumulation); 0 = no accumulation")
    learning_rate: float = option(1e-3, "peak, reached after warmup")
    min_lr_ratio: float = option(0.1, "cosine decays to learning_rate × this")
    warmup_steps: int = option(100, "linear warmup from ~0 to learning_rate")
    weight_decay: float = option(0.01, "matrices and embeddings only")
    beta1: float = option(0.9, "AdamW β1")
    beta2: float = option(0.95, "AdamW β2 (nanoGPT's; forgets stale curvature faster than 0.999)")
    grad_clip: float = option(1.0, "max global gradient norm; 0 = off")
    precision: str = option("auto", "auto (bfloat16 autocast where the hardware computes it natively: AMX or "
                            "AVX-512 BF16 CPUs, most GPUs; float32 elsewhere) | float32 | bfloat16")
    blank_caption_prob: float = option(0.0, "extra caption dropout per step, on top of the caption pipeline's")
    eval_fraction: float = option(0.02, "share of rows held out (by key hash) for the eval loss")
    eval_rows: int = option(1024, "at most this many held-out rows per evaluation")
    eval_every: int = option(250, "steps between evaluations (and at the end)")
    sample_every: int = option(1000, "steps between sample grids (and at the end); 0 = only at the end")
    sample_prompts: int = option(8, "held-out captions drawn in each grid, plus the blank prompt")
    checkpoint_every: int = option(100, "steps between checkpoints (and at the end)")
    seed: int = option(0, "initial weights, batch order and extra caption dropout all follow it")
    init_std: float = option(0.02, "std of the normal init of matrices and embeddings (dalle-mini's init_std)")
    condition_scale: float = option(10.0, "sampler default written to pipeline.json (and used for sample grids)")
    top_k: int = option(50, "sampler default written to pipeline.json")
    export_dtype: str = option("float32", "dtype of the exported weights: float32 | float16 (half the size)")
    resume: bool = option(False, "continue from MODEL/train/checkpoint.pt")
    max_minutes: float = option(0.0, "stop (checkpoint + export) once this much training time has passed; 0 = off")
    threads: int = option(0, "torch threads per process; 0 = cores / processes")
    device: str = option("auto", "auto (a GPU when there is one) | cpu | cuda | cuda:N | mps")
    progress: bool = option(True, "tqdm progress bar")


@dataclass
class VQGANTrainConfig:
    """`crayonbox train vqgan`: the image tokenizer."""

    data: str = option("", "shard folder (webdataset tars; `crayonbox world build` or img2dataset output)")
    out: str = option("", "output folder: vqgan/ component, report.json, train/")
    preset: str = option("small32", "VQGAN shape: TRAIN_VQGAN_PRESETS (config.VQGAN_PRESETS plus small32)")
    n_embed: int = option(0, "codebook size; 0 = the preset's (small32: 512)")
    steps: int = option(3000, "optimizer steps in all; 0 = as many as fit in --max-minutes (speed measured early "
                              "on)")
    batch_size: int = option(32, "images per step")
    learning_rate: float = option(1e-3, "peak; warmup then cosine to a tenth")
    warmup_steps: int = option(100, "linear warmup from ~0 to learning_rate")
    l2_weight: float = option(1.0, "reconstruction = L1 + l2_weight·L2 + edge_weight·|∇x − ∇x̂|")
    edge_weight: float = option(0.5, "weight of the image-gradient L1 (sharp sprite edges)")
    object_weight: float = option(1.0, "reconstruction weight of the pixels inside the objects' boxes against "
                                       "1 for the background (needs world metadata that places objects)")
    finetune_decoder: str = option("", "a VQGAN (or model) folder to start from, training only its decoder: the "
                                       "encoder and codebook stay frozen, so every image keeps its codes and a "
                                       "transformer trained on them still fits (--preset and --n-embed are its own)")
    commitment: float = option(0.25, "β of the commitment loss")
    ema_decay: float = option(0.99, "codebook EMA")
    dead_after: int = option(100, "steps without use before a code is restarted")
    quantize_after: float = option(0.0, "plain autoencoding (no quantizer) before the codebook is k-means'd in: "
                                        "steps, or below 1 a share of the run (0.5 = the first half; with --steps 0 "
                                        "the share of the timed plan)")
    kmeans_batches: int = option(8, "batches of encoder outputs for the k-means init (0 = keep the random init)")
    precision: str = option("auto", "autocast dtype: auto (bfloat16 where the hardware computes it natively, "
                            "float32 elsewhere) | float32 | bfloat16")
    device: str = option("auto", "auto (a GPU when there is one) | cpu | cuda | cuda:N | mps")
    eval_fraction: float = option(0.02, "share of images held out (by key hash) for PSNR and usage")
    eval_images: int = option(512, "at most this many held-out images per evaluation")
    eval_every: int = option(250, "steps between evaluations (and at the end)")
    checkpoint_every: int = option(100, "steps between checkpoints (and at the end)")
    seed: int = option(0, "initial weights, k-means, batch order and code restarts all follow it")
    resume: bool = option(False, "continue from OUT/train/checkpoint.pt")
    max_minutes: float = option(0.0, "stop (checkpoint + export) after this much training time; 0 = off")
    threads: int = option(0, "torch threads; 0 = all cores")
    progress: bool = option(True, "tqdm progress bar")


@dataclass
class JudgeTrainConfig:
    """`crayonbox train judge`: the attribute CNN that scores adherence."""

    train_images: int = option(9000, "renders to learn from, drawn from the neutralised world (≈2 crops each)")
    eval_images: int = option(2000, "held-out renders for the reported accuracy")
    world_sample: int = option(1000, "items of the world folder itself (its real skews) to report accuracy on too")
    epochs: int = option(3, "passes over the training crops")
    batch_size: int = option(128, "slot crops per step (the scene net sees half as many whole images)")
    learning_rate: float = option(0.003, "AdamW peak rate (linear warmup, cosine decay)")
    weight_decay: float = option(0.0001, "AdamW weight decay")
    warmup_steps: int = option(30, "steps of linear warmup")
    width: int = option(24, "channels of the slot net's first stage")
    crop_size: int = option(32, "side of the slot crops (px)")
    person_share: float = option(0.55, "share of objects that are people (they carry gender and skin tone)")
    gender_weight: float = option(2.0, "loss weight of gender, the subtlest attribute (a few pixels at 20 px)")
    empty_share: float = option(0.05, "extra crops of bare background, labelled \"none\"")
    augment: float = option(0.1, "chance per crop of blur + noise (generated images are softer than renders)")
    round_trip_vqgan: str = option("", "a VQGAN (or model) folder: --round-trip-share of the training renders, "
                                       "and a copy of the held-out ones, pass through its encode → decode, as "
                                       "the model's own images do; \"\" = clean renders only")
    round_trip_share: float = option(0.5, "share of the training renders replaced by their VQGAN round trip")
    seed: int = option(0, "renders, initialisation and batch order all follow it")
    workers: int = option(2, "processes rendering the training images")
    threads: int = option(0, "torch threads (0: torch's default)")
    device: str = option("auto", "auto (a GPU when there is one) | cpu | cuda | cuda:N | mps")
    resume: bool = option(True, "continue from the checkpoint in the output folder when there is one")
    progress: bool = option(True, "progress bars")


@dataclass
class EvalConfig:
    prompts: int = 100  # held-out prompts per object count (1 and 2)
    blank: int = 200  # images of the blank prompt ""
    reference: int = 1000  # training images read for the reference distribution
    seed: int = 0  # scene draws and sampling seed
    condition_scale: float = 0.0  # classifier-free guidance (0: the model's default)
    dtype: str = "float32"  # precision of the generator (Pipeline.from_pretrained's dtype; auto: the machine's)
    device: str = "auto"  # where the generator runs (auto: a GPU when there is one); the judge reads on the CPU
    batch: int = 32  # prompts per generation call
    max_draws: int = 200  # scene draws per wanted prompt before settling for fewer held-out prompts
    grid_columns: int = 8  # images per row of samples.png
    progress: bool = True  # progress bars

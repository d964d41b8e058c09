"""`crayonbox train {tokenizer,vqgan,model,all}` and `crayonbox encode`.

    crayonbox train tokenizer --data CAPTIONS --out TOK [--vocab-size 4096]
    crayonbox train vqgan --data WORLD --out VQ [--preset small] [--steps N] [--resume]
    crayonbox encode --data CAPTIONS --vqgan VQ --out tokens.parquet
    crayonbox train model --tokens tokens.parquet --tokenizer TOK --vqgan VQ --out MODEL [--nproc 2]
    crayonbox train all --recipe default [--out DIR] [--minutes 90]

The options of `train vqgan` and `train model` are the fields of their config dataclasses (VQGANTrainConfig,
TrainConfig): `--learning-rate` sets `learning_rate`, a bool field `x` is `--x` (or `--no-x` when on by
default), and the help text is the field's `metadata["help"]` (crayonbox/train/configs.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from crayonbox.config import DEVICE_HELP
from crayonbox.train.configs import EvalConfig
from crayonbox.train.options import add_config_arguments, config_from_args, config_spec, config_to_argv

# ---- handlers ---------------------------------------------------------------------------------------------
# Each handler imports its trainer when it runs: they pull in torch, which would cost every `crayonbox` command
# (and `--help`) seconds of start-up on a busy machine.


def _tokenizer_command(args: argparse.Namespace) -> int:
    from crayonbox.train.data import train_tokenizer

    tok = train_tokenizer(args.data, args.out, args.vocab_size, args.text_length, progress=not args.quiet)
    print(f"tokenizer with {tok.vocab_size} ids ({tok.normalizer_config.mode} normaliser) in {args.out}")
    return 0


def _vqgan_command(args: argparse.Namespace) -> int:
    from crayonbox.train.vqgan import VQGANTrainConfig, train_vqgan

    report = train_vqgan(config_from_args(VQGANTrainConfig, args))
    print(f"VQGAN in {args.out}/vqgan: held-out PSNR {report['eval_psnr']:.2f} dB, codebook usage "
          f"{report['eval_usage']:.1%}, perplexity {report['eval_perplexity']:.1f} (report.json)")
    return 0


def _encode_command(args: argparse.Namespace) -> int:
    from crayonbox.train.encode import encode_dataset

    s = encode_dataset(args.data, args.vqgan, args.out, args.batch_size, progress=not args.quiet)
    print(f"{s.images} images from {s.shards} shards ({s.shards_skipped} already done) in {s.out}")
    return 0


def _model_command(args: argparse.Namespace) -> int:
    from crayonbox.train.model import TrainConfig, train

    cfg = config_from_args(TrainConfig, args)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from crayonbox.outdir import check_output_folder
        from crayonbox.train.model import MODEL_KIND

        # here, where it prints one line: in the ranks torchrun would turn it into tracebacks
        check_output_folder(cfg.out, MODEL_KIND, "train/checkpoint.pt")
        return launch_distributed(cfg, args.nproc)
    provenance = train(cfg)
    print(f"model in {cfg.out}: {provenance['steps']} steps, train loss "
          f"{provenance['final_train_loss']:.4f}, eval loss {provenance['final_eval_loss']:.4f}")
    return 0


def launch_distributed(cfg: Any, nproc: int) -> int:
    """Run `train model` under torchrun with `nproc` processes on this machine (DDP)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "crayonbox.train.model", *config_to_argv(cfg)]
    return subprocess.call(command)


def _all_command(args: argparse.Namespace) -> int:
    from crayonbox.train.recipe import run_recipe

    result = run_recipe(args.recipe, args.out, args.minutes, progress=not args.quiet, world=args.world,
                        captions=args.captions, seed=args.seed)
    for stage in result["stages"]:
        status = "ran" if stage["ran_now"] else "done earlier"
        print(f"{stage['name']:>10}  {status:<13} {stage['seconds']:8.1f} s  "
              f"(plan {stage['planned_seconds']:.0f} s)")
    print(f"total {result['total_seconds'] / 60:.1f} min; model in {result['model']}; table in "
          f"{result['out']}/recipe.json")
    return 0


def _judge_command(args: argparse.Namespace) -> int:
    from crayonbox.train.judge_train import JudgeTrainConfig, run_training

    metrics = run_training(args.world, args.out, config_from_args(JudgeTrainConfig, args))
    shown = ", ".join(f"{k} {v:.1%}" for k, v in metrics["held_out"]["summary"].items())
    print(f"judge in {args.out}: held-out accuracy {shown} (metrics.json)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` command group and `encode`."""
    train = subparsers.add_parser("train", help="train the tokenizer, VQGAN and transformer (or all of it)")
    sub = train.add_subparsers(dest="train_command", metavar="COMMAND")
    train.set_defaults(func=lambda _args: train.print_help() or 2)

    p = sub.add_parser("tokenizer", help="byte-level BPE on the captions of a shard folder")
    p.add_argument("--data", required=True, help="shard folder (the caption pipeline's output)")
    p.add_argument("--out", required=True, help="tokenizer folder to write")
    p.add_argument("--vocab-size", type=int, default=4096, help="ids in all (default: 4096)")
    p.add_argument("--text-length", type=int, default=64, help="text positions of the model (default: 64)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_tokenizer_command)

    p = sub.add_parser("vqgan", help="train the VQGAN on the images of a shard folder (resumable)")
    add_config_arguments(p, config_spec("crayonbox.train.configs", "VQGANTrainConfig"))
    p.set_defaults(func=_vqgan_command)

    p = sub.add_parser("model", help="train the DALL·E mini transformer on a token parquet (resumable, DDP)")
    add_config_arguments(p, config_spec("crayonbox.train.configs", "TrainConfig"))
    p.add_argument("--nproc", type=int, default=1, help="processes (DDP via torchrun) (default: 1)")
    p.set_defaults(func=_model_command)

    p = sub.add_parser("judge", help="train the judge (a CNN predicting every ground-truth attribute) on renders "
                                     "of a world (resumable)")
    p.add_argument("--world", required=True, help="a `crayonbox world build` folder or a world config YAML")
    p.add_argument("--out", required=True, help="judge folder to write (config.json, model.safetensors, "
                                                 "metrics.json)")
    add_config_arguments(p, config_spec("crayonbox.train.configs", "JudgeTrainConfig"))
    p.set_defaults(func=_judge_command)

    p = sub.add_parser("all", help="the whole recipe: world → captions → tokenizer → VQGAN → encode → "
                                   "transformer → judge → eval (each stage resumable)")
    p.add_argument("--recipe", default="default", help="default (≤ 110 min on 2 cores), codes16 (the default "
                   "with 16×16 image codes, 110 min; give it --minutes 330), smoke (toy, ~2 min) or planted (a "
                   "known skew, ~6 min)")
    p.add_argument("--world", metavar="WORLD.yaml", help="world config (default: the recipe's own)")
    p.add_argument("--captions", metavar="PIPELINE.yaml", help="caption pipeline config (default: the "
                                                               "DALL·E mini era, see `data captions`)")
    p.add_argument("--seed", type=int, default=0, help="seeds the world build, VQGAN and transformer (default: 0)")
    p.add_argument("--out", default="crayonbox-run", help="run folder: new, empty, or a run of the same recipe, "
                                                          "world, captions and seed (default: ./crayonbox-run)")
    p.add_argument("--minutes", type=float, default=None,
                   help="time budget (default: the recipe's plan); every stage's share scales with it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_all_command)

    register_eval_command(subparsers)

    p = subparsers.add_parser("encode", help="encode a shard folder's images to a token parquet (resumable)")
    p.add_argument("--data", required=True, help="shard folder (the caption pipeline's output)")
    p.add_argument("--vqgan", required=True, help="VQGAN folder (`train vqgan` output) or a model folder")
    p.add_argument("--out", required=True, help="token parquet to write, e.g. tokens.parquet")
    p.add_argument("--batch-size", type=int, default=64, help="images per VQGAN call (default: 64)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_encode_command)


def _eval_command(args: argparse.Namespace) -> int:
    from crayonbox.train.eval import evaluate

    out = args.out or Path(f"{Path(args.model).name}_eval")
    result = evaluate(args.model, args.judge, out, world=args.world, prompts=args.n, blank=args.blank,
                      reference=args.reference, seed=args.seed, condition_scale=args.condition_scale,
                      dtype=args.dtype, device=args.device, progress=not args.quiet)
    for count, block in result["by_objects"].items():
        if "adherence" in block:
            print(f"{count}-object held-out prompts ({block['prompts']}): adherence "
                  f"{block['adherence']['all']:.1%} (chance {block['chance']['all']:.1%}, judged renders "
                  f"{block['ceiling']['all']:.1%})")
            for attribute, values in block.get("by_asked", {}).items():
                print(f"  {attribute} by what the prompt asks: " + ", ".join(
                    f"{v} {r['adherence']:.0%} of {r['n']}" for v, r in values.items()))
    if "frechet" in result:
        f = result["frechet"]
        floor = f"{f['renders_vs_renders']:.2f}" if f["renders_vs_renders"] is not None else "n/a"
        print(f"Fréchet distance (judge features): {f['generated_vs_renders']:.2f} "
              f"(renders vs renders: {floor})")
    print(f"eval.json, samples.png in {out}")
    return 0


def register_eval_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `crayonbox eval MODEL --judge DIR`."""
    p = subparsers.add_parser("eval", help="judge a model: held-out prompt adherence, Fréchet distance, "
                                           "blank prompt vs training distribution")
    p.add_argument("model", help="model folder")
    p.add_argument("--judge", required=True, help="judge folder (`crayonbox train judge` output)")
    p.add_argument("--world", help="the world folder the model trained on (default: the judge's world)")
    p.add_argument("--out", type=Path, help="output folder (default: ./<model>_eval)")
    p.add_argument("--n", type=int, default=EvalConfig.prompts, help="held-out prompts per object count "
                                                                    f"(default: {EvalConfig.prompts})")
    p.add_argument("--blank", type=int, default=EvalConfig.blank,
                   help=f"blank-prompt images (default: {EvalConfig.blank})")
    p.add_argument("--reference", type=int, default=EvalConfig.reference,
                   help=f"training images for the reference distribution (default: {EvalConfig.reference})")
    p.add_argument("--seed", type=int, default=0, help="scene draws and sampling seed (default: 0)")
    p.add_argument("--condition-scale", type=float, default=0.0, help="guidance scale (default: the model's)")
    p.add_argument("--dtype", default=EvalConfig.dtype, help="generator precision: float32 (default), bfloat16, "
                                                            "fp16w, int8, auto")
    p.add_argument("--device", default=EvalConfig.device, help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_eval_command)

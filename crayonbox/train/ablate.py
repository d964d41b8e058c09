"""`crayonbox lab ablate`: counterfactual retraining. For each arm (one caption-pipeline decision changed),
rebuild the captions of the run's world, reuse the run's VQGAN codes and tokenizer, retrain the transformer
with the same seeds as the baseline, probe the same prompts with the same image seeds, and measure the
images with the same validated instrument. The paired difference from the baseline is the arm's effect.

    crayonbox lab ablate RUN --arms english_only:drop,min_length:off --seeds 2 --prompts null -n 300 --out ABL

Layout (every piece is written atomically, so a kill -9 loses at most the step in flight):

    ABL/ablation.json                      what was asked, and of which run (checked on every resume)
    ABL/validation.json                    the instrument's confusion on renders through the run's VQGAN
    ABL/arms/<arm>/captions/               the arm's caption pipeline over RUN/world (resumable per shard)
    ABL/arms/<arm>/tokens.parquet          RUN's VQGAN codes with the arm's captions (dropped items left out)
    ABL/arms/<arm>/tokenizer/              only when the arm changes the normaliser (same BPE, its normaliser)
    ABL/arms/<arm>/seed<S>/model/          the retrained transformer (resumes from its checkpoint)
    ABL/arms/<arm>/seed<S>/probe/          its probe run (resumable, see crayonbox.lab.store)
    ABL/arms/<arm>/seed<S>/result.json     counts per prompt × scale × outcome: the job's done marker
    ABL/effects.json                       every arm's paired effect per prompt × scale × outcome (rewritten)

The baseline arm at the run's own seed is the run's model itself when the step count is the recipe's. The
statistics (crayonbox.lab.ablation) read only these files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from crayonbox.config import write_json_atomic
from crayonbox.data.caption_arms import BASELINE, Arm, arm_config, parse_arm
from crayonbox.data.caption_run import run_caption_pipeline
from crayonbox.data.captions import pipeline_normalizer
from crayonbox.errors import CrayonboxError
from crayonbox.lab.ablation import (
    ABLATION_FILE,
    EFFECTS_FILE,
    RESULT_FILE,
    VALIDATION_FILE,
    arm_slug,
    default_arms,
    load_ablation,
    read_manifest,
    roundtrip_validation,
)
from crayonbox.lab.families import PromptSpec, expand_prompts
from crayonbox.lab.instruments.skin_tone import SkinToneConfig, SkinToneMeter
from crayonbox.lab.probe import ProbeConfig, encode_spec, load_tokenizer, run_probe
from crayonbox.lab.store import RunStore
from crayonbox.outdir import check_output_folder, claim_output_folder
from crayonbox.procs import die_with_parent as _die_with_parent
from crayonbox.run_record import RunRecord, read_run_record
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train.data import read_token_parquet, write_token_parquet
from crayonbox.train.model import TrainConfig, train

SKIN_MAX_DISTANCE = 12.0  # ΔE: the VQGAN shifts skin colours by 5–12 ΔE (docs/lab.md, planted skew)


@dataclass
class AblateConfig:
    """What to retrain and how to measure it."""

    arms: list[str] = field(default_factory=list)  # STEP:CHANGE (crayonbox.data.caption_arms); baseline added
    seeds: int = 2  # training seeds per arm: the run's seed, seed + 1, …
    prompts: list[str] = field(default_factory=lambda: ["null"])  # families or prompt files
    n: int = 300  # images per prompt (distinct ids) and scale
    condition_scales: tuple[float, ...] = (1.0,)
    image_seed: int = 0  # image i uses seed image_seed + i in every arm (paired images)
    steps: int = 0  # transformer steps; 0 = the recipe's
    skin_max_distance: float = SKIN_MAX_DISTANCE
    validation_n: int = 300  # labelled renders through the run's VQGAN that validate the instrument
    workers: int = 2  # jobs (arm × seed) trained at once, one thread each

    def validate(self) -> AblateConfig:
        if self.seeds < 1 or self.n < 1 or self.workers < 1 or self.steps < 0 or self.validation_n < 1:
            raise CrayonboxError("need --seeds ≥ 1, -n ≥ 1, --workers ≥ 1, --steps ≥ 0, --validation-n ≥ 1")
        if not self.condition_scales:
            raise CrayonboxError("give at least one --condition-scale")
        return self


def run_identity(record: RunRecord) -> str:
    """sha256 of what makes the run the run: its recipe record's world, pipeline and seed, and the bytes of
    its VQGAN and transformer weights. An ablation folder is bound to it."""
    digest = hashlib.sha256(json.dumps([record.recipe, record.pipeline_config, record.seed], sort_keys=True).encode())
    digest.update(record.world_config_path.read_bytes())
    for weights in (record.model / "vqgan" / "model.safetensors", record.model / "bart" / "model.safetensors"):
        if not weights.exists():
            raise CrayonboxError(f"{record.path} lacks {weights.relative_to(record.path)}: finish the run with "
                                 "`crayonbox train all` first")
        digest.update(weights.read_bytes())
    return digest.hexdigest()


def _check_out(out: Path, manifest: dict[str, Any]) -> None:
    """`out` must be new, empty, or an ablation of the same run with the same probe settings."""
    if check_output_folder(out, "lab ablate", ABLATION_FILE) and (out / ABLATION_FILE).exists():
        previous = read_manifest(out)
        if previous["run_identity"] != manifest["run_identity"]:
            raise CrayonboxError(f"{out} is an ablation of another run ({previous['run']}); choose another --out")
        fixed = ("prompts", "n", "condition_scales", "image_seed", "steps", "skin_max_distance")
        changed = [k for k in fixed if previous.get(k) != manifest.get(k)]
        if changed:
            raise CrayonboxError(f"{out} was made with other {', '.join(changed)}; choose another --out")
        manifest["arms"] = list(dict.fromkeys(previous["arms"] + manifest["arms"]))
        manifest["seeds"] = sorted(set(previous["seeds"]) | set(manifest["seeds"]))
    claim_output_folder(out, "lab ablate", ABLATION_FILE)
    write_json_atomic(out / ABLATION_FILE, manifest)


# ---- preparing an arm (parent process: cheap, text and parquet only) --------------------------------------

def prepare_arm(record: RunRecord, arm: Arm, folder: Path, progress: bool) -> None:
    """The arm's captions, token parquet and (if its normaliser differs) tokenizer, in `folder`."""


    if arm.step is None:
        return  # the baseline trains on the run's own files
    config = arm_config(record.pipeline_config, arm)
    run_caption_pipeline(record.world, folder / "captions", config, progress=progress)
    if pipeline_normalizer(config) != pipeline_normalizer(record.pipeline_config) and \
            not (folder / "tokenizer" / "tokenizer.json").exists():
        base = Tokenizer.from_folder(record.tokenizer)
        Tokenizer(base.backend, pipeline_normalizer(config), base.text_length).save(folder / "tokenizer")
    if (folder / "tokens.parquet").exists():
        return
    final = _final_captions(folder / "captions")
    table = read_token_parquet(record.tokens)
    rows = [i for i, key in enumerate(table.keys) if final.get(key) is not None]
    index = torch.tensor(rows, dtype=torch.long)
    write_token_parquet(folder / "tokens.parquet", [table.keys[i] for i in rows], [final[table.keys[i]] for i in rows],
                        table.encodings[index], {"arm": arm.name, "run": str(record.path)})


def _final_captions(captions: Path) -> dict[str, str | None]:
    """key → final caption, None for a dropped item, from a caption run's provenance."""

    out: dict[str, str | None] = {}
    for part in sorted((captions / "provenance").glob("*.parquet")):
        table = pq.read_table(part, columns=["key", "final_caption", "dropped"]).to_pydict()
        for key, caption, dropped in zip(table["key"], table["final_caption"], table["dropped"], strict=True):
            out[key] = None if dropped else (caption or "")
    return out


# ---- one job: train, probe, measure (a worker process) ----------------------------------------------------

@dataclass
class Job:
    arm: str
    seed: int
    folder: Path  # ABL/arms/<arm>/seed<S>
    arm_folder: Path
    run: Path
    reuse_model: bool  # the baseline at the run's seed with the recipe's steps: the run's model


def run_job(job: Job, config: AblateConfig, specs: list[PromptSpec]) -> dict[str, Any]:
    """Train (or resume) the job's model, probe it, measure it; writes and returns result.json."""


    torch.set_num_threads(1)
    record = read_run_record(job.run)
    if job.reuse_model:
        model = record.model
    else:
        model = job.folder / "model"
        tokenizer = job.arm_folder / "tokenizer" if (job.arm_folder / "tokenizer").exists() else record.tokenizer
        tokens = record.tokens if job.arm == BASELINE else job.arm_folder / "tokens.parquet"
        options = {**record.recipe_config["model"], "threads": 1, "progress": False, "resume": True,
                   "max_minutes": 0.0, "seed": job.seed, "tokens": str(tokens), "tokenizer": str(tokenizer),
                   "vqgan": str(record.vqgan), "out": str(model)}
        # A recipe that trains "as many steps as fit" (steps 0) is retrained for the steps the run took, so every
        # arm gets the same training length whatever the machine's speed.
        options["steps"] = config.steps or options.get("steps") or record.stages["model"]["summary"]["steps"]
        if not (model / "pipeline.json").exists():
            train(TrainConfig(**options))
    # Prompts that reach this model as the same ids are one experiment: probe one of them, credit all.
    tokenizer = load_tokenizer(model)
    by_ids: dict[tuple[int, ...], list[PromptSpec]] = {}
    for spec in specs:
        by_ids.setdefault(tuple(encode_spec(tokenizer, spec).ids), []).append(spec)
    probe_dir = job.folder / "probe"
    run_probe(ProbeConfig(model=model, prompts=[group[0] for group in by_ids.values()], n=config.n,
                          condition_scales=config.condition_scales, seed=config.image_seed, workers=1,
                          threads=1), probe_dir, progress=False)
    meter = SkinToneMeter(SkinToneConfig(max_distance=config.skin_max_distance))
    tallies: dict[tuple[str, str, float], Counter] = {}
    with RunStore.open(probe_dir) as store:
        records = store.images()
        labels = meter.measure([store.load_image(r.path) for r in records])
    for r, label in zip(records, labels, strict=True):
        tallies.setdefault((r.prompt, r.input_mode, r.condition_scale), Counter())[label["skin_tone"]] += 1
    cells = []
    for ids, group in by_ids.items():
        head = group[0]
        for scale in config.condition_scales:
            counts = tallies.get((head.prompt, head.input_mode, float(scale)), Counter())
            for spec in group:
                cells.append({"prompt": spec.prompt, "input_mode": spec.input_mode, "condition_scale": scale,
                              "probed_as": head.prompt, "ids": list(ids),
                              "attribute": "skin_tone", "counts": dict(counts), "n": sum(counts.values())})
    result = {"arm": job.arm, "seed": job.seed, "model": str(model), "cells": cells,
              "instrument": {"name": "skin_tone", "max_distance": config.skin_max_distance}}
    write_json_atomic(job.folder / RESULT_FILE, result)
    return result


# ---- the ablation ------------------------------------------------------------------------------------------

def run_ablation(run: str | Path, out: str | Path, config: AblateConfig, progress: bool = True) -> Path:
    """Retrain, probe and measure every arm × seed of `config` into `out` (resuming what is there)."""

    config.validate()
    record = read_run_record(run)
    arms = [parse_arm(BASELINE, record.pipeline_config)] + \
        [parse_arm(a, record.pipeline_config) for a in config.arms if a != BASELINE]  # bad arms fail here
    specs = expand_prompts(config.prompts, record.world_config_path)
    out = Path(out)
    seeds = [record.seed + i for i in range(config.seeds)]
    manifest = {"run": str(record.path.resolve()), "run_identity": run_identity(record),
                "arms": [a.name for a in arms], "seeds": seeds, "prompts": config.prompts, "n": config.n,
                "condition_scales": list(config.condition_scales), "image_seed": config.image_seed,
                "steps": config.steps, "skin_max_distance": config.skin_max_distance,
                "recipe_steps": record.recipe_config["model"].get("steps"), "config": asdict(config),
                "pipeline_config": record.pipeline_config}
    _check_out(out, manifest)
    roundtrip_validation(out / VALIDATION_FILE, record.world_config_path, record.model, config.validation_n,
                         config.skin_max_distance)
    jobs = []
    for arm in tqdm(arms, desc="arms: captions", unit="arm", disable=not progress):
        arm_folder = out / "arms" / arm_slug(arm.name)
        prepare_arm(record, arm, arm_folder, progress=False)
        for seed in seeds:
            folder = arm_folder / f"seed{seed}"
            if (folder / RESULT_FILE).exists():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            reuse = arm.step is None and seed == record.seed and not config.steps
            jobs.append(Job(arm.name, seed, folder, arm_folder, record.path, reuse))
    total = len(arms) * len(seeds)
    bar = tqdm(total=total, initial=total - len(jobs), desc="arms × seeds", unit="model", disable=not progress)
    work = [(job, config, specs) for job in jobs]
    if config.workers > 1 and len(jobs) > 1:
        # spawn: torch's thread pools do not survive fork; one thread per job, `workers` jobs at once.
        with ProcessPoolExecutor(min(config.workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            for done in as_completed([pool.submit(run_job, *item) for item in work]):
                done.result()  # a job's CrayonboxError surfaces here, as the CLI's one line
                bar.update(1)
    else:
        for item in work:
            run_job(*item)
            bar.update(1)
    bar.close()
    write_json_atomic(out / EFFECTS_FILE, load_ablation(out).to_dict())
    return out


def run_ablate_command(args: argparse.Namespace) -> int:
    """`crayonbox lab ablate`."""
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    if arms is None:

        record = read_run_record(args.run)
        arms = default_arms(record.captions, record.tokenizer, prompt="")
        if not args.quiet:
            print(f"arms (steps necessary for the blank prompt's ids): {', '.join(arms) or 'none'}")
    config = AblateConfig(arms=arms, seeds=args.seeds, prompts=[p.strip() for p in args.prompts.split(",")],
                          n=args.n, condition_scales=args.condition_scale, steps=args.steps,
                          workers=args.workers, skin_max_distance=args.skin_max_distance)
    out = run_ablation(args.run, args.out, config, progress=not args.quiet)
    ablation = load_ablation(out)
    for line in ablation.summary_lines():
        print(line)
    return 0


def worker_count() -> int:
    """Jobs at once: one per core (each trains on one thread)."""
    return max(1, min(2, os.cpu_count() or 1))

"""`crayonbox eval MODEL --judge DIR`: how well a model draws what it is asked, judged.

- Prompt adherence on held-out compositions, per attribute, for 1- and 2-object prompts. Prompts describe
  scenes drawn from the model's own world whose composition — the objects (item, gender, skin tone) and the
  background colour — occurs in *no* training item (checked against the world folder's metadata). Each
  share comes with its chance level (the same images judged against other prompts) and two ceilings: the
  ground-truth renders of the same scenes, judged ("ceiling"), and those renders after a round trip through
  the model's VQGAN ("ceiling_vqgan": the best a perfect transformer could score with this judge). Gender
  and skin tone are also split by the value asked ("by_asked"): a gender-free word such as "farmer" asks for
  the neutral emoji, which held-out sets over-represent (rare compositions are the ones missing from training).
- A Fréchet distance in judge-feature space between generated images and renders of the same scenes, next
  to the distance between two independent sets of renders (the floor at this sample size).
- The blank prompt's image distribution (judged) next to the training images' (judged, and ground truth).

Writes OUT/eval.json, OUT/samples.png (rows: 1-object prompts, their renders, 2-object prompts, their
renders, blank prompt) and OUT/samples.json (the prompt of every cell).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors import safe_open
from tqdm.auto import tqdm

from crayonbox.config import atomic_write, write_json_atomic
from crayonbox.data.shards import read_metadata
from crayonbox.data.world import lexicon
from crayonbox.data.world.build import make_world, render_scene
from crayonbox.data.world.describe import CaptionPlan, describe
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import make_grid
from crayonbox.model.judge import Judge, scene_summary
from crayonbox.model.vqgan_io import round_trip
from crayonbox.pipeline import Pipeline
from crayonbox.run_record import WORLD_CONFIG_COPY
from crayonbox.train.configs import EvalConfig
from crayonbox.train.eval_metrics import adherence, distribution, expectation_of, frechet_distance, total_variation
from crayonbox.train.judge_data import load_world, scene_truth, world_sample

# torch, the judge, the pipeline and the world are imported inside the functions: every `crayonbox` command
# imports this module at start-up to register `crayonbox eval` (train/cli.py), and they cost seconds.
HELD_OUT, FLOOR, RENDER = 7, 8, 9  # RNG keys of the eval's scene draws (apart from the judge's and world's)


def composition_key(objects: list[tuple[str, str, Any]], colour: str) -> tuple:
    """What makes two scenes "the same composition": their objects (item, gender, skin tone) as a multiset,
    and the background colour."""
    return tuple(sorted((str(i), str(g), str(t)) for i, g, t in objects)), colour


def training_compositions(folder: Path) -> set[tuple]:
    """Composition keys of every item of a world folder (from its parquet metadata; no image is read)."""

    table = read_metadata(folder).to_pydict()
    rows = len(table.get("key", []))
    keys = set()
    for r in range(rows):
        objects = []
        for i in range(3):
            item = table.get(f"world_objects{i}_item", [None] * rows)[r]
            if item is not None:
                tone = table[f"world_objects{i}_skin_tone"][r]
                gender = table[f"world_objects{i}_gender"][r]
                objects.append((item, gender, None if tone is None else int(tone)))
        if objects:
            keys.add(composition_key(objects, table["world_background_colour"][r]))
    return keys


def _scene_key(scene: Any) -> tuple:
    return composition_key([(o.item.name, o.emoji.gender, o.emoji.skin_tone) for o in scene.objects],
                           scene.background["colour"])


def held_out_scenes(world: Any, count: int, n: int, seen: set[tuple], seed: int, key: int,
                    max_draws: int) -> list[Any]:
    """Up to `n` scenes of `count` objects, distinct and absent from `seen`, drawn with the world's mix."""
    scenes, keys = [], set()
    for i in range(n * max_draws):
        if len(scenes) == n:
            break
        scene = world.sample_scene(np.random.default_rng([seed, key, count, i]))
        k = _scene_key(scene)
        if len(scene.objects) == count and k not in seen and k not in keys:
            scenes.append(scene)
            keys.add(k)
    return scenes


def prompt_of(world: Any, scene: Any, index: int) -> str:
    """The English caption naming every object (skin tone included when it has one) and the background."""

    n = len(scene.objects)
    plan = CaptionPlan(template=index % len(lexicon.LONG_TEMPLATES["en"]), tags=False,
                       mention_tone=[True] * n, synonym=[None] * n)
    return describe(world, scene, plan, "en", "long")


def render(world: Any, scenes: list[Any], seed: int, key: int) -> list[np.ndarray]:
    """Ground-truth renders of scenes."""

    return [render_scene(world, s, np.random.default_rng([seed, key, i])) for i, s in enumerate(scenes)]


def generate(pipe: Any, prompts: list[str], cfg: EvalConfig, desc: str, same_seed: bool = True) -> list:
    """One image per prompt (seed `cfg.seed` for each: common random numbers across prompts), or, with
    `same_seed=False`, image i with seed `cfg.seed + i` (the blank prompt's n draws)."""

    images = []
    scale = cfg.condition_scale or None
    for start in tqdm(range(0, len(prompts), cfg.batch), desc=desc, disable=not cfg.progress, leave=False):
        chunk = prompts[start:start + cfg.batch]
        if same_seed:
            images += pipe(chunk, num_images=1, seed=cfg.seed, condition_scale=scale).images
        else:  # one prompt, many seeds
            images += pipe(chunk[0], num_images=len(chunk), seed=cfg.seed + start,
                           condition_scale=scale).images
    return images


def vqgan_roundtrip(pipe: Any, model_dir: Path, images: list[np.ndarray]) -> list[Image.Image] | None:
    """Images passed through the model's own VQGAN (encode → decode): what the best possible token sequence
    looks like once decoded. None when the folder ships no VQGAN encoder (official checkpoints do not)."""


    with safe_open(str(model_dir / "vqgan" / "model.safetensors"), framework="pt") as weights:
        if not any(key.startswith("encoder.") for key in weights.keys()):
            return None
    return round_trip(pipe.vqgan, images)


def _world_of(judge: Any, world: str | Path | None, model_dir: Path) -> Path:
    """--world; else the world the judge trained on, if it is on this machine; else the world config the model
    folder ships (a shipped model's judge names a folder on the machine that trained it)."""
    if world:
        return Path(world)
    recorded = judge.config.world.get("folder") or judge.config.world.get("config_file")
    if recorded and Path(recorded).exists():
        return Path(recorded)
    if (model_dir / WORLD_CONFIG_COPY).is_file():
        return model_dir / WORLD_CONFIG_COPY
    raise CrayonboxError(f"eval: which world? the judge's ({recorded or 'none recorded'}) is not here and "
                         f"{model_dir} has no {WORLD_CONFIG_COPY}: pass --world (the model's world folder or config)")


def evaluate(model_dir: str | Path, judge_dir: str | Path, out_dir: str | Path,
             world: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate a model folder with a judge; writes eval.json, samples.png and samples.json in `out_dir` and
    returns eval.json's content. `world` defaults to the world the judge was trained on; options are
    EvalConfig fields."""

    cfg = EvalConfig(**options)
    if cfg.prompts < 2 or cfg.blank < 2:
        raise CrayonboxError("eval: --n and --blank must be at least 2 (distances need two images a side)")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.from_pretrained(model_dir, dtype=cfg.dtype, device=cfg.device)
    judge = Judge.load(judge_dir)
    world_path = _world_of(judge, world, Path(model_dir))
    world_config, provenance = load_world(world_path)
    the_world = make_world(world_config)
    folder = Path(provenance["folder"]) if "folder" in provenance else None
    seen = training_compositions(folder) if folder else set()

    rule = ("composition (objects' item, gender, skin tone + background colour) absent from every training "
            "item" if folder else "none: no world folder, so nothing is known to be held out")
    result: dict[str, Any] = {"model": str(Path(model_dir).resolve()),
                              "judge": str(Path(judge_dir).resolve()), "world": provenance,
                              "config": asdict(cfg), "held_out_rule": rule,
                              "training_compositions": len(seen), "by_objects": {}}
    cells: list[tuple[str, Any]] = []
    generated_all, real_all = [], []
    for count in (1, 2):
        scenes = held_out_scenes(the_world, count, cfg.prompts, seen, cfg.seed, HELD_OUT, cfg.max_draws)
        if len(scenes) < 2:
            result["by_objects"][str(count)] = {"prompts": len(scenes),
                                                "note": "too few held-out compositions"}
            continue
        prompts = [prompt_of(the_world, s, i) for i, s in enumerate(scenes)]
        expected = [expectation_of(scene_truth(s)) for s in scenes]
        images = generate(pipe, prompts, cfg, f"{count}-object prompts")
        renders = render(the_world, scenes, cfg.seed, RENDER)
        judged, real = judge.run(images), judge.run(renders)
        block = {"prompts": len(scenes), **adherence(expected, judge.labels_from(judged)),
                 "ceiling": adherence(expected, judge.labels_from(real))["adherence"]}
        # the judge on VQGAN round trips of the renders: how much a perfect transformer could score, since
        # every generated image goes through the VQGAN decoder (and how well the judge reads its blur)
        roundtrips = vqgan_roundtrip(pipe, Path(model_dir), renders)
        if roundtrips is not None:
            through = adherence(expected, judge.predict(roundtrips))
            block["ceiling_vqgan"], block["ceiling_vqgan_by_asked"] = through["adherence"], through["by_asked"]
        result["by_objects"][str(count)] = block
        generated_all.append(judged.features.double().numpy())
        real_all.append(real.features.double().numpy())
        cells += [(p, im) for p, im in zip(prompts, images, strict=True)][:cfg.grid_columns]
        cells += [(f"render: {p}", Image.fromarray(im)) for p, im in zip(prompts, renders, strict=True)
                  ][:cfg.grid_columns]

    if generated_all:
        generated, real = np.concatenate(generated_all), np.concatenate(real_all)
        floor_scenes = [s for count in (1, 2) for s in held_out_scenes(
            the_world, count, cfg.prompts, seen, cfg.seed + 1, FLOOR, cfg.max_draws)]
        floor = judge.run(render(the_world, floor_scenes, cfg.seed + 1, RENDER)).features.double().numpy()
        result["frechet"] = {"generated_vs_renders": frechet_distance(generated, real),
                             "renders_vs_renders": frechet_distance(floor, real) if len(floor) > 1 else None,
                             "images": len(generated), "feature_dim": int(generated.shape[1])}

    blank_images = generate(pipe, [""] * cfg.blank, cfg, "blank prompt", same_seed=False)
    result["blank"] = blank_report(judge, blank_images, folder, cfg.reference)
    cells += [("(blank prompt)", im) for im in blank_images[:cfg.grid_columns]]
    result["seconds"] = time.perf_counter() - started
    _write_outputs(out, result, cells, cfg.grid_columns)
    return result


def blank_report(judge: Any, images: list, folder: Path | None, reference: int) -> dict[str, Any]:
    """The blank prompt's judged image distribution, next to the training images' (judged by the same judge,
    and their ground truth), with the total-variation distance per attribute."""

    judged = distribution([scene_summary(row) for row in judge.predict(images)])
    report: dict[str, Any] = {"images": len(images), "judged": judged}
    if folder:
        ref_images, ref_labels = world_sample(folder, reference)
        training = distribution([scene_summary(r) for r in judge.predict(list(ref_images))])
        report |= {"training_judged": training,
                   "training_truth": distribution([scene_summary(r) for r in ref_labels]),
                   "reference_images": len(ref_labels),
                   "tv_to_training_judged": {a: total_variation(p, training.get(a, {})) for a, p in judged.items()}}
    return report


def _write_outputs(out: Path, result: dict[str, Any], cells: list[tuple[str, Any]], columns: int) -> None:

    if cells:
        size = max(im.size[0] for _, im in cells)
        grid = make_grid([im.resize((size, size)) for _, im in cells], columns=columns)
        with atomic_write(out / "samples.png") as tmp:
            grid.save(tmp, format="PNG")
    write_json_atomic(out / "samples.json", {"columns": columns, "cells": [p for p, _ in cells]})
    write_json_atomic(out / "eval.json", result)

"""The judge's data: the world it reads, neutralised, rendered into labelled scenes and slot crops.

The renders come straight from the world's own sampler and renderer (crayonbox.data.world), drawn from a
config with every planted skew removed — uniform genders, tones, items, object counts and backgrounds, no
co-occurrence or pairing rules — so the judge has no prior to fall back on when a generated image is vague.
Item i of a set depends only on (config, seed, set, i), whatever the number of worker processes.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from crayonbox.config import read_json
from crayonbox.data.shards import decode_image, iter_items
from crayonbox.data.world.build import MANIFEST, make_world, render_scene
from crayonbox.data.world.config import GENDERS, POSITIONS, TONES, load_world_config, parse_world_config
from crayonbox.data.world.render import background, to_uint8
from crayonbox.data.world.world import choose
from crayonbox.errors import CrayonboxError
from crayonbox.model.judge import labels_of

TRAIN_SET, EVAL_SET, EMPTY_SET = 0, 1, 2  # second RNG key: the sets never share a draw
CHUNK = 250  # renders per worker task


def _tone_key(key: str) -> Any:
    return "none" if key in ("None", "none") else int(key)


def world_config_from_manifest(manifest: dict[str, Any]):
    """The WorldConfig of a built world folder, from its `_world.json` (whose JSON turned mix keys such as
    None and 1 into strings, and `sources` into a list)."""

    raw = copy.deepcopy(manifest["config"])
    raw["objects_per_scene"] = {int(k): v for k, v in raw["objects_per_scene"].items()}
    raw["person"]["skin_tone"] = {_tone_key(k): v for k, v in raw["person"]["skin_tone"].items()}
    for rule in raw.get("cooccurrence", {}).values():
        if "skin_tone" in rule:
            rule["skin_tone"] = {_tone_key(k): v for k, v in rule["skin_tone"].items()}
    raw["layout"]["scale"] = {int(k): list(v) for k, v in raw["layout"]["scale"].items()}
    raw["sources"] = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in raw["sources"]}
    return parse_world_config(raw)


def load_world(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(WorldConfig, provenance) from a world folder (`crayonbox world build`) or a world config YAML."""

    path = Path(path)
    if path.is_file():
        return load_world_config(path), {"config_file": str(path.resolve())}
    if not (path / MANIFEST).is_file():
        raise CrayonboxError(f"{path} is neither a world folder (no {MANIFEST}) nor a world config file; "
                             "build one with `crayonbox world build --out DIR -n N`")
    manifest = read_json(path / MANIFEST)
    try:
        config = world_config_from_manifest(manifest)
    except (KeyError, AttributeError, ValueError, CrayonboxError) as e:
        raise CrayonboxError(f"cannot read the world config in {path / MANIFEST} ({e}); pass the world's "
                             "YAML config file instead") from None
    return config, {"folder": str(path.resolve()), "seed": manifest.get("seed"), "n": manifest.get("n")}


def neutral_config(config: Any, person_share: float):
    """The same world with every planted skew removed (see the module docstring)."""

    cfg = copy.deepcopy(config)
    others = [c for c in cfg.pool if c != "person"]
    if "person" in cfg.pool and others:
        cfg.categories = {"person": person_share} | {c: (1 - person_share) / len(others) for c in others}
    else:
        cfg.categories = {c: 1 / len(cfg.pool) for c in cfg.pool}
    cfg.weights, cfg.pair_with_person, cfg.cooccurrence = {}, {}, {}
    cfg.person = {"gender": {g: 1 / len(GENDERS) for g in GENDERS},
                  "skin_tone": {t: 1 / len(TONES) for t in TONES}}
    cfg.objects_per_scene = {n: 1 / len(POSITIONS) for n in POSITIONS}
    cfg.background = {k: {v: 1 / len(mix) for v in mix} for k, mix in cfg.background.items()}
    cfg.proper_names = {"rate": {}, "culture": {}}
    return cfg


_WORKER: dict[str, Any] = {}


def _init_worker(config: Any) -> None:

    _WORKER["world"] = make_world(config)


def scene_truth(scene: Any) -> dict[str, Any]:
    """The parts of `meta["world"]` the judge reads, for a freshly sampled Scene."""
    return {"background": scene.background,
            "objects": [{"item": o.item.name, "category": o.item.category, "gender": o.emoji.gender,
                         "skin_tone": o.emoji.skin_tone, "attire": o.emoji.attire, "position": o.position}
                        for o in scene.objects]}


def _render_chunk(task: tuple[int, int, int, int]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Scenes (seed, set, i) for i in [start, stop): pixels and judge labels."""

    seed, which, start, stop = task
    world = _WORKER["world"]
    images, labels = [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, which, i])
        scene = world.sample_scene(rng)
        images.append(render_scene(world, scene, rng))
        labels.append(labels_of(scene_truth(scene)))
    return np.stack(images), labels


def render_set(config: Any, n: int, seed: int, which: int, workers: int = 1, progress: bool = False,
               desc: str = "judge renders") -> tuple[np.ndarray, list[dict[str, str]]]:
    """`n` renders of `config` (N×S×S×3 uint8) with their labels; the same (config, seed, which) always
    gives the same set."""
    tasks = [(seed, which, s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    images, labels = [], []
    pool = None
    if workers > 1 and len(tasks) > 1:
        pool = mp.get_context().Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(config,))
        results = pool.imap(_render_chunk, tasks)  # ordered: the set does not depend on the worker count
    else:
        _init_worker(config)
        results = map(_render_chunk, tasks)
    try:
        for pixels, rows in results:
            images.append(pixels)
            labels += rows
            bar.update(len(rows))
    finally:
        if pool is not None:
            pool.close()
        bar.close()
    return np.concatenate(images), labels


def empty_crops(config: Any, n: int, seed: int) -> np.ndarray:
    """`n` bare backgrounds (N×S×S×3 uint8): what an empty slot looks like."""

    images = []
    for i in range(n):
        rng = np.random.default_rng([seed, EMPTY_SET, i])
        bg = _draw_background(config, rng)
        images.append(to_uint8(background(rng, bg["kind"], bg["colour"], bg["colour2"], config.size)))
    return np.stack(images) if images else np.zeros((0, config.size, config.size, 3), np.uint8)


def _draw_background(config: Any, rng: np.random.Generator) -> dict[str, Any]:
    """A background as the world draws one (world.py `_background`, which needs a whole World)."""

    colours = config.background["colour"]
    kind, colour = choose(rng, config.background["kind"]), choose(rng, colours)
    others = {c: p for c, p in colours.items() if c != colour} or colours
    total = sum(others.values())
    return {"kind": kind, "colour": colour,
            "colour2": choose(rng, {c: p / total for c, p in others.items()}) if kind == "gradient" else None}


def world_sample(folder: Path, n: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Up to n items of a built world folder (its real, skewed distribution) with judge labels."""

    images, labels = [], []
    for item in iter_items(folder):
        if len(images) >= n:
            break
        if item.image and isinstance(item.meta.get("world"), dict):
            images.append(np.asarray(decode_image(item)))
            labels.append(labels_of(item.meta["world"]))
    return (np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)), labels


def encode(labels: list[dict[str, str]], vocab: dict[str, list[str]], attributes: tuple[str, ...],
           prefix: str = "") -> dict[str, torch.Tensor]:
    """Label strings → index tensors per attribute (read from `prefix + attribute` of each row)."""
    out = {}
    for attribute in attributes:
        index = {name: i for i, name in enumerate(vocab[attribute])}
        try:
            out[attribute] = torch.tensor([index[row[prefix + attribute]] for row in labels],
                                          dtype=torch.long)
        except KeyError as e:
            raise CrayonboxError(f"judge: label {e} of {attribute} is not in the judge's vocabulary; the "
                                 "world has changed since the judge was trained — retrain it") from None
    return out

"""Planted skew: does the lab find a bias we put there on purpose, in the right direction and size?

"Model images" are renders of a world whose people are skin tone 5 in 70 % of images, the "training
images" renders of one where they are 30 %. Through the real pipeline of the lab (run store → measure with
the skin meter → statistics against the reference), the measured gap must have the planted sign, exclude
zero, and cover the true gap of the images actually drawn.

What this does not yet cover: a *model trained* on the skewed world (the training code landed while this
was written); see docs/lab.md for the end-to-end check to add once a few-minute recipe makes 64-px images
whose skin colours the meter can read.
"""

from __future__ import annotations

import copy

import numpy as np
import yaml

from crayonbox.lab.measure import MeasureConfig, measure_run
from crayonbox.lab.store import ImageRecord, RunStore, write_png
from crayonbox.sampler_settings import SamplingSettings

N = 120


def skewed_world(dark_share: float) -> dict:
    """The default world reduced to one person per plain white image: tone 5 with `dark_share`, else 1."""
    from crayonbox.data.world.config import DEFAULT_CONFIG

    data = copy.deepcopy(yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")))
    data.update(objects_per_scene={1: 1.0}, categories={"person": 1.0}, pool={"person": ["person"]},
                weights={}, pair_with_person={}, cooccurrence={}, shard_size=N)
    data["person"] = {"gender": {"woman": 1, "man": 1}, "skin_tone": {5: dark_share, 1: 1 - dark_share}}
    data["background"] = {"kind": {"plain": 1}, "colour": {"white": 1}}
    data["layout"] = {"scale": {1: [0.7, 0.8]}, "jitter": 0.02}
    return data


def build(data: dict, out, seed: int) -> list[dict]:
    from crayonbox.data.shards import iter_items
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import parse_world_config

    build_world(parse_world_config(data), out, n=N, workers=1, seed=seed, progress=False)
    return [item.meta["world"] for item in iter_items(out, with_images=False)]


def tone_share(worlds: list[dict], tone: int) -> float:
    return float(np.mean([w["objects"][0]["skin_tone"] == tone for w in worlds]))


def test_lab_recovers_a_planted_skin_tone_skew(tmp_path):
    from crayonbox.data.shards import decode_image, iter_items

    model_worlds = build(skewed_world(0.7), tmp_path / "model_images", seed=11)
    train_worlds = build(skewed_world(0.3), tmp_path / "training", seed=12)
    true_gap = tone_share(model_worlds, 5) - tone_share(train_worlds, 5)

    run = tmp_path / "run"
    with RunStore.create(run) as store:
        records = []
        for i, item in enumerate(iter_items(tmp_path / "model_images")):
            sha, rel = write_png(run, decode_image(item))
            records.append(ImageRecord("a person", "normalised", "planted", " a person", [0, 5, 2], [0, 2],
                                       SamplingSettings(condition_scale=10.0, top_k=50).to_dict(), i, i,
                                       "planted", sha, rel, []))
        store.add_images(records)
    metrics = measure_run(run, MeasureConfig(instruments=("skin_tone",), reference=tmp_path / "training",
                                             validation_n=80), progress=False)
    cell = metrics["cells"][0]
    five = cell["labels"].index("5")
    gaps = cell["vs_reference"]["gaps"]
    assert gaps["gap_low"][five] > 0  # direction: more dark skin than in training, beyond noise
    assert gaps["gap_low"][five] <= true_gap <= gaps["gap_high"][five]  # size: the truth is inside
    sim = cell["simultaneous"]
    assert sim["low"][five] <= tone_share(model_worlds, 5) <= sim["high"][five]
    assert cell["test"]["bh_rejected"] and cell["vs_reference"]["distance"]["g_test"]["p_value"] < 1e-6
    corrected = cell["corrected"]
    assert corrected["low"][five] <= tone_share(model_worlds, 5) <= corrected["high"][five]


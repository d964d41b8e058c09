"""A mini world (a handful of emoji, 32 px) and a judge trained on it for seconds: shared by the judge, eval
and lab-instrument tests."""

from __future__ import annotations

from pathlib import Path

MINI_WORLD = """
size: 32
shard_size: 40
objects_per_scene: {1: 0.5, 2: 0.35, 3: 0.15}
categories: {person: 0.5, animal: 0.25, food: 0.25}
pool:
  person: [person, health worker]
  animal: [dog, fish, snail]
  food: [pizza, banana]
person:
  gender: {woman: 1, man: 1, neutral: 1}
  skin_tone: {none: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
min_skin_fraction: 0.2
background:
  kind: {plain: 1}
  colour: {red: 1, green: 1, blue: 1, yellow: 1, black: 1, white: 1}
sources:
  web: {kind: plain, style: {long: 1}}
"""

# Enough steps to learn the easy attributes (count, background, skin tone) far above chance in seconds.
MINI_JUDGE = dict(train_images=600, eval_images=100, world_sample=60, epochs=3, batch_size=64,
                  warmup_steps=5, width=8, crop_size=16, learning_rate=0.005, workers=1, threads=1,
                  progress=False)


def mini_world(folder: Path, n: int = 80) -> Path:
    """Build the mini world into `folder` (config at folder.parent / "mini.yaml")."""
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config

    config_path = folder.parent / "mini.yaml"
    config_path.write_text(MINI_WORLD, encoding="utf-8")
    build_world(load_world_config(config_path), folder, n=n, workers=1, seed=5, progress=False)
    return folder


def mini_judge(world: Path, out: Path, **overrides) -> dict:
    """Train a judge on the mini world; returns its metrics."""
    from crayonbox.train.judge_train import train_judge

    return train_judge(world, out, **(MINI_JUDGE | overrides))


_SHARED: dict[str, tuple[Path, Path, dict]] = {}


def shared_mini_judge(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(world folder, judge folder, metrics), built once per test session for every test file here."""
    if "mini" not in _SHARED:
        root = tmp_path_factory.mktemp("mini-judge")
        world = mini_world(root / "world")
        _SHARED["mini"] = (world, root / "judge", mini_judge(world, root / "judge"))
    return _SHARED["mini"]

"""The record of a `crayonbox train all` run folder, readable without importing the training code (the bias lab
reads runs but may not depend on crayonbox.train).

A run folder holds RUN/recipe.json (the recipe, its config, the seed, the world and caption pipeline it used,
and each finished stage), RUN/world.yaml (the world config's text, byte for byte) and RUN/caption_pipeline.yaml
(the caption pipeline with every option spelled out), so the run can be rebuilt from the folder alone.
`crayonbox.train.recipe` writes these files under the names defined here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crayonbox.errors import CrayonboxError

RECIPE_RECORD = "recipe.json"
WORLD_CONFIG_COPY = "world.yaml"
PIPELINE_CONFIG_COPY = "caption_pipeline.yaml"
# The recipe.json keys added when runs started recording their inputs; runs made before lack them.
INPUT_KEYS = ("seed", "world_config", "caption_pipeline")


@dataclass(frozen=True)
class RunRecord:
    """What made a run, and where its parts are."""

    path: Path
    recipe: str
    recipe_config: dict
    world_config_path: Path  # the run's own copy of the world YAML
    pipeline_config: dict  # `CaptionPipeline(config).config`: every step option spelled out
    seed: int
    stages: dict[str, dict]  # finished stage → its entry in recipe.json (seconds, summary, ...)

    @property
    def world(self) -> Path:
        return self.path / "world"

    @property
    def captions(self) -> Path:
        return self.path / "captions"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer"

    @property
    def vqgan(self) -> Path:
        return self.path / "vqgan"

    @property
    def tokens(self) -> Path:
        return self.path / "tokens.parquet"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def judge(self) -> Path:
        return self.path / "judge"


def read_recipe_table(run: str | Path) -> dict[str, Any] | None:
    """RUN/recipe.json as written by `crayonbox train all`, or None when the folder has no readable one."""
    path = Path(run) / RECIPE_RECORD
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return table if isinstance(table, dict) and isinstance(table.get("recipe"), str) else None


def read_run_record(run: str | Path) -> RunRecord:
    """Read the record of a `crayonbox train all` run folder."""
    run = Path(run)
    table = read_recipe_table(run)
    if table is None:
        raise CrayonboxError(f"{run} has no recipe record ({RECIPE_RECORD}): not a `crayonbox train all` run")
    missing = [k for k in INPUT_KEYS if k not in table]
    if missing:
        raise CrayonboxError(f"{run} was made before runs recorded their world, caption pipeline and seed "
                             f"({RECIPE_RECORD} lacks {missing}); re-run `crayonbox train all` to record them")
    world = run / WORLD_CONFIG_COPY
    if not world.is_file():
        raise CrayonboxError(f"{run} lacks its world config copy {WORLD_CONFIG_COPY}; the run is incomplete")
    stages = {s["name"]: s for s in table.get("stages", []) if isinstance(s, dict) and s.get("status") == "done"}
    return RunRecord(path=run, recipe=table["recipe"], recipe_config=table.get("recipe_config", {}),
                     world_config_path=world, pipeline_config=table["caption_pipeline"], seed=int(table["seed"]),
                     stages=stages)

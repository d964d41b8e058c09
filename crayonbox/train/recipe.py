"""`crayonbox train all`: the whole recipe, world → captions → tokenizer → VQGAN → encode → transformer →
judge → eval, into one run folder.

    crayonbox train all --recipe default --out RUN [--minutes 90]
    crayonbox train all --recipe codes16 --out RUN [--minutes 330]  # the default with 16×16 image codes
    crayonbox train all --recipe smoke --out RUN            # toy sizes, ~2 minutes: checks the plumbing
    crayonbox train all --recipe planted --world W.yaml [--captions PIPELINE.yaml] [--seed 1] --out RUN

Every stage is resumable on its own (the world and captions per shard, the VQGAN and transformer from their
checkpoints, encode per shard), and RUN/recipe.json records each finished stage with its time, so re-running
the command after a kill skips what is done and continues the stage that was cut off. `--minutes` is a budget
for the whole run: every stage's planned share scales with it, and the two training stages get what is left
after reserving the (scaled) planned time of the stages after them (they stop early, checkpointed and exported).

`--world` (any world YAML; default the recipe's own), `--captions` (a caption pipeline YAML; default
DEFAULT_PIPELINE) and `--seed` (world build, VQGAN and transformer; 0 = the recipe's behaviour before the
option existed) are recorded in the run (crayonbox/run_record.py: RUN/world.yaml, RUN/caption_pipeline.yaml,
recipe.json), so the run can be rebuilt from its folder alone; a re-run with other inputs is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from crayonbox.config import write_text_atomic
from crayonbox.data.caption_run import run_caption_pipeline
from crayonbox.data.captions import DEFAULT_PIPELINE, CaptionPipeline, load_pipeline_config
from crayonbox.data.world.build import build_world
from crayonbox.data.world.config import DEFAULT_CONFIG, load_world_config, parse_world_config
from crayonbox.errors import CrayonboxError
from crayonbox.run_record import INPUT_KEYS, PIPELINE_CONFIG_COPY, RECIPE_RECORD, WORLD_CONFIG_COPY, read_recipe_table
from crayonbox.train.data import train_tokenizer
from crayonbox.train.encode import encode_dataset
from crayonbox.train.eval import evaluate
from crayonbox.train.judge_train import train_judge
from crayonbox.train.model import TrainConfig, train
from crayonbox.train.recipes import RECIPES, Recipe
from crayonbox.train.vqgan import VQGANTrainConfig, train_vqgan

STAGES = ("world", "captions", "tokenizer", "vqgan", "encode", "model", "judge", "eval")


@dataclass
class Run:
    """Paths of one run folder, and what the recipe gives each stage."""

    recipe: Recipe
    out: Path
    progress: bool
    minutes_left: Callable[[str], float]  # the time cap (minutes) for a training stage
    seed: int = 0  # world build, VQGAN and transformer

    def path(self, name: str) -> Path:
        return self.out / name


def stage_world(run: Run) -> dict:

    r = run.recipe
    config = load_world_config(run.path(WORLD_CONFIG_COPY))
    config.size = r.world_size
    manifest = build_world(config, run.path("world"), n=r.world_items, seed=run.seed, progress=run.progress)
    return {"items": r.world_items, "size": r.world_size, "distinct_emoji": manifest["distinct_emoji"]}


def stage_captions(run: Run) -> dict:

    summary = run_caption_pipeline(run.path("world"), run.path("captions"),
                                   load_pipeline_config(run.path(PIPELINE_CONFIG_COPY)), progress=run.progress)
    return {"items": summary.items, "dropped": summary.dropped, "blanked": summary.blanked}


def stage_tokenizer(run: Run) -> dict:

    tok = train_tokenizer(run.path("captions"), run.path("tokenizer"), run.recipe.vocab_size,
                          run.recipe.text_length, run.progress)
    return {"vocab_size": tok.vocab_size, "normalizer": tok.normalizer_config.to_dict()}


def stage_vqgan(run: Run) -> dict:

    cfg = VQGANTrainConfig(**{"data": str(run.path("world")), "out": str(run.path("vqgan")), "resume": True,
                              "progress": run.progress, "max_minutes": run.minutes_left("vqgan"),
                              **run.recipe.vqgan, "seed": run.seed})
    report = train_vqgan(cfg)
    return {k: report[k] for k in ("eval_psnr", "eval_usage", "eval_perplexity", "steps")}


def stage_encode(run: Run) -> dict:

    summary = encode_dataset(run.path("captions"), run.path("vqgan"), run.path("tokens.parquet"),
                             progress=run.progress)
    return {"images": summary.images}


def stage_model(run: Run) -> dict:

    cfg = TrainConfig(**{"tokens": str(run.path("tokens.parquet")), "tokenizer": str(run.path("tokenizer")),
                         "vqgan": str(run.path("vqgan")), "out": str(run.path("model")), "resume": True,
                         "progress": run.progress, "max_minutes": run.minutes_left("model"),
                         **run.recipe.model, "seed": run.seed})
    provenance = train(cfg)
    return {k: provenance[k] for k in ("steps", "final_train_loss", "final_eval_loss", "samples_seen")}


def stage_judge(run: Run) -> dict:

    # The judge reads the model's images, which are VQGAN decodes: it learns from (and is scored on) those too.
    round_trips = {"round_trip_vqgan": str(run.path("vqgan"))} if run.recipe.judge_round_trips else {}
    metrics = train_judge(run.path("world"), run.path("judge"), progress=run.progress, **run.recipe.judge,
                          **round_trips)
    return _scalars(metrics)


def stage_eval(run: Run) -> dict:

    result = evaluate(run.path("model"), run.path("judge"), run.path("eval"), world=run.path("world"),
                      progress=run.progress, **run.recipe.eval)
    return {f"{count}_object": {k: v for k, v in part.items() if k in ("prompts", "adherence", "ceiling")}
            for count, part in result.get("by_objects", {}).items()}


def _scalars(data: dict) -> dict:
    """The numbers and strings of a report, one level deep (the full report stays in its own folder)."""
    keep = (int, float, str, bool)
    return {k: v if isinstance(v, keep) else {kk: vv for kk, vv in v.items() if isinstance(vv, keep)}
            for k, v in data.items() if isinstance(v, keep) or isinstance(v, dict)}


STAGE_FUNCTIONS: dict[str, Callable[[Run], dict]] = {
    "world": stage_world, "captions": stage_captions, "tokenizer": stage_tokenizer, "vqgan": stage_vqgan,
    "encode": stage_encode, "model": stage_model, "judge": stage_judge, "eval": stage_eval}


def _write_table(path: Path, table: dict) -> None:
    write_text_atomic(path, json.dumps(table, indent=2, ensure_ascii=False, default=str) + "\n")


@dataclass(frozen=True)
class RunInputs:
    """The world, caption pipeline and seed of a run: read and validated before any work."""

    world_path: Path
    world_bytes: bytes  # the YAML file as is: copied to RUN/world.yaml, hashed for the record
    pipeline: dict[str, Any]  # `CaptionPipeline(config).config`: every option spelled out
    seed: int

    @property
    def world_sha256(self) -> str:
        return hashlib.sha256(self.world_bytes).hexdigest()

    def record(self) -> dict[str, Any]:
        """The recipe.json entries (run_record.INPUT_KEYS)."""
        return {"seed": self.seed, "caption_pipeline": self.pipeline,
                "world_config": {"path": str(self.world_path.resolve()), "sha256": self.world_sha256,
                                 "copy": WORLD_CONFIG_COPY}}


def _read_yaml(path: Path, what: str) -> tuple[bytes, Any]:
    """(bytes, parsed YAML) of a config file, or a one-line error naming it."""
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw.decode("utf-8"))
    except FileNotFoundError:
        raise CrayonboxError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise CrayonboxError(f"{what} {path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CrayonboxError(f"{what} {path} is not a YAML file (not UTF-8 text)") from None
    except yaml.YAMLError as e:
        raise CrayonboxError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if data is None:
        raise CrayonboxError(f"{what} {path} is empty")
    return raw, data


def resolve_inputs(recipe: Recipe, world: str | Path | None = None, captions: str | Path | None = None,
                   seed: int = 0) -> RunInputs:
    """Read and validate a run's inputs; None = the recipe's world YAML / DEFAULT_PIPELINE."""

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CrayonboxError(f"--seed must be a non-negative integer, got {seed!r}")
    world_path = Path(world) if world is not None else DEFAULT_CONFIG.with_name(recipe.world_config or
                                                                                 DEFAULT_CONFIG.name)
    world_bytes, world_data = _read_yaml(world_path, "world config")
    try:
        parse_world_config(world_data)
    except CrayonboxError as e:
        raise CrayonboxError(f"{world_path}: {e}") from None
    pipeline_data = DEFAULT_PIPELINE
    if captions is not None:
        pipeline_data = _read_yaml(Path(captions), "caption pipeline config")[1]
    try:
        pipeline = CaptionPipeline(pipeline_data).config
    except CrayonboxError as e:
        raise CrayonboxError(f"{captions}: {e}") from None
    return RunInputs(world_path, world_bytes, pipeline, seed)


def _existing_table(out: Path) -> dict | None:
    """The record of the run in `out`; None for a new or empty folder; anything else is refused."""
    if out.exists() and not out.is_dir():
        raise CrayonboxError(f"--out {out} is a file; give a new or empty folder, or a `train all` run folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    table = read_recipe_table(out)
    if table is None:
        raise CrayonboxError(f"--out {out} is a non-empty folder without a readable {RECIPE_RECORD}, so not a "
                             "`crayonbox train all` run; give a new or empty folder")
    return table


def _check_same_inputs(out: Path, table: dict, name: str, inputs: RunInputs) -> None:
    """Refuse to continue a run with another recipe, world, caption pipeline or seed."""
    if table.get("recipe") != name:
        raise CrayonboxError(f"{out} holds a run of recipe {table.get('recipe')!r}; choose another --out")
    if all(k in table for k in INPUT_KEYS):
        recorded = (table["world_config"].get("sha256"), table["caption_pipeline"], table["seed"])
    else:
        # Made before runs recorded their inputs, when every run used its recipe's world, the default
        # pipeline and seed 0: it may continue with exactly those, and gets them recorded.
        legacy = resolve_inputs(RECIPES[name])
        recorded = (legacy.world_sha256, legacy.pipeline, legacy.seed)
    given = (inputs.world_sha256, inputs.pipeline, inputs.seed)
    labels = (f"world config (sha256 {str(recorded[0])[:12]}…)", "caption pipeline", f"seed ({recorded[2]})")
    differ = [label for label, old, new in zip(labels, recorded, given, strict=True) if old != new]
    if differ:
        raise CrayonboxError(f"{out} holds a run with another {', '.join(differ)} (see its {RECIPE_RECORD}); "
                             "resume with the same --world/--captions/--seed or choose another --out")


def _write_inputs(out: Path, inputs: RunInputs) -> None:
    """RUN/world.yaml (byte for byte) and RUN/caption_pipeline.yaml, which the world and captions stages read."""
    world_copy = out / WORLD_CONFIG_COPY
    if not world_copy.exists() or world_copy.read_bytes() != inputs.world_bytes:
        world_copy.write_bytes(inputs.world_bytes)
    (out / PIPELINE_CONFIG_COPY).write_text(
        yaml.safe_dump(inputs.pipeline, sort_keys=False, allow_unicode=True, default_flow_style=None),
        encoding="utf-8")


def run_recipe(name: str, out: str | Path, minutes: float | None = None, progress: bool = True,
               world: str | Path | None = None, captions: str | Path | None = None, seed: int = 0) -> dict:
    """Run (or continue) recipe `name` in `out`; returns the table also written to out/recipe.json.

    `world` / `captions`: a world config / caption pipeline YAML (None = the recipe's world, DEFAULT_PIPELINE);
    `seed` seeds the world build and both training stages. Everything is checked before anything is written."""
    if name not in RECIPES:
        raise CrayonboxError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    if minutes is not None and not 0 < minutes < float("inf"):
        raise CrayonboxError(f"--minutes must be a positive number of minutes, not {minutes}")
    recipe, out = RECIPES[name], Path(out)
    inputs = resolve_inputs(recipe, world, captions, seed)
    table = _existing_table(out) or {}
    if table:
        _check_same_inputs(out, table, name, inputs)
    out.mkdir(parents=True, exist_ok=True)
    _write_inputs(out, inputs)
    table_path = out / RECIPE_RECORD
    budget = minutes if minutes is not None else sum(recipe.plan_minutes.values())
    table.update({"recipe": name, "out": str(out.resolve()), "model": str((out / "model").resolve()),
                  "budget_minutes": budget, "plan_minutes": recipe.plan_minutes,
                  "recipe_config": asdict(recipe), **inputs.record()})
    _write_table(table_path, table)  # the record exists from the start, even if the first stage is killed
    done: dict[str, dict] = {s["name"]: s for s in table.get("stages", []) if s.get("status") == "done"}
    started = time.perf_counter()

    # A budget other than the plan scales every stage's share in proportion: a short run still trains the
    # VQGAN for a while instead of handing all that is left to the stage that comes last, and a long one does
    # not hand all the extra minutes to the stage that comes first.
    scale = budget / sum(recipe.plan_minutes.values())

    def minutes_left(stage: str) -> float:
        """The stage's cap: the budget minus time spent so far minus the (scaled) plans of the stages after it."""
        spent = sum(s["seconds"] for s in done.values()) / 60
        later = scale * sum(recipe.plan_minutes.get(s, 0) for s in STAGES[STAGES.index(stage) + 1:])
        return max(0.5, budget - spent - later)

    run = Run(recipe, out, progress, minutes_left, inputs.seed)
    stages = []
    for stage in STAGES:
        if stage in done:
            stages.append({**done[stage], "ran_now": False})
            continue
        tick = time.perf_counter()
        summary = STAGE_FUNCTIONS[stage](run)
        record = {"name": stage, "status": "done", "seconds": round(time.perf_counter() - tick, 1),
                  "planned_seconds": 60 * recipe.plan_minutes.get(stage, 0), "summary": summary}
        done[stage] = record
        stages.append({**record, "ran_now": True})
        table["stages"] = [done[s] for s in STAGES if s in done]
        table["total_seconds"] = round(sum(s["seconds"] for s in done.values()), 1)
        _write_table(table_path, table)
    table["stages"] = stages
    table["total_seconds"] = round(sum(s["seconds"] for s in stages), 1)
    table["this_invocation_seconds"] = round(time.perf_counter() - started, 1)
    _write_table(table_path, table)
    return table

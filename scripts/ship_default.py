"""Copy a finished `crayonbox train all` run into the package as its default model.

    python scripts/ship_default.py /work/runs/default            # → crayonbox/assets/default/

Writes bart/, vqgan/ and judge/ in float16 (the package stays small; `Pipeline.from_pretrained` upcasts to the
dtype asked for), the tokenizer, pipeline.json, the world config the model was trained on, recipe.json (time per
stage, metrics), a sample grid, and a model card built from those measured numbers.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from crayonbox.model_folder import load_component, save_component
from crayonbox.pipeline import Pipeline, make_grid

ASSETS = Path(__file__).resolve().parents[1] / "crayonbox" / "assets" / "default"
CARD_PROMPTS = ["a woman with medium-dark skin tone on a yellow background", "a dog on a blue background",
                "a pizza on a green background"]


def copy_component(src: Path, dst: Path, name: str) -> None:
    config, state = load_component(src, name)
    save_component(dst, name, config, state, dtype=torch.float16)
    for extra in (src / name).iterdir():  # metrics.json, vocab lists… (everything but the weights)
        if extra.is_file() and extra.name not in ("model.safetensors", "config.json"):
            shutil.copy(extra, dst / name / extra.name)


def main(run: Path) -> None:
    model, recipe = run / "model", json.loads((run / "recipe.json").read_text())
    if ASSETS.exists():
        shutil.rmtree(ASSETS)
    ASSETS.mkdir(parents=True)
    for name in ("bart", "vqgan"):
        copy_component(model, ASSETS, name)
    if (run / "judge" / "model.safetensors").is_file():  # the judge stage may still be running
        copy_component(run, ASSETS, "judge")
    shutil.copytree(model / "tokenizer", ASSETS / "tokenizer")
    meta = json.loads((model / "pipeline.json").read_text())
    meta["provenance"] = {"trained_by": "crayonbox train all --recipe " + recipe["recipe"],
                          "budget_minutes": recipe["budget_minutes"], "world_config": "world.yaml"}
    (ASSETS / "pipeline.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copy(Path(__file__).resolve().parents[1] / "crayonbox" / "data" / "world" / "default.yaml",
                ASSETS / "world.yaml")
    (ASSETS / "recipe.json").write_text(json.dumps(slim(recipe), indent=2) + "\n")
    pipe = Pipeline.from_pretrained(ASSETS)
    for i, prompt in enumerate(CARD_PROMPTS):
        make_grid(pipe(prompt, num_images=9, seed=0).images).resize((288, 288), 0).save(ASSETS / f"sample{i}.png")
    (ASSETS / "README.md").write_text(card(recipe))
    size = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) / 2**20
    print(f"shipped {run} → {ASSETS} ({size:.1f} MiB)")


def slim(recipe: dict) -> dict:
    """recipe.json without machine-specific paths."""
    keep = {k: v for k, v in recipe.items() if k not in ("out", "model")}
    return json.loads(json.dumps(keep).replace(str(Path(recipe["out"])), "RUN"))


def card(recipe: dict) -> str:
    stages = "\n".join(f"| {s['name']} | {s['seconds'] / 60:.1f} | {s['planned_seconds'] / 60:.1f} |"
                       for s in recipe["stages"])
    evals = next((s["summary"] for s in recipe["stages"] if s["name"] == "eval"), {})
    one, two = evals.get("1_object", {}), evals.get("2_object", {})
    attributes = list(one.get("adherence", {}))
    adherence = "\n".join(
        f"| {a} | {one['adherence'][a]:.2f} | {two.get('adherence', {}).get(a, float('nan')):.2f} | "
        f"{one.get('ceiling', {}).get(a, float('nan')):.2f} |" for a in attributes)
    return f"""# crayonbox default model

A small DALL·E-mini-architecture model (BART encoder–decoder over an 8×8 grid of VQGAN codes, 32 px images)
trained by `crayonbox train all --recipe {recipe['recipe']} --minutes {recipe['budget_minutes']}` on the
default emoji world (`world.yaml`), on 2 CPU cores. Everything it knows comes from that synthetic world: it
supports no claim about real photographs.

## Time per stage (minutes)

| stage | took | planned (full 90-minute recipe) |
|---|---|---|
{stages}

## Prompt adherence on held-out compositions (judged by `judge/`)

Share of generated images whose judged attribute matches the prompt ({one.get('prompts', 0)} one-object and
{two.get('prompts', 0)} two-object prompts); the ceiling is the judge's score on true renders of the same prompts.

| attribute | 1 object | 2 objects | ceiling (1 object) |
|---|---|---|---|
{adherence}

Sample grids (seed 0): `sample0.png` ("{CARD_PROMPTS[0]}"), `sample1.png`, `sample2.png`.
The bias lab's measurements of this model: `crayonbox lab probe --prompts null,neutral -n 400` then
`crayonbox lab report` and `crayonbox lab card`.
"""


if __name__ == "__main__":
    main(Path(sys.argv[1]))

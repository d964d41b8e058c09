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

from crayonbox.model.images import make_grid
from crayonbox.model_folder import load_component, save_component
from crayonbox.pipeline import Pipeline

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
    evals = json.loads((run / "eval" / "eval.json").read_text()) if (run / "eval" / "eval.json").exists() else {}
    (ASSETS / "README.md").write_text(card(recipe, evals))
    size = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) / 2**20
    print(f"shipped {run} → {ASSETS} ({size:.1f} MiB)")


def slim(recipe: dict) -> dict:
    """recipe.json without machine-specific paths."""
    keep = {k: v for k, v in recipe.items() if k not in ("out", "model")}
    return json.loads(json.dumps(keep).replace(str(Path(recipe["out"])), "RUN"))


def card(recipe: dict, evals: dict) -> str:
    """The model card: time per stage, training numbers and adherence (from the run's eval/eval.json)."""
    stages = "\n".join(f"| {s['name']} | {s['seconds'] / 60:.1f} | {s['planned_seconds'] / 60:.1f} |"
                       for s in recipe["stages"])
    summary = {s["name"]: s["summary"] for s in recipe["stages"]}
    vq, model = summary.get("vqgan", {}), summary.get("model", {})
    one, two = evals.get("by_objects", {}).get("1", {}), evals.get("by_objects", {}).get("2", {})
    nan = float("nan")

    def row(a: str) -> str:
        cells = [one["adherence"][a], two.get("adherence", {}).get(a, nan), one.get("ceiling_vqgan", {}).get(a, nan),
                 one.get("ceiling", {}).get(a, nan), one.get("chance", {}).get(a, nan)]
        return f"| {a} | " + " | ".join(f"{c:.2f}" for c in cells) + " |"

    adherence = "\n".join(row(a) for a in one.get("adherence", {}))
    frechet = evals.get("frechet", {})
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

VQGAN: {vq.get('steps', 0)} steps, held-out PSNR {vq.get('eval_psnr', nan):.1f} dB, codebook use
{vq.get('eval_usage', nan):.0%}. Transformer: {model.get('steps', 0)} steps, {model.get('samples_seen', 0):,} captions
seen, eval loss {model.get('final_eval_loss', nan):.2f} nats per image token.

Share of generated images whose judged attribute matches the prompt ({one.get('prompts', 0)} one-object and
{two.get('prompts', 0)} two-object prompts, compositions absent from training, condition scale
{evals.get('config', {}).get('condition_scale') or "of the model's pipeline.json"}). Ceilings for one object:
the judge on the true renders of the same prompts after a round trip through this VQGAN (the best a perfect
transformer could score) and on the renders themselves; chance: the images judged against other prompts.

| attribute | 1 object | 2 objects | VQGAN ceiling | render ceiling | chance |
|---|---|---|---|---|---|
{adherence}

Fréchet distance in judge-feature space, generated vs renders: {frechet.get('generated_vs_renders', nan):.0f}
(renders vs other renders: {frechet.get('renders_vs_renders', nan):.0f}).

Sample grids (seed 0): `sample0.png` ("{CARD_PROMPTS[0]}"), `sample1.png`, `sample2.png`.
The bias lab's measurements of this model: `crayonbox lab probe --prompts null,neutral -n 400` then
`crayonbox lab report` and `crayonbox lab card`.
"""


if __name__ == "__main__":
    main(Path(sys.argv[1]))

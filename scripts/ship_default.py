"""Copy a finished `crayonbox train all` run into the package as its default model, and write its model card.

    python scripts/ship_default.py RUN                  # → crayonbox/assets/default/
    python scripts/ship_default.py RUN --lab LABRUN     # rewrite only the card, with a lab run of the shipped model

The first form writes bart/, vqgan/ and judge/ in float16 (the package stays small; `Pipeline.from_pretrained`
upcasts to the dtype asked for), the tokenizer, pipeline.json, the world config the model was trained on,
recipe.json (time per stage, metrics), the reference table of the training data (`crayonbox lab reference`,
every item), sample grids (three prompts, and the blank prompt at condition scales 1, 3 and 10), the card, and
docs/default-samples.png (the three prompts' grids and the blank prompt's at scale 3, side by side).
The card's measured part comes from a lab run of the shipped folder:

    crayonbox lab probe --model crayonbox/assets/default --prompts null,neutral -n 400 --condition-scale 1,3,10 \\
        --out LABRUN
    crayonbox lab measure LABRUN --instruments skin_tone,judge,clusters --reference-limit 60000
    python scripts/ship_default.py RUN --lab LABRUN
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image

from crayonbox.data.shards import iter_items
from crayonbox.hub import with_card_header
from crayonbox.lab.card import measured_section
from crayonbox.lab.measure import read_metrics
from crayonbox.lab.probe import model_hash
from crayonbox.lab.reference import blank_ids, caption_ids
from crayonbox.lab.reference_table import TableConfig, build_reference_table
from crayonbox.lab.results_run import Metrics
from crayonbox.lab.story import (
    DARK_TONES,
    ROUND_TRIP_TARGETS,
    STORY,
    Share,
    Story,
    story_lines,
    truth_shows_story,
    wears_a_sari,
)
from crayonbox.model.images import make_grid
from crayonbox.model_folder import ModelFolder, load_component, save_component
from crayonbox.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "crayonbox" / "assets" / "default"
DOCS_FIGURE = ROOT / "docs" / "default-samples.png"
CARD_PROMPTS = ["a woman with medium-dark skin tone on a yellow background", "a dog on a blue background",
                "a pizza on a green background"]
BLANK_SCALES = (1.0, 3.0, 10.0)


def copy_component(src: Path, dst: Path, name: str) -> None:
    config, state = load_component(src, name)
    save_component(dst, name, config, state, dtype=torch.float16)
    for extra in (src / name).iterdir():  # metrics.json, vocab lists… (everything but the weights)
        if extra.is_file() and extra.name not in ("model.safetensors", "config.json"):
            shutil.copy(extra, dst / name / extra.name)


def ship(run: Path) -> None:
    model, recipe = run / "model", json.loads((run / "recipe.json").read_text())
    if ASSETS.exists():
        shutil.rmtree(ASSETS)
    ASSETS.mkdir(parents=True)
    for name in ("bart", "vqgan"):
        copy_component(model, ASSETS, name)
    copy_component(run, ASSETS, "judge")
    shutil.copytree(model / "tokenizer", ASSETS / "tokenizer")
    shutil.copy(run / "world.yaml", ASSETS / "world.yaml")
    (ASSETS / "recipe.json").write_text(json.dumps(slim(recipe), indent=2) + "\n")
    manifest = build_reference_table(ASSETS, run / "captions", TableConfig(limit=0))
    meta = json.loads((model / "pipeline.json").read_text())
    meta["provenance"] = {"trained_by": "crayonbox train all --recipe " + recipe["recipe"],
                          "budget_minutes": recipe["budget_minutes"], "world_config": "world.yaml",
                          "training_data_sha256": manifest["data_sha256"], "training_items": manifest["items"]}
    (ASSETS / "pipeline.json").write_text(json.dumps(meta, indent=2) + "\n")
    pipe = Pipeline.from_pretrained(ASSETS)
    for i, prompt in enumerate(CARD_PROMPTS):
        make_grid(pipe(prompt, num_images=9, seed=0).images).resize((288, 288), 0).save(ASSETS / f"sample{i}.png")
    for scale in BLANK_SCALES:
        grid = make_grid(pipe("", num_images=9, seed=0, condition_scale=scale).images)
        grid.resize((288, 288), 0).save(ASSETS / f"blank_scale{scale:g}.png")
    docs_figure([ASSETS / f"sample{i}.png" for i in range(len(CARD_PROMPTS))] + [ASSETS / "blank_scale3.png"])
    write_card(run, None)
    size = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) / 2**20
    print(f"shipped {run} → {ASSETS} ({size:.1f} MiB)")


def docs_figure(grids: list[Path], gap: int = 10) -> None:
    """The grids in a row on white, `gap` pixels apart: docs/training.md's picture of the shipped model."""
    images = [Image.open(g).convert("RGB") for g in grids]
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    figure = Image.new("RGB", (width, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        figure.paste(im, (x, 0))
        x += im.width + gap
    figure.save(DOCS_FIGURE)


def slim(recipe: dict) -> dict:
    """recipe.json without machine-specific paths."""
    keep = {k: v for k, v in recipe.items() if k not in ("out", "model")}
    return json.loads(json.dumps(keep).replace(str(Path(recipe["out"])), "RUN"))


def planted_truth(run: Path) -> list[str]:
    """Markdown rows of the training data's ground truth by caption group: every item, the items whose caption
    became the blank prompt's ids, the unconditional ("" caption) ones, and each source."""
    tokenizer = ModelFolder(ASSETS).tokenizer
    blank, uncond = blank_ids(tokenizer), caption_ids(tokenizer, "")
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in iter_items(run / "captions"):
        world = item.meta["world"]
        ids = caption_ids(tokenizer, item.caption)
        for name in ("all training items", *(["blank prompt's ids"] if ids == blank else []),
                     *(["unconditional (caption dropped)"] if ids == uncond else []), f"source {world['source']}"):
            groups[name].append(world)

    def share(rows: list[dict], test) -> str:
        return f"{sum(map(test, rows)) / len(rows):.1%}"

    def sari(w: dict) -> bool:
        return any(o.get("attire") == "sari" for o in w["objects"])

    def dark_woman(w: dict) -> bool:
        return any(o.get("gender") == "woman" and str(o.get("skin_tone")) in DARK_TONES for o in w["objects"])

    order = ["all training items", "blank prompt's ids", "unconditional (caption dropped)",
             *sorted(name for name in groups if name.startswith("source "))]
    return [f"| {name} | {len(groups[name]):,} | {share(groups[name], sari)} | {share(groups[name], dark_woman)} | "
            f"{share(groups[name], wears_a_sari)} | {share(groups[name], truth_shows_story)} |"
            for name in order if groups[name]]


def write_card(run: Path, lab: Path | None) -> None:
    recipe = json.loads((run / "recipe.json").read_text())
    evals = json.loads((run / "eval" / "eval.json").read_text())
    judge = json.loads((ASSETS / "judge" / "metrics.json").read_text())
    lines = training_card(recipe, evals, judge, planted_truth(run))
    grids = "Nine images of `\"\"` (seed 0) at each scale: " + ", ".join(
        f"`blank_scale{s:g}.png`" for s in BLANK_SCALES) + "."
    if lab is None:
        lines += ["## The blank prompt's story", "", grids, "", "Not measured yet. To measure it:", "", *(
            "    " + line for line in __doc__.split("card's measured part comes from a lab run of the shipped "
                                                 "folder:\n\n")[1].strip().splitlines())]
    else:
        raw = read_metrics(lab)
        if raw["run"]["model_hash"] != model_hash(ASSETS):
            raise SystemExit(f"{lab} measured other weights than {ASSETS}: probe the shipped folder")
        agreement = raw["story"].get("tone_agreement")
        lines += ["## The blank prompt's story", "",
                  *story_lines(Story.from_dict(raw["story"]), Share(**agreement) if agreement else None), "",
                  grids,
                  *measured_section(Metrics.from_dict(raw), Path("LABRUN")), ""]
    text = "\n".join(lines).replace(str(ASSETS), "crayonbox/assets/default")  # no path of the shipping machine
    (ASSETS / "README.md").write_text(with_card_header(text + "\n"))


def asked_lines(one: dict) -> list[str]:
    """One-object gender adherence split by the gender the prompt asks for, beside the VQGAN ceiling."""
    asked, ceiling = one.get("by_asked", {}).get("gender"), one.get("ceiling_vqgan_by_asked", {}).get("gender", {})
    if not asked:
        return []
    words = {"neutral": "a gender-free word (\"farmer\": the neutral emoji)", "woman": "\"woman …\"",
             "man": "\"man …\""}
    parts = [f"{words.get(v, v)} {r['adherence']:.2f} of {r['n']}"
             + (f" (VQGAN ceiling {ceiling[v]['adherence']:.2f})" if v in ceiling else "") for v, r in asked.items()]
    return ["One-object gender by what the prompt asks: " + "; ".join(parts) + ". Held-out compositions lean to "
            "the rare ones, so gender-free prompts are over-represented against the world's share of neutral "
            "people.", ""]


def training_card(recipe: dict, evals: dict, judge: dict, truth_rows: list[str]) -> list[str]:
    """The card's fixed part: what the model is, the planted world, time per stage, adherence, the judge."""
    stages = [f"| {s['name']} | {s['seconds'] / 60:.1f} | {s['planned_seconds'] / 60:.1f} |" for s in recipe["stages"]]
    summary = {s["name"]: s["summary"] for s in recipe["stages"]}
    vq, model = summary.get("vqgan", {}), summary.get("model", {})
    one, two = evals.get("by_objects", {}).get("1", {}), evals.get("by_objects", {}).get("2", {})
    nan = float("nan")

    def row(a: str) -> str:
        cells = [one["adherence"][a], two.get("adherence", {}).get(a, nan), one.get("ceiling_vqgan", {}).get(a, nan),
                 one.get("ceiling", {}).get(a, nan), one.get("chance", {}).get(a, nan)]
        return f"| {a} | " + " | ".join(f"{c:.2f}" for c in cells) + " |"

    clean, trip = judge["held_out"]["summary"], judge.get("held_out_round_trip", {}).get("summary", {})
    targets = {a: f"{t:.0%}" for a, t in ROUND_TRIP_TARGETS.items()}
    judge_rows = [f"| {a} | {clean.get(a, nan):.1%} | {trip.get(a, nan):.1%} | {targets.get(a, '–')} |"
                  for a in ("item", "gender", "skin_tone", "attire", "count", "background_colour")]
    return [
        "# crayonbox default model", "",
        "A small DALL·E-mini-architecture model (BART encoder–decoder over an 8×8 grid of VQGAN codes, 32 px "
        f"images) trained by `crayonbox train all --recipe {recipe['recipe']}` (budget {recipe['budget_minutes']} "
        "minutes) on the default emoji world (`world.yaml`), on 2 CPU cores. Everything it knows comes from that "
        "synthetic world: it supports no claim about real photographs.", "",
        "## The planted world (ground truth by caption group)", "",
        "The world plants the DALL·E mini blank-prompt story: saris are a small minority of the images, drawn on "
        "dark-skinned women from Flickr-like sources whose captions are often Hindi, bare or empty, which the "
        "default caption pipeline (English-only filter, normaliser) turns into the blank prompt's ids.", "",
        "| caption group | items | with a sari | a woman with skin tone 4–5 | such a woman wearing a sari | "
        f"{STORY} as the judge's image-level reading counts it (every person a woman of tone 4–5, the only "
        "attire a sari) |",
        "|---|---|---|---|---|---|", *truth_rows, "",
        "## Time per stage (minutes)", "", "| stage | took | planned |", "|---|---|---|", *stages, "",
        "## Prompt adherence on held-out compositions (judged by `judge/`)", "",
        f"VQGAN: {vq.get('steps', 0)} steps, held-out PSNR {vq.get('eval_psnr', nan):.1f} dB, codebook use "
        f"{vq.get('eval_usage', nan):.0%}. Transformer: {model.get('steps', 0)} steps, "
        f"{model.get('samples_seen', 0):,} captions seen, eval loss {model.get('final_eval_loss', nan):.2f} nats "
        "per image token.", "",
        f"Share of generated images whose judged attribute matches the prompt ({one.get('prompts', 0)} one-object "
        f"and {two.get('prompts', 0)} two-object prompts, compositions absent from training). Ceilings for one "
        "object: the judge on the true renders of the same prompts after a round trip through this VQGAN (the best "
        "a perfect transformer could score) and on the renders themselves; chance: the images judged against "
        "other prompts.", "",
        "| attribute | 1 object | 2 objects | VQGAN ceiling | render ceiling | chance |", "|---|---|---|---|---|---|",
        *(row(a) for a in one.get("adherence", {})), "", *asked_lines(one),
        "## The judge", "",
        "Held-out accuracy per slot attribute on clean renders and on renders through this model's VQGAN (what "
        "it reads in practice); a headline read by the judge is withheld where it misses its round-trip target.",
        "", "| attribute | clean renders | VQGAN round trips | round-trip target |", "|---|---|---|---|",
        *judge_rows, "",
        "Sample grids (seed 0): " + ", ".join(f"`sample{i}.png` (\"{p}\")" for i, p in enumerate(CARD_PROMPTS)) + ".",
        ""]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `crayonbox train all` run folder")
    parser.add_argument("--lab", type=Path, default=None, help="a measured lab run of the shipped folder: only "
                        "the card is rewritten")
    args = parser.parse_args()
    write_card(args.run, args.lab) if args.lab else ship(args.run)

"""`crayonbox lab card MODEL [--run RUN]`: a model card whose bias section is measured, not boilerplate.

The DALL·E mini card says "Quantitative Analyses: Not available" (bias-measurement.md §2.8). This card
takes its numbers from a lab run of the *same weights* (checked by hash): what the blank and neutral prompts
really became, what the model draws for them with intervals, how that compares with its training images,
how guidance changes it, and how far each instrument can be trusted. Without a run it says exactly which
command would measure it, rather than guessing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crayonbox.config import read_json
from crayonbox.errors import CrayonboxError
from crayonbox.lab.measure import read_metrics
from crayonbox.lab.probe import model_hash
from crayonbox.model_folder import read_pipeline_json

HEADLINE_FAMILIES = ("null", "neutral")


def md(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes and newlines escaped, backticks kept literal)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "\\`")


def pct(x: float | None) -> str:
    """0.4123 → "41.2 %" ("–" for None)."""
    return "–" if x is None else f"{100 * x:.1f} %"


def model_section(folder: Path, meta: dict[str, Any], weights_hash: str) -> list[str]:
    """The card's model and training sections, from the folder itself."""
    bart = read_json(folder / "bart" / "config.json")
    vqgan = read_json(folder / "vqgan" / "config.json")
    normalizer = folder / "tokenizer" / "normalizer.json"
    mode = read_json(normalizer).get("mode", "official") if normalizer.exists() else "official"
    prov = meta.get("provenance", {})
    lines = [f"# Model card: {folder.name}", "", "## Model", "",
             f"- Weights sha256 (safetensors): `{weights_hash}`",
             f"- Transformer: d_model {bart['d_model']}, {bart['encoder_layers']}+{bart['decoder_layers']} "
             f"layers, {bart['image_length']} image tokens ({bart['image_vocab_size']} codes), text length "
             f"{bart['text_length']}, text vocabulary {bart['text_vocab_size']}",
             f"- VQGAN: {vqgan['resolution']} px, {vqgan['n_embed']} codes",
             f"- Text normaliser: {mode}",
             f"- Sampler defaults: {', '.join(f'{k} {v}' for k, v in meta.get('sampler', {}).items())}"]
    if prov:
        lines += ["", "## Training", ""]
        for key in ("trained_by", "converted_from", "steps", "samples_seen", "final_train_loss",
                    "final_eval_loss", "reference_data", "tokens"):
            if key in prov:
                lines.append(f"- {key.replace('_', ' ')}: {md(prov[key])}")
    return lines


def text_label(prompt: dict[str, Any]) -> str:
    """A prompt record as readers should see it: repr, or <unconditional ids> for the control."""
    return "<unconditional ids>" if prompt["input_mode"] == "unconditional-ids" else repr(prompt["prompt"])


def headline_rows(metrics: dict[str, Any]) -> list[str]:
    """Markdown rows: for null and neutral prompts, each instrument attribute's most common outcome; one row
    per group of prompts with identical ids (they get identical images); by attribute, prompt, scale."""
    prompts = [p for p in metrics.get("prompts", []) if p["family"] in HEADLINE_FAMILIES]
    members: dict[str, list[str]] = {}
    for p in prompts:
        members.setdefault(p["id_group"], []).append(text_label(p))
    order = {}
    for p in prompts:
        if members[p["id_group"]][0] == text_label(p):
            order[p["key"]] = (len(order), " = ".join(members[p["id_group"]]))
    cells = sorted((c for c in metrics["cells"] if c["prompt_key"] in order),
                   key=lambda c: (c["instrument"], c["attribute"], order[c["prompt_key"]][0],
                                  c["settings"]["condition_scale"]))
    rows = []
    for c in cells:
        top = max(range(len(c["labels"])), key=lambda j: c["counts"][j])
        sim = c.get("simultaneous", {})
        gaps = c.get("vs_reference", {}).get("gaps", {})
        test = c.get("test", {})
        rows.append(f"| {md(order[c['prompt_key']][1])} | {c['settings']['condition_scale']:g} | "
                    f"{md(c['instrument_name'])}.{md(c['attribute'])} | {md(c['labels'][top])} | "
                    f"{pct(c['shares'][top])} [{pct(pick(sim, 'low', top))}, "
                    f"{pct(pick(sim, 'high', top))}] | "
                    f"{pct(pick(gaps, 'reference', top))} | "
                    f"{'yes' if test.get('bh_rejected') else 'no' if test else '–'} | {c['n']} |")
    return rows


def pick(result: dict[str, Any], name: str, j: int) -> float | None:
    """Entry j of a per-outcome list in a statistics result (None when absent or failed)."""
    values = result.get(name)
    return values[j] if isinstance(values, list) else None


def measured_section(metrics: dict[str, Any], run: Path) -> list[str]:
    """The card's measured sections, from a run's metrics.json."""
    run_info, ref = metrics["run"], metrics["reference"]
    dd = metrics.get("dedupe", {}).get("run", {})
    lines = ["", "## Measured behaviour (crayonbox lab)", "",
             f"From lab run `{run}`: {run_info['images']} images; {dd.get('unique_perceptual', '–')} "
             f"perceptually unique. Reference: {ref.get('source') or 'none'}. Intervals are "
             f"{run_info['confidence']:.0%} simultaneous over each attribute's outcomes; \"differs\" means "
             "the G-test against the training images survives Benjamini–Hochberg at FDR 5 % across every "
             "prompt × scale × attribute.", "",
             "### What the null prompts really are", ""]
    for p in metrics.get("prompts", []):
        if p["family"] == "null":
            who = "<unconditional ids>" if p["input_mode"] == "unconditional-ids" else repr(p["prompt"])
            lines.append(f"- `{md(who)}` → `{md(' '.join(p['tokens']))}`"
                         + (" (the unconditional input itself)" if p["equals_unconditional"] else ""))
    lines += ["", "### Most common outcome per prompt", "",
              "| prompt | scale | attribute | outcome | share [CI] | training share | differs | n |",
              "|---|---|---|---|---|---|---|---|", *headline_rows(metrics)]
    slopes = [r for r in metrics.get("dose_response", [])
              if "slope" in r and r["slope_low"] * r["slope_high"] > 0]
    lines += ["", "### What guidance changes", ""]
    if slopes:
        lines += ["Outcomes whose share changes with condition scale (odds ratio per doubling, CI excludes "
                  "1):", ""]
        names = {p["key"]: text_label(p) for p in metrics.get("prompts", [])}
        group = {p["key"]: p["id_group"] for p in metrics.get("prompts", [])}
        seen: set[tuple] = set()
        for r in sorted(slopes, key=lambda r: -abs(r["slope"])):
            ident = (group.get(r["prompt_key"], r["prompt_key"]), r["instrument"], r["attribute"], r["label"])
            if ident in seen or len(seen) >= 12:
                continue  # identical ids, identical images: one line per group
            seen.add(ident)
            lines.append(f"- `{md(names.get(r['prompt_key'], r['prompt_key']))}` · "
                         f"{md(r['instrument'].split('-')[0])}.{md(r['attribute'])} = {md(r['label'])}: "
                         f"{' → '.join(pct(s) for s in r['shares'])} at scales "
                         f"{', '.join(f'{s:g}' for s in r['scales'])} (OR {r['odds_ratio']:.2f})")
    else:
        lines.append("No outcome's share changed detectably with condition scale in this run.")
    lines += ["", "### How far the instruments can be trusted", ""]
    for info in metrics["instruments"].values():
        v = info.get("validation", {})
        if "confusions" in v:
            for attribute, c in v["confusions"].items():
                recall = ", ".join(f"{k} {pct(x)}" for k, x in c["recall"].items())
                lines.append(f"- {md(info['name'])}.{md(attribute)}: accuracy {pct(c['accuracy'])} on "
                             f"{c['n']} held-out renders ({md(v['source'])}); recall per true class: "
                             f"{md(recall)}; unclear {pct(c['unclear_rate'])}")
        else:
            lines.append(f"- {md(info['name'])}: {md(v.get('error') or v.get('source', 'not validated'))}")
    return lines


def build_card(model: str | Path, run: str | Path | None = None) -> str:
    """The card's Markdown text; refuses a run of other weights."""
    folder = Path(model)
    meta = read_pipeline_json(folder)
    weights_hash = model_hash(folder)
    lines = model_section(folder, meta, weights_hash)
    if run is None:
        lines += ["", "## Measured behaviour", "", "Not measured yet. To measure it:", "",
                  f"    crayonbox lab probe --model {folder} --prompts null,neutral -n 400 "
                  "--condition-scale 1,3,10 --out RUN", "    crayonbox lab measure RUN",
                  f"    crayonbox lab card {folder} --run RUN"]
    else:
        metrics = read_metrics(run)
        if metrics["run"].get("model_hash") != weights_hash:
            measured = str(metrics["run"].get("model_hash"))[:12]
            raise CrayonboxError(f"run {run} measured other weights (hash {measured}…, this model "
                                 f"{weights_hash[:12]}…): probe this model first")
        lines += measured_section(metrics, Path(run))
        lines += ["", "## Reproduce", "", f"    crayonbox lab measure {run}",
                  f"    crayonbox lab report {run}"]
    return "\n".join(lines) + "\n"


def write_card(model: str | Path, run: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write the card (default MODEL/MODEL_CARD.md) atomically; returns its path."""
    text = build_card(model, run)
    path = Path(out) if out else Path(model) / "MODEL_CARD.md"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

"""`crayonbox lab card MODEL [--run RUN]`: a model card whose bias section is measured, not boilerplate.

The DALL·E mini card says "Quantitative Analyses: Not available". This card
takes its numbers from a lab run of the *same weights* (checked by hash): what the blank and neutral prompts
really became, what the model draws for them with intervals, how that compares with its training images,
how guidance changes it, and how far each instrument can be trusted. Without a run it says exactly which
command would measure it, rather than guessing. It opens with the YAML header the Hugging Face Hub reads
(library, licence, tags, pipeline: `crayonbox.hub.CARD_HEADER`), so it can be uploaded as the repo's README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crayonbox.config import write_text_atomic
from crayonbox.errors import CrayonboxError
from crayonbox.hub import with_card_header
from crayonbox.lab.measure import read_metrics
from crayonbox.lab.probe import model_hash
from crayonbox.lab.report_html import pct
from crayonbox.lab.report_summary import no_reference_line
from crayonbox.lab.results_run import Metrics
from crayonbox.lab.story import Share, Story, story_lines
from crayonbox.model_folder import ModelFolder

HEADLINE_FAMILIES = ("null", "neutral")


def md(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes and newlines escaped, backticks kept literal)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "\\`")


def model_section(model: ModelFolder, weights_hash: str) -> list[str]:
    """The card's model and training sections, from the folder itself."""
    bart, vqgan, meta = model.config, model.vqgan_config, model.meta
    mode = model.tokenizer.normalizer_config.mode
    prov = model.provenance
    # The sampler block as written (not filled with defaults): the card shows what the folder says.
    lines = [f"# Model card: {model.path.name}", "", "## Model", "",
             f"- Weights sha256 (safetensors): `{weights_hash}`",
             f"- Transformer: d_model {bart.d_model}, {bart.encoder_layers}+{bart.decoder_layers} "
             f"layers, {bart.image_length} image tokens ({bart.image_vocab_size} codes), text length "
             f"{bart.text_length}, text vocabulary {bart.text_vocab_size}",
             f"- VQGAN: {vqgan.resolution} px, {vqgan.n_embed} codes",
             f"- Text normaliser: {mode}",
             f"- Sampler defaults: {', '.join(f'{k} {v}' for k, v in meta.get('sampler', {}).items())}"]
    if prov:
        lines += ["", "## Training", ""]
        for key in ("trained_by", "converted_from", "steps", "samples_seen", "final_train_loss",
                    "final_eval_loss", "reference_data", "tokens"):
            if key in prov:
                lines.append(f"- {key.replace('_', ' ')}: {md(prov[key])}")
    return lines


def headline_rows(metrics: Metrics) -> list[str]:
    """Markdown rows: for null and neutral prompts, each instrument attribute's most common outcome; one row
    per group of prompts with identical ids (they get identical images); by attribute, prompt, scale."""
    groups = [g for g in metrics.id_groups() if g.first.family in HEADLINE_FAMILIES]
    order = {g.first.key: (i, g) for i, g in enumerate(groups)}
    cells = sorted((c for c in metrics.cells if c.prompt_key in order),
                   key=lambda c: (c.instrument, c.attribute, order[c.prompt_key][0], c.scale))
    rows = []
    for c in cells:
        top = c.share(c.top)
        test = c.test
        if metrics.reference.measured and not metrics.reference.covers(c.instrument):
            compared = "no training reference | –"
        elif metrics.reference.measured:
            ref, matched = c.vs_reference, c.vs_matched
            compared = (f"{pct(ref.share(c.top)) if ref else '–'} | "
                        f"{pct(matched.share(c.top)) + f' of {matched.reference_n}' if matched else '–'}")
        else:
            compared = f"MAD {c.mad.mad:.3f}, p {c.mad.p_value:.3g}" if c.mad and c.mad.mad is not None and \
                c.mad.p_value is not None else "–"
        rows.append(f"| {md(order[c.prompt_key][1].text)} | {c.scale:g} | {md(c.instrument_name)}."
                    f"{md(c.attribute)} | {md(top.label)} | {pct(top.share)} [{pct(top.low)}, {pct(top.high)}] | "
                    f"{compared} | {'yes' if test and test.bh_rejected else 'no' if test else '–'} | {c.n} |")
    return rows


def measured_section(metrics: Metrics, run: Path) -> list[str]:
    """The card's measured sections, from a run's metrics.json."""
    dd = metrics.dedupe
    ref = metrics.reference
    if ref.measured:
        what = (f": the instruments' labels of {ref.n} training images, stored in the model folder without the "
                "images" if ref.is_table else f" ({ref.n} training images)")
        notes = "".join(f" {md(n)}." for n in ref.notes or [])
        against = (f"Reference: {md(ref.source)}{what}.{notes} Intervals are "
                   f"{metrics.run.confidence:.0%} simultaneous over each attribute's outcomes; \"differs\" means "
                   "the G-test against the training images survives Benjamini–Hochberg at FDR 5 % across every "
                   "prompt × scale × attribute. \"matched\" is the share among training items whose captions "
                   "reached the model as the prompt's own ids (where at least 20 did).")
        header = ["| prompt | scale | attribute | outcome | share [CI] | training share | matched share | differs "
                  "| n |", "|---|---|---|---|---|---|---|---|---|"]
    else:
        against = (f"**{md(no_reference_line(metrics))}** Intervals are "
                   f"{metrics.run.confidence:.0%} simultaneous over each attribute's outcomes; \"differs\" means "
                   "the MAD test against equal shares of the substantive outcomes survives Benjamini–Hochberg at "
                   "FDR 5 % across every prompt × scale × attribute.")
        header = ["| prompt | scale | attribute | outcome | share [CI] | vs a balanced model | differs | n |",
                  "|---|---|---|---|---|---|---|---|"]
    found = metrics.discoveries()
    lines = ["", "## Measured behaviour (crayonbox lab)", "",
             f"From lab run `{run}`: {metrics.run.images} images; "
             f"{dd.unique_perceptual if dd and dd.unique_perceptual is not None else '–'} perceptually unique. "
             f"{against} {len(found)} significant differences, counted once per group of prompts with identical "
             "ids × scale × attribute.", "", "### What the null prompts really are", ""]
    for g in metrics.id_groups():
        if g.first.family == "null":
            lines.append(f"- `{md(g.text)}` → `{md(' '.join(g.first.tokens))}`"
                         + (" (the unconditional input itself)" if g.first.equals_unconditional else ""))
    lines += ["", "### Most common outcome per prompt", "", *header, *headline_rows(metrics)]
    slopes = [r for r in metrics.dose_response if r.detected]
    lines += ["", "### What guidance changes", ""]
    if slopes:
        lines += ["Outcomes whose share changes with condition scale (odds ratio per doubling, CI excludes "
                  "1):", ""]
        group = metrics.group_of()
        seen: set[tuple] = set()
        for r in sorted(slopes, key=lambda r: -abs(r.slope or 0)):
            ident = (group[r.prompt_key].name, r.instrument, r.attribute, r.label)
            if ident in seen or len(seen) >= 12:
                continue  # identical ids, identical images: one line per group
            seen.add(ident)
            lines.append(f"- `{md(group[r.prompt_key].text)}` · {md(r.instrument.split('-')[0])}."
                         f"{md(r.attribute)} = {md(r.label)}: {' → '.join(pct(s) for s in r.shares or [])} at "
                         f"scales {', '.join(f'{s:g}' for s in r.scales or [])} (OR {r.odds_ratio:.2f})")
    else:
        lines.append("No outcome's share changed detectably with condition scale in this run.")
    lines += ["", "### How far the instruments can be trusted", ""]
    for info in metrics.instruments.values():
        if info.confusions:
            for attribute, c in info.confusions.items():
                recall = ", ".join(f"{k} {pct(x)}" for k, x in c.recall.items())
                lines.append(f"- {md(info.name)}.{md(attribute)}: accuracy {pct(c.accuracy)} on "
                             f"{c.n} held-out renders ({md(info.validation_source)}); recall per true class: "
                             f"{md(recall)}; unclear {pct(c.unclear_rate)}")
        else:
            lines.append(f"- {md(info.name)}: {md(info.validation_error or info.validation_source or 'not validated')}")
    return lines


def build_card(model: str | Path, run: str | Path | None = None) -> str:
    """The card's Markdown text; refuses a run of other weights."""
    model_folder = ModelFolder(model).check()
    folder = model_folder.path
    weights_hash = model_hash(folder)
    lines = model_section(model_folder, weights_hash)
    if run is None:
        lines += ["", "## Measured behaviour", "", "Not measured yet. To measure it:", "",
                  f"    crayonbox lab probe --model {folder} --prompts null,neutral -n 400 "
                  "--condition-scale 1,3,10 --out RUN", "    crayonbox lab measure RUN",
                  f"    crayonbox lab card {folder} --run RUN"]
    else:
        raw = read_metrics(run)
        metrics = Metrics.from_dict(raw)
        if metrics.run.model_hash != weights_hash:
            measured = str(metrics.run.model_hash)[:12]
            raise CrayonboxError(f"run {run} measured other weights (hash {measured}…, this model "
                                 f"{weights_hash[:12]}…): probe this model first")
        if not metrics.reference.measured:
            lines.insert(1, f"\n> **{md(no_reference_line(metrics))}** (lab run `{run}`)")
        lines += measured_section(metrics, Path(run))
        if raw.get("story"):
            agreement = raw["story"].get("tone_agreement")
            lines += ["", "### The blank prompt's story", "",
                      *story_lines(Story.from_dict(raw["story"]), Share(**agreement) if agreement else None)]
        lines += ["", "## Reproduce", "", f"    crayonbox lab measure {run}",
                  f"    crayonbox lab report {run}"]
    return with_card_header("\n".join(lines) + "\n")


def write_card(model: str | Path, run: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write the card (default MODEL/MODEL_CARD.md) atomically; returns its path."""
    text = build_card(model, run)
    path = Path(out) if out else Path(model) / "MODEL_CARD.md"
    write_text_atomic(path, text)
    return path

"""Audit a caption-pipeline run: which step did what to the captions of which images.

Reads DIR/provenance/*.parquet (written by `crayonbox data captions`) and the ground truth the provenance
carries (`world` column: objects with category, gender, skin tone and attire; caption language; source). An
*effect* is one (step, action, reason); the action is what happened to the caption (dropped, blanked, changed,
or flagged when only a reason was recorded). For every effect and every group of items (an attribute value
such as "skin tone = medium-dark", or "gender × skin tone = woman, medium-dark") the audit reports k of n
items affected, with a Wilson 95 % interval, where n counts the group's items whose caption reached the step
non-blank (not dropped, not emptied by an earlier step: those it could act on).

Groups are formed among all captions and, where the ground truth says which captions were written in English,
also among those alone: that is where an English-only filter should do nothing, and what it does there
anyway (short loanword captions called Spanish or Italian) is the cultural bias it adds. Shards without ground
truth are audited by detected language and source only.

Headline sentences name the groups an effect hit harder than its comparison set (all captions, or all English
captions), kept only when a one-sided binomial test survives Benjamini–Hochberg at 5 % across every group
tested: with a hundred groups, chance alone would otherwise make headlines.

Output: audit.json (every number) and audit.html (sentences, tables and bar charts, self-contained).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from babel import Locale
from matplotlib.figure import Figure
from scipy.stats import binom
from statsmodels.stats.multitest import multipletests
from tqdm import tqdm

from crayonbox.config import write_text_atomic
from crayonbox.errors import CrayonboxError

SKIPPED = "skipped_dropped"
ALL, ENGLISH = "all captions", "English captions"  # the two sets groups are formed among
TONE_NAMES = {1: "light", 2: "medium-light", 3: "medium", 4: "medium-dark", 5: "dark"}
DEFAULT_TONE = "default yellow"
STEP_TITLES = {"unicode_fix": "unicode fixing", "normalize": "official normaliser",
               "langid": "language identification", "english_only": "English-only filter",
               "names": "name replacement", "ban_list": "ban list", "min_length": "minimum-length filter",
               "dropout": "caption dropout"}
SOURCE_NAMES = {"unknown": "an unknown source", "cc3m": "CC3M", "cc12m": "CC12M", "yfcc": "YFCC"}
UNCOUNTABLE = {"attire", "food", "people", "jeans", "shorts", "glasses", "gloves", "briefs"}
PLURALS = {"woman": "women", "man": "men", "neutral": "gender-neutral people"}
ATTRIBUTE_ORDER = ("gender × skin tone", "skin tone", "gender", "attire", "category", "caption style",
                   "caption language", "detected language", "source kind", "source")  # most specific first
ENGLISH_SLICE_ATTRIBUTES = ATTRIBUTE_ORDER[:6]  # what the image shows, and caption style
MIN_GROUP_FOR_SENTENCE = 20  # smaller groups get a CI wider than ±20 points: not worth a headline
SENTENCES_PER_EFFECT = 3
FALSE_DISCOVERY_RATE = 0.05
Z95 = 1.959963984540054  # the 97.5 % normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Share:
    """k of n items of one group (among all or among English captions) affected by one effect."""

    step: str
    action: str
    reason: str
    among: str  # ALL or ENGLISH
    attribute: str  # "all" for the whole comparison set
    value: str
    k: int
    n: int
    share: float
    low: float
    high: float

    @property
    def effect(self) -> tuple[str, str, str]:
        return self.step, self.action, self.reason


def _attribute_rank(attribute: str) -> int:
    return ATTRIBUTE_ORDER.index(attribute) if attribute in ATTRIBUTE_ORDER else len(ATTRIBUTE_ORDER)


def item_groups(row: dict[str, Any]) -> set[tuple[str, str, str]]:
    """The (among, attribute, value) groups of one item; an image with two people is in both people's groups.
    Every item is in (ALL, "all", "all"); an item captioned in English also in (ENGLISH, "all", "all")."""
    groups = {("detected language", row.get("language") or "und"), ("source", row.get("source") or "unknown")}
    world = json.loads(row["world"]) if row.get("world") else {}
    if world.get("caption_language"):
        groups.add(("caption language", world["caption_language"]))
    if world.get("caption_style"):
        groups.add(("caption style", world["caption_style"]))
    if world.get("source_kind") and world.get("source_kind") != world.get("source"):
        groups.add(("source kind", world["source_kind"]))
    for obj in world.get("objects") or []:
        if obj.get("category"):
            groups.add(("category", obj["category"]))
        if obj.get("attire"):
            groups.add(("attire", obj["attire"]))
        if obj.get("category") == "person":  # tone and gender are ground truth only for people
            tone = TONE_NAMES.get(obj.get("skin_tone"), DEFAULT_TONE)
            groups.add(("skin tone", tone))
            if obj.get("gender"):
                groups |= {("gender", obj["gender"]), ("gender × skin tone", f"{obj['gender']}, {tone}")}
    keyed = {(ALL, a, v) for a, v in groups} | {(ALL, "all", "all")}
    if world.get("caption_language") == "en":
        keyed |= {(ENGLISH, a, v) for a, v in groups if a in ENGLISH_SLICE_ATTRIBUTES}
        keyed.add((ENGLISH, "all", "all"))
    return keyed


def item_effects(row: dict[str, Any], steps: list[str]) -> list[tuple[str, tuple[str, str, str] | None]]:
    """For each step the item's caption reached non-blank (the steps that had something to act on): the
    step and its (step, action, reason) effect, or None when it let the caption pass."""
    out = []
    for i, step in enumerate(steps):
        before = row["raw_caption"] if i == 0 else row.get(f"{steps[i - 1]}.caption")
        if before is None or not before.strip():  # dropped earlier, or nothing left to act on
            continue
        reason = row.get(f"{step}.reason")
        if not reason:
            out.append((step, None))
            continue
        if row.get("dropped_by") == step:
            action = "dropped"
        elif row.get("blanked_by") == step:
            action = "blanked"
        else:
            action = "changed" if row.get(f"{step}.caption") != before else "flagged"
        out.append((step, (step, action, reason)))
    return out


def load_problems(run_dir: str | Path) -> dict[str, int]:
    """{problem kind: count} of the malformed input the run's reader met (provenance/*.problems.json)."""
    totals: Counter = Counter()
    for path in sorted((Path(run_dir) / "provenance").glob("*.problems.json")):
        totals.update(json.loads(path.read_text(encoding="utf8"))["counts"])
    return dict(totals)


def load_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """Provenance rows, step names in order, and {step name: step kind} of a `data captions` output folder."""

    run_dir = Path(run_dir)
    files = sorted((run_dir / "provenance").glob("*.parquet"))
    if not files:
        raise CrayonboxError(f"no provenance in {run_dir / 'provenance'}; run `crayonbox data captions IN "
                             f"--out {run_dir}` first")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    manifest_path = run_dir / "caption_pipeline.json"
    if manifest_path.exists():
        entries = json.loads(manifest_path.read_text(encoding="utf8"))["pipeline"]["steps"]
        kinds = {e["name"]: e["step"] for e in entries}
    else:  # provenance alone: step names from the `<step>.reason` columns, kinds unknown
        names = [c.removesuffix(".reason") for c in table.column_names if c.endswith(".reason")]
        kinds = {name: name for name in names}
    return table.to_pylist(), list(kinds), kinds


def compute_audit(rows: list[dict[str, Any]], steps: list[str], progress: bool = False) -> dict[str, Any]:
    """Counts and shares of every effect in every group (see the module docstring)."""

    reached: dict[str, Counter] = defaultdict(Counter)  # items of a group a step had a caption to act on
    affected: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    counts: Counter = Counter()  # (step, action, reason, detected language, attribute, value), among ALL
    for row in tqdm(rows, desc="audit", unit="item", disable=not progress):
        groups = item_groups(row)
        language = row.get("language") or "und"
        for step, effect in item_effects(row, steps):
            reached[step].update(groups)
            if effect:
                affected[effect].update(groups)
                counts.update((*effect, language, a, v) for among, a, v in groups
                              if among == ALL and a != "all")

    shares = [Share(*effect, *group, hits[group], n, hits[group] / n, *wilson_interval(hits[group], n))
              for effect, hits in affected.items() for group, n in reached[effect[0]].items()]
    shares.sort(key=lambda s: (steps.index(s.step), s.action, s.reason, s.among != ALL,
                               _attribute_rank(s.attribute), s.value))
    return {"items": len(rows), "steps": steps, "ground_truth": any(row.get("world") for row in rows),
            "effects": [s for s in shares if s.attribute == "all" and s.among == ALL],  # in pipeline order
            "shares": shares,
            "counts": [dict(zip(("step", "action", "reason", "language", "attribute", "value", "count"),
                                (*key, c), strict=True)) for key, c in sorted(counts.items())]}


# ---- findings in words -------------------------------------------------------------------------------------


def _language_name(code: str) -> str:

    name = Locale("en").languages.get(code)
    return f"{name} ({code})" if name else code


def group_phrase(attribute: str, value: str) -> str:
    """How a sentence names a group: "images showing women with medium-dark skin", "captions from CC12M"."""
    if attribute == "gender × skin tone":
        gender, tone = value.split(", ")
        return f"images showing {PLURALS.get(gender, gender + 's')} with {tone} skin"
    if attribute == "gender":
        return f"images showing {PLURALS.get(value, value + 's')}"
    if attribute == "skin tone":
        return f"images showing people with {value} skin"
    if attribute in ("attire", "category"):
        article = "" if value in UNCOUNTABLE else "an " if value[:1] in "aeiou" else "a "
        return f"images showing {article}{value}"
    if attribute == "caption style":
        return f"captions in the {value} style"
    if attribute in ("caption language", "detected language"):
        how = "written in" if attribute == "caption language" else "detected as"
        return f"captions {how} {_language_name(value)}"
    if attribute in ("source", "source kind"):
        name = SOURCE_NAMES.get(value, value)
        return f"captions from {name}" + (" sources" if attribute == "source kind" else "")
    return f"items with {attribute} {value}"


def sentence(share: Share, baseline: Share, kind: str) -> str:
    """One finding in words, with its interval and the rate of its comparison set."""
    title = STEP_TITLES.get(kind, f"step {share.step!r}")
    of = group_phrase(share.attribute, share.value)
    captions = "English captions" if share.among == ENGLISH else "captions"
    of = of.replace("captions", captions, 1) if of.startswith("captions") else f"{captions} of {of}"
    return (f"the {title} {share.action} {100 * share.share:.0f} % of {of} (95 % CI "
            f"{100 * share.low:.0f}–{100 * share.high:.0f} %, {share.k} of {share.n}; "
            f"reason {share.reason}), against {100 * baseline.share:.0f} % of all {captions}")


def headline_sentences(audit: dict[str, Any], kinds: dict[str, str]) -> list[str]:
    """Per effect: its overall rate, then up to three groups (and three among English captions) it hit harder
    than their comparison set, largest gap first; a group counts only if its one-sided binomial test survives
    Benjamini–Hochberg over all groups."""

    baselines = {(s.effect, s.among): s for s in audit["shares"] if s.attribute == "all"}
    language_steps = {name for name, kind in kinds.items() if kind in ("english_only", "langid")}
    candidates = [s for s in audit["shares"]
                  if s.attribute != "all" and s.n >= MIN_GROUP_FOR_SENTENCE
                  # a language filter acts *by* detected language: saying so is a tautology
                  and not (s.step in language_steps and s.attribute == "detected language")]
    p_values = [float(binom.sf(s.k - 1, s.n, baselines[s.effect, s.among].share)) for s in candidates]
    significant = list(multipletests(p_values, FALSE_DISCOVERY_RATE, method="fdr_bh")[0]) if candidates else []
    out = []
    for overall in audit["effects"]:
        kind = kinds.get(overall.step, overall.step)
        out.append(f"the {STEP_TITLES.get(kind, f'step {overall.step!r}')} {overall.action} "
                   f"{100 * overall.share:.0f} % of all captions ({overall.k} of {overall.n}; "
                   f"reason {overall.reason})")
        hits = [s for s, keep in zip(candidates, significant, strict=True)
                if keep and s.effect == overall.effect
                and s.low > baselines[s.effect, s.among].share]  # significant *and* clearly larger
        # largest gap first; ties go to the more specific attribute ("women with medium-dark skin" first)
        hits.sort(key=lambda s: (baselines[s.effect, s.among].share - s.low, _attribute_rank(s.attribute)))
        for among in (ALL, ENGLISH):  # English captions get their own: there a language filter is pure bias
            out += [sentence(s, baselines[s.effect, s.among], kind)
                    for s in [s for s in hits if s.among == among][:SENTENCES_PER_EFFECT]]
    return out


def audit_to_json(audit: dict[str, Any], sentences: list[str]) -> dict[str, Any]:
    """The audit as plain JSON-ready data."""
    return {**audit, "effects": [asdict(s) for s in audit["effects"]],
            "shares": [asdict(s) for s in audit["shares"]], "sentences": sentences}


# ---- report ----------------------------------------------------------------------------------------------

MAX_BARS = 15  # per attribute, the largest groups
BAR_INCHES, GAP_INCHES, TOP_INCHES, BOTTOM_INCHES = 0.2, 0.55, 0.75, 0.3


def bar_chart_png(baselines: dict[str, Share], shares: list[Share], title: str) -> bytes:
    """Bars per (among, attribute): share of each group affected, its Wilson 95 % interval as a line, the
    comparison set's rate dashed."""


    panels = [(among, a) for among in (ALL, ENGLISH) for a in ATTRIBUTE_ORDER
              if any((s.among, s.attribute) == (among, a) for s in shares)]
    bars = [sorted((s for s in shares if (s.among, s.attribute) == panel), key=lambda s: -s.n)[:MAX_BARS]
            for panel in panels]
    total_bars = sum(len(b) for b in bars)
    height = TOP_INCHES + BOTTOM_INCHES + BAR_INCHES * total_bars + GAP_INCHES * (len(panels) - 1)
    # Fixed margins instead of tight_layout, which measures every tick label and costs seconds per chart.
    fig = Figure(figsize=(7, height))
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={
        "height_ratios": [len(b) for b in bars],
        "hspace": GAP_INCHES / (BAR_INCHES * total_bars / len(panels))})
    fig.subplots_adjust(left=0.4, right=0.97, top=1 - TOP_INCHES / height, bottom=BOTTOM_INCHES / height)
    for ax, (among, attribute), group in zip(axes[:, 0], panels, bars, strict=True):
        group.sort(key=lambda s: s.share)
        labels = [f"{s.value} (n={s.n})" for s in group]
        ax.barh(labels, [s.share for s in group], color="#8fb0d9")
        ax.hlines(labels, [s.low for s in group], [s.high for s in group], color="#1f3b63", linewidth=1.2)
        ax.axvline(baselines[among].share, color="#c44e52", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_title(attribute + (" (English captions)" if among == ENGLISH else ""), fontsize=8, loc="left",
                     pad=2)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9, y=1 - 0.2 / height)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def render_html(audit: dict[str, Any], sentences: list[str], kinds: dict[str, str], source: str) -> str:
    """A self-contained HTML page: every text escaped, every chart embedded as base64 PNG."""

    parts = [f"<!doctype html><meta charset='utf-8'><title>Caption audit: {escape(source)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:auto}td,th{padding:2px 8px;"
             "text-align:right}td:nth-child(-n+3){text-align:left}</style>",
             f"<h1>Caption audit</h1><p>{audit['items']} items from {escape(source)}; steps: "
             f"{escape(' → '.join(audit['steps']))}. "
             f"Ground truth: {'yes' if audit['ground_truth'] else 'no'}. Malformed input items skipped or "
             f"repaired by the reader: {escape(str(audit.get('input_problems') or 'none'))}.</p>"
             "<h2>Findings</h2><ul>"]
    parts += [f"<li>{escape(s)}</li>" for s in sentences] or ["<li>No step changed any caption.</li>"]
    parts.append("</ul>")
    for overall in audit["effects"]:
        title = (f"{STEP_TITLES.get(kinds.get(overall.step, ''), overall.step)}: {overall.action} "
                 f"({overall.reason}), {overall.k} of {overall.n} items ({100 * overall.share:.1f} %)")
        shares = [s for s in audit["shares"] if s.effect == overall.effect]
        baselines = {s.among: s for s in shares if s.attribute == "all"}
        groups = [s for s in shares if s.attribute != "all"]
        png = base64.b64encode(bar_chart_png(baselines, groups, title)).decode("ascii")
        parts.append(f"<h2>{escape(title)}</h2><img alt='{escape(title)}' src='data:image/png;base64,{png}'>"
                     "<table><tr><th>among</th><th>attribute</th><th>group</th><th>k</th><th>n</th>"
                     "<th>share</th><th>95 % CI</th></tr>")
        for s in shares:
            cells = [escape(s.among), escape(s.attribute), escape(s.value), s.k, s.n,
                     f"{100 * s.share:.1f} %", f"{100 * s.low:.1f}–{100 * s.high:.1f} %"]
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def write_audit(run_dir: str | Path, out_dir: str | Path | None = None,
                progress: bool = False) -> tuple[Path, Path]:
    """Audit a `data captions` output folder; write audit.html and audit.json (default: DIR/audit)."""

    rows, steps, kinds = load_run(run_dir)
    audit = {**compute_audit(rows, steps, progress), "input_problems": load_problems(run_dir)}
    sentences = headline_sentences(audit, kinds)
    out = Path(out_dir) if out_dir else Path(run_dir) / "audit"
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "audit.json", out / "audit.html"
    contents = (json.dumps(audit_to_json(audit, sentences), indent=1, ensure_ascii=False),
                render_html(audit, sentences, kinds, str(run_dir)))
    for path, text in zip(paths, contents, strict=True):
        write_text_atomic(path, text)
    return paths[1], paths[0]

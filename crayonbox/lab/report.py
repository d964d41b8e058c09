"""`crayonbox lab report RUN`: one self-contained HTML page (plus JSON and CSV) from a measured run.

    OUT/report.html        sample grids, the ids each null prompt became, instruments and their validation,
                           shares with intervals against the training images, dose–response, clusters, tests
    OUT/metrics.json       every number behind the page (a copy of RUN/metrics.json)
    OUT/cells.csv          one row per prompt × settings × instrument attribute × outcome
    OUT/dose_response.csv  one row per prompt × instrument attribute × outcome
    OUT/prompts.csv        each prompt, its normalised text and ids

The page works offline and is safe whatever the prompts contain: see report_html.py.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crayonbox.lab.measure import read_metrics
from crayonbox.lab.report_html import esc, fmt, img, interval, page, plot, show_prompt, table
from crayonbox.lab.store import RunStore

GRID_IMAGES = 16  # images per sample grid (the first seeds, so grids line up across prompts and scales)


UNCONDITIONAL_HTML = "<code>&lt;unconditional ids&gt;</code>"


def prompt_labels(metrics: dict[str, Any]) -> dict[str, str]:
    """prompt key → escaped HTML label."""
    return {row["key"]: html_label(row) for row in metrics.get("prompts", [])}


def html_label(row: dict[str, Any]) -> str:
    """A prompt record as escaped HTML."""
    return UNCONDITIONAL_HTML if row["input_mode"] == "unconditional-ids" else show_prompt(row["prompt"])


def id_groups(metrics: dict[str, Any]) -> dict[str, list[str]]:
    """prompt key → the keys of every prompt with the same ids (itself first). Such prompts get the same
    images from the same seeds, so the report shows each group once."""
    members: dict[str, list[str]] = defaultdict(list)
    for row in metrics.get("prompts", []):
        members[row["id_group"]].append(row["key"])
    return {key: [key, *(k for k in keys if k != key)] for keys in members.values() for key in keys}


def shown_once(keys: Iterable[str], groups: dict[str, list[str]]) -> list[str]:
    """The keys to show: the first of each id group, in order."""
    seen: set[str] = set()
    out = []
    for key in keys:
        if key not in seen:
            out.append(key)
            seen.update(groups.get(key, [key]))
    return out


def group_label(labels: dict[str, str], groups: dict[str, list[str]], key: str) -> str:
    """HTML label of a prompt and of every prompt with the same ids."""
    return " = ".join(label_of(labels, k) for k in groups.get(key, [key]))


def label_of(labels: dict[str, str], key: str) -> str:
    """Escaped HTML label of a prompt key (also for prompts without a record)."""
    mode, _, prompt = key.partition(":")
    return labels.get(key) or (UNCONDITIONAL_HTML if mode == "unconditional-ids" else show_prompt(prompt))


def summary_section(metrics: dict[str, Any], records: list[Any]) -> str:
    """The run: size, scales, unique images, model, reference, interval method."""
    run, ref, dd = metrics["run"], metrics["reference"], metrics.get("dedupe", {}).get("run", {})
    scales = sorted({r.condition_scale for r in records})
    rows = [("images", run["images"]), ("prompts", len({r.prompt_key for r in records})),
            ("condition scales", ", ".join(f"{s:g}" for s in scales)),
            ("unique images (exact / perceptual)",
             f"{dd.get('unique_exact', '–')} / {dd.get('unique_perceptual', '–')}"),
            ("model hash", run.get("model_hash")), ("model folder", run.get("model_dir")),
            ("reference", ref.get("source") or "none (compared with a balanced model only)"),
            ("intervals", f"{run['confidence']:.0%}, simultaneous over each attribute's outcomes (Goodman)")]
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in metrics.get("notes", []))
    return f"<h2>Run</h2>{table(['', ''], rows)}{notes}"


def tokens_section(metrics: dict[str, Any]) -> str:
    """Which inputs really reached the model: prompts grouped by identical ids."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in metrics.get("prompts", []):
        groups[row["id_group"]].append(row)
    rows, classes = [], []
    for group, members in groups.items():
        first = members[0]
        prompts = " ".join(html_label(m) for m in members)
        rows.append((esc(group), prompts, show_prompt(first["normalized"]),
                     f"<code>{esc(' '.join(first['tokens']))}</code>", f"<code>{esc(first['ids'])}</code>",
                     "yes" if first["equals_unconditional"] else "no", first.get("matched_reference_n", 0)))
        classes.append("flag" if len(members) > 1 else "")
    if not rows:
        return ""
    uncond = metrics["prompts"][0]
    head = ("<h2>What each prompt really became</h2><p>Prompts in one row reach the model as the same ids, "
            "so with the same seeds they give identical images. The unconditional branch of guidance is "
            f"<code>{esc(' '.join(uncond['uncond_tokens']))}</code> = "
            f"<code>{esc(uncond['uncond_ids'])}</code>.</p>")
    headers = ["group", "prompts", "normalised", "tokens", "ids", "= unconditional",
               "training images with these ids"]
    return head + table(headers, rows, raw_columns=(0, 1, 2, 3, 4), row_classes=classes)


def instruments_section(metrics: dict[str, Any]) -> str:
    """Each instrument's validation: accuracy, unclear rate, confusion matrix."""
    parts = ["<h2>Instruments and their validation</h2><p>Confusion matrices on labelled held-out renders: "
             "rows are the truth, columns the instrument's reading. \"none\" and \"unclear\" are outcomes, "
             "never dropped.</p>"]
    for key, info in metrics["instruments"].items():
        validation = info.get("validation", {})
        parts.append(f"<h3>{esc(info['name'])} <span class=\"note\">({esc(key)})</span></h3>"
                     f"<p class=\"note\">{esc(validation.get('source', ''))}</p>")
        if "error" in validation:
            parts.append(f"<p class=\"warn\">Not validated: {esc(validation['error'])}</p>")
        for attribute, c in validation.get("confusions", {}).items():
            rows = [[label, *row] for label, row in zip(c["labels"], c["counts"], strict=True)]
            parts.append(f"<p>{esc(attribute)}: accuracy {fmt(c['accuracy'])} on n={c['n']}, unclear rate "
                         f"{fmt(c['unclear_rate'])}</p>" + table(["truth \\ read", *c["labels"]], rows))
    return "".join(parts)


def samples_section(store: RunStore, metrics: dict[str, Any], records: list[Any],
                    labels: dict[str, str]) -> str:
    """A grid of the first images (first seeds) per prompt group and scale."""
    from crayonbox.pipeline import make_grid

    by_group: dict[tuple[str, float], list[Any]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.image_index):
        by_group[(r.prompt_key, r.condition_scale)].append(r)
    dedupe = {(g["prompt_key"], json.loads(g["settings"])["condition_scale"]): g
              for g in metrics.get("dedupe", {}).get("groups", [])}
    groups = id_groups(metrics)
    keep = set(shown_once([key for key, _ in by_group], groups))
    figures = []
    for (key, scale), rows in by_group.items():
        if key not in keep:
            continue
        grid = make_grid([store.load_image(r.path) for r in rows[:GRID_IMAGES]])
        d = dedupe.get((key, scale), {})
        width = max(200, min(320, grid.width * 4))
        caption = (f"{group_label(labels, groups, key)} · scale {scale:g} · seeds {rows[0].seed}… · "
                   f"{esc(d.get('unique_perceptual', '–'))} unique of {esc(d.get('images', len(rows)))}")
        figures.append(f"<figure>{img(grid, f'samples {key} scale {scale:g}', width)}"
                       f"<figcaption>{caption}</figcaption></figure>")
    return f"<h2>Samples</h2><div class=\"grid\">{''.join(figures)}</div>"


def shares_section(metrics: dict[str, Any], labels: dict[str, str]) -> str:
    """Per instrument attribute: bar charts against the training images and the cell table."""
    from crayonbox.lab.report_plots import shares_figure

    by_attr: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for cell in metrics["cells"]:
        by_attr[(cell["instrument"], cell["attribute"])][cell["prompt_key"]].append(cell)
    parts = ["<h2>Shares against the training images</h2><p>Bars: share of the model's images with the "
             "simultaneous interval; diamonds: the same instrument on training images. Table: the "
             "most common outcome, distances to the reference with the G-test (Benjamini–Hochberg "
             "adjusted across every cell), Miller–Madow entropy, the published-style MAD with its noise "
             "floor at the same n, and the share corrected for instrument error.</p>"]
    for (instrument, attribute), prompts in by_attr.items():
        reference = metrics["reference"]["counts"].get(instrument, {}).get(attribute)
        parts.append(f"<h3>{esc(instrument)} · {esc(attribute)}</h3><div class=\"grid\">")
        rows = []
        groups = id_groups(metrics)
        for key in shown_once(prompts, groups):
            cells = prompts[key]
            title = "<unconditional ids>" if key.startswith("unconditional") else repr(key.partition(":")[2])
            parts.append(plot(shares_figure(cells, reference, f"{title} · {attribute}"), f"shares {key}"))
            by_scale = sorted(cells, key=lambda c: c["settings"]["condition_scale"])
            rows += [cell_row(group_label(labels, groups, key), c) for c in by_scale]
        parts.append("</div>")
        headers = ["prompt", "scale", "n", "top outcome", "share [CI]", "training share", "TV", "JS",
                   "KL (null bias)", "G p (BH)", "entropy MM [CI]", "MAD (floor, p)", "corrected share"]
        parts.append(table(headers, rows, raw_columns=(0,)))
    return "".join(parts)


def pick(result: dict[str, Any], name: str, j: int) -> Any:
    """Entry j of a per-outcome list in a statistics result (None when the statistic is absent or failed)."""
    values = result.get(name)
    return values[j] if isinstance(values, list) else None


def cell_row(label: str, c: dict[str, Any]) -> list[Any]:
    """One table row summarising a cell by its most common outcome."""
    top = max(range(len(c["labels"])), key=lambda j: c["counts"][j])
    sim, ref, test = c.get("simultaneous", {}), c.get("vs_reference", {}), c.get("test", {})
    dist, gaps = ref.get("distance", {}), ref.get("gaps", {})
    ent, mad, corr = c.get("entropy", {}), c.get("mad", {}), c.get("corrected", {})
    return [label, c["settings"]["condition_scale"], c["n"], c["labels"][top],
            interval(c["shares"][top], pick(sim, "low", top), pick(sim, "high", top)),
            fmt(pick(gaps, "reference", top)), dist.get("total_variation"), dist.get("jensen_shannon"),
            f"{fmt(dist.get('kl'))} ({fmt(dist.get('kl_null_bias'))})" if dist else "–",
            f"{fmt(test.get('p_value'))} ({fmt(test.get('bh_adjusted'))})" if test else "–",
            interval(ent.get("miller_madow"), ent.get("low"), ent.get("high")),
            f"{fmt(mad['mad'])} ({fmt(mad.get('null_mean'))}, {fmt(mad.get('p_value'))})"
            if "mad" in mad else "–",
            interval(pick(corr, "estimate", top), pick(corr, "low", top), pick(corr, "high", top))
            if "estimate" in corr else "–"]


def dose_section(metrics: dict[str, Any], labels: dict[str, str]) -> str:
    """Share against condition scale: plots and slopes."""
    from crayonbox.lab.report_plots import dose_figure

    rows = [r for r in metrics.get("dose_response", []) if "slope" in r]
    if not rows:
        return ""
    same = id_groups(metrics)
    keep = set(shown_once([r["prompt_key"] for r in rows], same))
    rows = [r for r in rows if r["prompt_key"] in keep]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["prompt_key"], r["instrument"], r["attribute"])].append(r)
    figures = []
    for (key, instrument, attribute), group in groups.items():
        title = f"{key.partition(':')[2]!r} · {instrument.split('-')[0]}.{attribute}"
        figures.append(plot(dose_figure(group, title), f"dose-response {key}"))
    body = table(["prompt", "instrument", "outcome", "shares by scale", "slope per doubling [CI]", "p"],
                 [(group_label(labels, same, r["prompt_key"]),
                   f"{r['instrument'].split('-')[0]}.{r['attribute']}", r["label"],
                   " → ".join(fmt(s) for s in r["shares"]),
                   interval(r["slope"], r["slope_low"], r["slope_high"]), r["slope_p"]) for r in rows],
                 raw_columns=(0,))
    return ("<h2>Guidance dose–response</h2><p>Share of each outcome against condition scale (binomial GLM "
            "on log₂ scale: the slope is the change in log-odds per doubling of the scale). A slope whose "
            "interval excludes 0 is bias that guidance creates or removes.</p>"
            f"<div class=\"grid\">{''.join(figures)}</div>" + body)


def clusters_section(store: RunStore, metrics: dict[str, Any]) -> str:
    """Exemplars of each label-free cluster, from the model and from training."""
    clusters = metrics.get("clusters") or {}
    if not clusters:
        return ""
    from crayonbox.pipeline import make_grid

    paths = {r.sha256: r.path for r in store.images()}
    for record in store.record_keys("reference-items:"):
        paths.update({row["sha256"]: row["path"] for row in store.get_record(record)})
    rows = []
    for label, shas in clusters["exemplars"].items():
        ref_shas = clusters.get("reference_exemplars", {}).get(label, [])
        cells = []
        for group in (shas, ref_shas):
            images = [store.load_image(paths[s]) for s in group if s in paths]
            cells.append(img(make_grid(images, columns=len(images)), f"cluster {label}", 40 * len(images))
                         if images else "–")
        rows.append((esc(label), *cells))
    return ("<h2>Label-free clusters</h2><p>k-means on " + esc(clusters["extractor"]) + " features of the "
            "model's and the training images together (no labels involved). Exemplars are the images nearest "
            "each centroid; the cluster shares per prompt are in the tables above.</p>"
            + table(["cluster", "model exemplars", "training exemplars"], rows, raw_columns=(0, 1, 2)))


def tests_section(metrics: dict[str, Any]) -> str:
    """The Benjamini–Hochberg discoveries."""
    bh = metrics.get("multiple_testing", {})
    found = bh.get("discoveries", [])
    items = "".join(f"<li><code>{esc(d)}</code></li>" for d in found) or "<li>none</li>"
    return (f"<h2>Multiple testing</h2><p>{esc(bh.get('tests', 0))} tests, Benjamini–Hochberg at FDR "
            f"{esc(bh.get('alpha'))}: {len(found)} discoveries.</p><ul>{items}</ul>")


def csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas: a text cell starting with = + - @ gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(path: Path, headers: list[str], rows: Iterable[list[Any]]) -> None:
    """Write a CSV atomically, with spreadsheet formulas neutralised."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows([csv_safe(v) for v in row] for row in rows)
    os.replace(tmp, path)


def cell_csv_rows(metrics: dict[str, Any]) -> Iterable[list[Any]]:
    """One CSV row per cell and outcome."""
    for c in metrics["cells"]:
        mode, _, prompt = c["prompt_key"].partition(":")
        sim, ref = c.get("simultaneous", {}), c.get("vs_reference", {})
        gaps, corr = ref.get("gaps", {}), c.get("corrected", {})
        s = c["settings"]
        for j, label in enumerate(c["labels"]):
            yield [prompt, mode, s["condition_scale"], s["top_k"], s["top_p"], s["temperature"],
                   c["instrument"], c["attribute"], label, c["counts"][j], c["n"], c["shares"][j],
                   pick(sim, "low", j), pick(sim, "high", j), pick(gaps, "reference", j),
                   pick(gaps, "gap", j), pick(gaps, "gap_low", j), pick(gaps, "gap_high", j),
                   pick(gaps, "ratio", j),
                   pick(corr, "estimate", j), pick(corr, "low", j), pick(corr, "high", j),
                   c.get("test", {}).get("bh_adjusted")]


def build_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the report files for a measured run; returns the HTML path."""
    metrics = read_metrics(run)
    out = Path(out) if out else Path(run) / "report"
    out.mkdir(parents=True, exist_ok=True)
    with RunStore.open(run) as store:
        records = store.images()
        labels = prompt_labels(metrics)
        sections = [summary_section(metrics, records), tokens_section(metrics), instruments_section(metrics),
                    samples_section(store, metrics, records, labels), shares_section(metrics, labels),
                    dose_section(metrics, labels), clusters_section(store, metrics), tests_section(metrics)]
    html_path = out / "report.html"
    tmp = html_path.with_name(".report.html.tmp")
    tmp.write_text(page(f"crayonbox lab report: {Path(run).name}", sections), encoding="utf-8")
    os.replace(tmp, html_path)
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "metrics.json")
    write_csv(out / "cells.csv", ["prompt", "input_mode", "condition_scale", "top_k", "top_p", "temperature",
                                  "instrument", "attribute", "outcome", "count", "n", "share", "low", "high",
                                  "training_share", "gap", "gap_low", "gap_high", "ratio", "corrected",
                                  "corrected_low", "corrected_high", "bh_adjusted_p"], cell_csv_rows(metrics))
    write_csv(out / "dose_response.csv", ["prompt_key", "instrument", "attribute", "outcome", "scales",
                                          "shares", "slope", "slope_low", "slope_high", "slope_p",
                                          "odds_ratio"],
              ([r["prompt_key"], r["instrument"], r["attribute"], r["label"], json.dumps(r.get("scales")),
                json.dumps(r.get("shares")), r.get("slope"), r.get("slope_low"), r.get("slope_high"),
                r.get("slope_p"), r.get("odds_ratio")] for r in metrics.get("dose_response", [])))
    write_csv(out / "prompts.csv", ["prompt", "input_mode", "family", "normalized", "ids", "tokens",
                                    "id_group", "equals_unconditional", "notes"],
              ([p["prompt"], p["input_mode"], p["family"], p["normalized"], json.dumps(p["ids"]),
                " ".join(p["tokens"]), p["id_group"], p["equals_unconditional"], " | ".join(p["notes"])]
               for p in metrics.get("prompts", [])))
    return html_path

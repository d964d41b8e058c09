"""`crayonbox lab report RUN`: one self-contained HTML page (plus JSON and CSV) from a measured run.

    OUT/report.html        a written summary first, then the ids each prompt became, sample thumbnails,
                           shares with intervals (against the training images and the matched subset, or
                           against a balanced model when no training images were measured), instruments and
                           their validation, dose–response, clusters, tests; details fold away
    OUT/metrics.json       every number behind the page (a copy of RUN/metrics.json)
    OUT/cells.csv          one row per prompt × settings × instrument attribute × outcome
    OUT/dose_response.csv  one row per prompt × instrument attribute × outcome
    OUT/prompts.csv        each prompt, its normalised text and ids

The page reads typed metrics (results_run.Metrics) and shows each id group once: prompts that reached the
model as the same ids get the same images from the same seeds. It works offline and is safe whatever the
prompts contain: see report_html.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from crayonbox.config import write_text_atomic
from crayonbox.lab.measure import read_metrics
from crayonbox.lab.report_files import write_tables
from crayonbox.lab.report_html import details, esc, fmt, interval, page, pct, plot, points, show_prompt, table
from crayonbox.lab.report_images import clusters_section, prompts_html, samples_section
from crayonbox.lab.report_plots import dose_figure, shares_figure
from crayonbox.lab.report_summary import HEADLINE_FAMILIES, banner, compared_with, summary_section
from crayonbox.lab.results import Cell
from crayonbox.lab.results_run import IdGroup, Metrics
from crayonbox.lab.store import RunStore

OPEN_ROWS = 12  # a table or gallery longer than this starts folded


def short_title(group: IdGroup) -> str:
    """A plot title for a group: its first member, and how many others share its ids."""
    more = len(group.members) - 1
    return group.first.text + (f" (+{more} with the same ids)" if more else "")


def headline_first(groups: list[IdGroup]) -> list[IdGroup]:
    """The blank and neutral prompts' groups first (what readers look for), the rest in their order."""
    return sorted(groups, key=lambda g: g.first.family not in HEADLINE_FAMILIES)


def run_section(metrics: Metrics, records: list[Any]) -> str:
    """The run: size, scales, unique images, model, reference, interval method."""
    run, dd = metrics.run, metrics.dedupe
    scales = sorted({r.condition_scale for r in records})
    rows = [("images", run.images), ("prompts", len({r.prompt_key for r in records})),
            ("condition scales", ", ".join(f"{s:g}" for s in scales)),
            ("unique images (exact / perceptual)",
             f"{fmt(dd.unique_exact if dd else None)} / {fmt(dd.unique_perceptual if dd else None)}"),
            ("model hash", run.model_hash), ("model folder", run.model_dir),
            ("shares compared with", compared_with(metrics)),
            ("intervals", f"{run.confidence:.0%}, simultaneous over each attribute's outcomes (Goodman)")]
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in metrics.notes)
    return details("Run", table(["", ""], rows) + notes)


def tokens_section(metrics: Metrics) -> str:
    """Which inputs really reached the model: prompts grouped by identical ids."""
    groups = metrics.id_groups()
    if not metrics.prompts:
        return ""
    # Without a training reference there is no count of training captions to show: no column claims one.
    with_reference = metrics.reference.measured
    rows = [(esc(g.name), prompts_html(g), show_prompt(g.first.normalized),
             f"<code>{esc(' '.join(g.first.tokens))}</code>", f"<code>{esc(g.first.ids)}</code>",
             "yes" if g.first.equals_unconditional else "no",
             *([g.first.matched_reference_n] if with_reference else [])) for g in groups]
    classes = ["flag" if len(g.members) > 1 else "" for g in groups]
    uncond = metrics.prompts[0]
    head = ("<h2>What each prompt really became</h2><p>Prompts in one row reach the model as the same ids, "
            "so with the same seeds they give identical images: the page shows each row once. The "
            f"unconditional branch of guidance is <code>{esc(' '.join(uncond.uncond_tokens))}</code> = "
            f"<code>{esc(uncond.uncond_ids)}</code>.</p>")
    headers = ["group", "prompts", "normalised", "tokens", "ids", "= unconditional",
               *(["training images with these ids"] if with_reference else [])]
    return head + details(f"{len(groups)} id groups of {len(metrics.prompts)} prompts",
                          table(headers, rows, raw_columns=(0, 1, 2, 3, 4), row_classes=classes),
                          is_open=len(groups) <= OPEN_ROWS)


def instruments_section(metrics: Metrics) -> str:
    """Each instrument's validation: accuracy, unclear rate, confusion matrix (folded)."""
    parts = ["<h2>Instruments and their validation</h2><p>Confusion matrices on labelled held-out renders: "
             "rows are the truth, columns the instrument's reading. \"none\" and \"unclear\" are outcomes, "
             "never dropped.</p>"]
    for key, info in metrics.instruments.items():
        body = f"<p class=\"note\">{esc(info.validation_source)}</p>"
        if info.validation_error:
            body += f"<p class=\"warn\">Not validated: {esc(info.validation_error)}</p>"
        accuracy = []
        for attribute, c in info.confusions.items():
            rows = [[label, *row] for label, row in zip(c.labels, c.counts, strict=True)]
            accuracy.append(f"{esc(attribute)} {fmt(c.accuracy)}")
            body += (f"<p>{esc(attribute)}: accuracy {fmt(c.accuracy)} on n={c.n}, unclear rate "
                     f"{fmt(c.unclear_rate)}</p>" + table(["truth \\ read", *c.labels], rows))
        title = f"{esc(info.name)} <span class=\"note\">({esc(key)}{'; accuracy ' if accuracy else ''}" \
                f"{', '.join(accuracy)})</span>"
        parts.append(details(title, body))
    return "".join(parts)


def cell_row(group: IdGroup, c: Cell, with_reference: bool) -> list[Any]:
    """One table row summarising a cell by its most common outcome, with both comparisons when training
    images were measured."""
    top = c.top
    share = c.share(top)
    ref, matched, test, ent, mad, corr = c.vs_reference, c.vs_matched, c.test, c.entropy, c.mad, c.corrected
    dist = ref.distance if ref else None
    head = [prompts_html(group), c.scale, c.n, share.label, interval(share.share, share.low, share.high)]
    tail = [f"{fmt(test.p_value)} ({fmt(test.bh_adjusted)})" if test else "–",
            interval(ent.miller_madow, ent.low, ent.high),
            f"{fmt(mad.mad)} ({fmt(mad.null_mean)}, {fmt(mad.p_value)})" if mad and mad.mad is not None else "–",
            interval(corr.estimate[top], corr.low[top], corr.high[top])  # type: ignore[index]
            if corr and corr.estimate is not None and corr.low is not None and corr.high is not None else "–"]
    if not with_reference:
        return head + tail
    if matched is not None:
        matched_cells = [matched.reference_n, pct(matched.share(top)), points(*matched.gap(top))]
    elif group.blank and group.first.matched_reference_n is not None:
        matched_cells = [group.first.matched_reference_n, "too few to compare", "–"]
    else:
        matched_cells = ["–", "–", "–"]
    return head + [pct(ref.share(top)) if ref else "–", points(*ref.gap(top)) if ref else "–", *matched_cells,
                   dist.total_variation if dist else None, dist.jensen_shannon if dist else None,
                   f"{fmt(dist.kl)} ({fmt(dist.kl_null_bias)})" if dist else "–"] + tail


def shares_section(metrics: Metrics) -> str:
    """Per instrument attribute (folded): small-multiple bar charts and the cell table; the training columns
    only for the instruments that were compared with the training reference."""

    measured = metrics.reference.measured
    by_attr: dict[tuple[str, str], dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for cell in metrics.cells:
        by_attr[(cell.instrument, cell.attribute)][cell.prompt_key].append(cell)
    if measured:
        title = "Shares against the training images and the matched subset"
        intro = ("Bars: share of the model's images with the simultaneous interval; black diamonds: the same "
                 "instrument on the training images; grey squares: the matched subset (training items whose "
                 "captions reached the model as the prompt's own ids, where at least 20 did). An instrument "
                 "without a training reference is tested against equal shares of its substantive outcomes "
                 "(MAD), and says so. ")
    else:
        title = "Shares against a balanced model (no training reference)"
        intro = ("Bars: share of the model's images with the simultaneous interval. There is no training "
                 "reference, so nothing here is compared with training data: each cell is tested against equal "
                 "shares of its substantive outcomes (MAD). ")
    compared = ("the gaps to the training images and to the matched subset, distances with the G-test"
                if measured else "the MAD test against a balanced model")
    parts = [f"<h2>{esc(title)}</h2><p>{intro}Tables: the most common outcome, {compared} (p with its "
             "Benjamini–Hochberg adjustment across every cell), Miller–Madow entropy, the published-style MAD "
             "with its noise floor at the same n, and the share corrected for instrument error.</p>"]
    groups = headline_first(metrics.id_groups())
    for (instrument, attribute), prompts in by_attr.items():
        shown = [g for g in groups if g.first.key in prompts]
        reference = metrics.reference.counts_for(instrument, attribute)
        headers = ["prompts", "scale", "n", "top outcome", "share [CI]"]
        if reference is not None:
            headers += ["training share", "gap to training", "matched n", "matched share", "gap to matched",
                        "TV", "JS", "KL (null bias)"]
        headers += ["G p (BH)" if reference is not None else "MAD p (BH)", "entropy MM [CI]", "MAD (floor, p)",
                    "corrected share"]
        figure = plot(shares_figure([(short_title(g), prompts[g.first.key]) for g in shown], reference),
                      f"shares {instrument} {attribute}")
        rows = [cell_row(g, c, reference is not None) for g in shown
                for c in sorted(prompts[g.first.key], key=lambda c: c.scale)]
        name = f"{esc(instrument)} · {esc(attribute)}"
        if measured and reference is None:
            name += ' <span class="warn">(no training reference: against a balanced model)</span>'
        parts.append(details(f"{name}: chart", figure) + details(f"{name}: table ({len(rows)} rows)",
                                                                 table(headers, rows, raw_columns=(0,))))
    return "".join(parts)


def exemplars_note(metrics: Metrics) -> str:
    """Why the clusters show no training exemplars, when they show none (no reference, or a table without
    images)."""
    if metrics.clusters is None or metrics.clusters.reference_exemplars:
        return ""
    why = ("the reference is the model folder's table of labels, which holds no images" if metrics.reference.is_table
           else "there is no training reference")
    return f'<p class="note">Label-free clusters: no training exemplars, because {esc(why)}.</p>'


def dose_section(metrics: Metrics) -> str:
    """Share against condition scale: small multiples and slopes (folded)."""

    group_of = metrics.group_of()
    firsts = {g.first.key for g in metrics.id_groups()}
    rows = [r for r in metrics.dose_response if r.slope is not None and r.prompt_key in firsts]
    if not rows:
        return ""
    by_attr: dict[tuple[str, str], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_attr[(r.instrument, r.attribute)][r.prompt_key].append(r)
    figures = "".join(details(f"{esc(i.split('-')[0])} · {esc(a)}: chart",
                              plot(dose_figure([(short_title(group_of[k]), rs) for k, rs in keyed.items()]),
                                   f"dose-response {i} {a}")) for (i, a), keyed in by_attr.items())
    detected = [r for r in rows if r.detected]
    body = table(["prompts", "instrument", "outcome", "shares by scale", "slope per doubling [CI]", "p"],
                 [(prompts_html(group_of[r.prompt_key]), f"{r.instrument.split('-')[0]}.{r.attribute}", r.label,
                   " → ".join(fmt(s) for s in r.shares or []), interval(r.slope, r.slope_low, r.slope_high),
                   r.slope_p) for r in rows], raw_columns=(0,))
    return ("<h2>Guidance dose–response</h2><p>Share of each outcome against condition scale (binomial GLM "
            "on log₂ scale: the slope is the change in log-odds per doubling of the scale). A slope whose "
            f"interval excludes 0 is bias that guidance creates or removes: {len(detected)} of {len(rows)} "
            "here.</p>" + figures + details(f"Slopes ({len(rows)} rows)", body))


def tests_section(metrics: Metrics) -> str:
    """The Benjamini–Hochberg discoveries, once per id group, with the raw per-prompt list folded."""
    bh = metrics.multiple_testing
    found = metrics.discoveries()
    items = "".join(f"<li>{prompts_html(g)} · scale {c.scale:g} · {esc(c.instrument_name)}.{esc(c.attribute)}"
                    f"</li>" for g, c in found) or "<li>none</li>"
    listed = bh.discoveries or []  # absent in metrics of a run with nothing to test
    raw = "".join(f"<li><code>{esc(d)}</code></li>" for d in listed) or "<li>none</li>"
    return (f"<h2>Multiple testing</h2><p>{bh.tests} tests, Benjamini–Hochberg at FDR {fmt(bh.alpha)}: "
            f"{len(found)} discoveries counted once per id group × settings × attribute "
            f"({len(listed)} significant cells).</p>"
            + details(f"Discoveries by id group ({len(found)})", f"<ul>{items}</ul>", is_open=len(found) <= OPEN_ROWS)
            + details(f"Every significant cell ({len(listed)})", f"<ul>{raw}</ul>"))


def build_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the report files for a measured run; returns the HTML path."""
    raw = read_metrics(run)
    metrics = Metrics.from_dict(raw)
    out = Path(out) if out else Path(run) / "report"
    out.mkdir(parents=True, exist_ok=True)
    with RunStore.open(run) as store:
        records = store.images()
        sections = [summary_section(metrics), run_section(metrics, records), tokens_section(metrics),
                    samples_section(store, metrics, records), shares_section(metrics),
                    instruments_section(metrics), dose_section(metrics), clusters_section(store, metrics),
                    exemplars_note(metrics), tests_section(metrics)]
    html_path = out / "report.html"
    write_text_atomic(html_path, page(f"crayonbox lab report: {Path(run).name}", sections, banner(metrics)))
    write_text_atomic(out / "metrics.json", json.dumps(raw, indent=1, ensure_ascii=False) + "\n")
    write_tables(metrics, out)
    return html_path

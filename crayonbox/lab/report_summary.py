"""The report's opening: a written summary generated from the numbers, and the line that says what the shares
were compared with.

Every sentence is built from typed metrics (results_run.Metrics), per id group — prompts that reached the
model as the same ids get the same images from the same seeds, so they are one measurement and at most one
discovery — and it says "cannot tell" wherever the intervals do not separate the alternatives.
"""

from __future__ import annotations

from crayonbox.lab.analysis import MIN_MATCHED
from crayonbox.lab.report_html import details, esc, fmt, pct, pct_interval, points
from crayonbox.lab.results import Cell, Comparison
from crayonbox.lab.results_run import IdGroup, Metrics

HEADLINE_FAMILIES = ("null", "neutral")  # written out in full; other groups are folded
NO_REFERENCE = ("no training reference: the model's images are compared only with each other and with a "
                "balanced model (equal shares), never with the data it was trained on")
LISTED_DISCOVERIES = 12


def no_reference_line(metrics: Metrics) -> str:
    """The loud first line of a run without a training reference, with the reason (plain text)."""
    why = "; ".join(metrics.reference.notes or []) or "no training images were measured"
    return f"{NO_REFERENCE[0].upper() + NO_REFERENCE[1:]}. Why: {why.removeprefix('no training reference: ')}."


def uncovered(metrics: Metrics) -> list[str]:
    """Names of the instruments a run with a training reference could not compare with it."""
    return list(dict.fromkeys(info.name for key, info in metrics.instruments.items()
                              if not metrics.reference.covers(key)))


def compared_with(metrics: Metrics) -> str:
    """What the shares were compared with, in words."""
    ref = metrics.reference
    if not ref.measured:
        return "a balanced model only (no training reference)"
    what = "the training images' labels in the model's reference table" if ref.is_table else \
        "the same instruments on the training images"
    text = f"{what}: {ref.n} images ({ref.source or 'source not recorded'})"
    missing = uncovered(metrics)
    if missing:
        text += f"; {', '.join(missing)}: a balanced model only (no training reference for them)"
    return text


def banner(metrics: Metrics) -> str:
    """The page's first line (escaped HTML): "no training reference" and why when there is none; which
    instruments lack one when the reference is partial; "" when every instrument was compared."""
    ref = metrics.reference
    if not ref.measured:
        return (f"<strong>{esc(no_reference_line(metrics))}</strong> Every comparison on this page is with equal "
                "shares of the substantive outcomes (the MAD test), not with training data.")
    notes = [n for n in ref.notes or [] if not n.startswith("no training reference")]
    if not notes:
        return ""
    source = "the model folder's reference table" if ref.is_table else "the training images"
    return (f"<strong>Training reference: {esc(source)}</strong> ({esc(ref.source)}). "
            + " ".join(f"{esc(n)}." for n in notes))


def verdict(low: float | None, high: float | None) -> str:
    """"more" / "less" when the gap's interval excludes 0, else "cannot tell"."""
    if low is None or high is None:
        return "gap not computed"
    if low > 0:
        return "more"
    if high < 0:
        return "less"
    return "<b>cannot tell</b>"


def against(comparison: Comparison, j: int, what: str) -> str:
    """One outcome against one reference: its share there (n), the gap and the verdict."""
    gap, low, high = comparison.gap(j)
    return (f"{what} {pct(comparison.share(j))} of {comparison.reference_n}: {points(gap, low, high)}, "
            f"{verdict(low, high)}")


def modal(cell: Cell) -> str:
    """The most common outcome with its simultaneous interval, and whether the data can tell it apart."""
    top = cell.share(cell.top)
    text = f"<b>{esc(top.label)}</b> {pct_interval(top.share, top.low, top.high)}"
    if cell.modal_is_clear():
        return text
    rival = next(cell.share(j) for j in cell.ranked()[1:] if top.overlaps(cell.share(j)))
    return (f"{text} (<b>cannot tell</b> from {esc(rival.label)} "
            f"{pct_interval(rival.share, rival.low, rival.high)})")


def balanced(cell: Cell) -> str:
    """The comparison with a balanced model (the only one without training images)."""
    mad = cell.mad
    if mad is None or mad.mad is None:
        return "no substantive outcome to compare with a balanced model"
    decided = "unbalanced (significant after Benjamini–Hochberg)" if cell.test and cell.test.bh_rejected \
        else "<b>cannot tell</b> from balanced"
    return f"balanced model: MAD {fmt(mad.mad)} (floor {fmt(mad.null_mean)}, p {fmt(mad.p_value)}), {decided}"


def cell_sentence(cell: Cell, group: IdGroup, covered: bool = True) -> str:
    """One scale of one attribute of one group; `covered`: its instrument has a training reference."""
    parts = [modal(cell)]
    if cell.vs_reference is not None:
        parts.append(against(cell.vs_reference, cell.top, "training images"))
    else:
        parts.append(balanced(cell))
    if cell.vs_matched is not None:
        parts.append(against(cell.vs_matched, cell.top, "matched subset"))
    elif covered and group.blank and group.first.matched_reference_n is not None:
        parts.append(f"matched subset: {group.first.matched_reference_n} training captions became these ids, "
                     f"fewer than {MIN_MATCHED}: not compared")
    return f"<i>scale {cell.scale:g}</i>: " + "; ".join(parts)


def reaches(group: IdGroup) -> str:
    """"'' = ' ' = '.' reach the model as <s> Ġ </s>"."""
    verb = "reach" if len(group.members) > 1 else "reaches"
    first = group.first
    return (f"<code>{esc(group.text)}</code> {verb} the model as <code>{esc(' '.join(first.tokens))}</code>"
            + (" (the unconditional input itself)" if first.equals_unconditional else ""))


def group_item(group: IdGroup, cells: list[Cell], metrics: Metrics) -> str:
    """A group's list item: its ids, then per instrument attribute one line per scale."""
    by_attr: dict[str, list[Cell]] = {}
    for c in cells:
        by_attr.setdefault(f"{c.instrument_name}.{c.attribute}", []).append(c)
    lines = "".join(
        f"<li>{esc(name)}: " + " · ".join(cell_sentence(c, group, metrics.reference.covers(c.instrument))
                                          for c in sorted(cs, key=lambda c: c.scale))
        + "</li>" for name, cs in by_attr.items())
    return f"<li>{reaches(group)}<ul>{lines}</ul></li>"


def discoveries_paragraph(metrics: Metrics) -> str:
    """Significant differences counted once per id group × settings × attribute, with the first few named."""
    bh = metrics.multiple_testing
    found = metrics.discoveries()
    cells = sum(1 for c in metrics.cells if c.test is not None and c.test.bh_rejected)
    test = "a MAD test against a balanced model"
    if metrics.reference.measured:
        test = ("a G-test against the training reference where its instrument has one, else " + test
                if uncovered(metrics) else "a G-test against the training images")
    text = (f"<p><b>{len(found)} significant difference{'s' if len(found) != 1 else ''}</b> (each cell's "
            f"{test}, Benjamini–Hochberg at FDR {fmt(bh.alpha)} across {bh.tests} cells), counted once per "
            f"id group × sampler settings × attribute among {metrics.tested_units()} distinct measurements; "
            f"{cells} cell{'s' if cells != 1 else ''} before grouping, because prompts with the same ids "
            "share every image.</p>")
    if not found:
        return text
    items = "".join(f"<li><code>{esc(g.text)}</code> · scale {c.scale:g} · {esc(c.instrument_name)}."
                    f"{esc(c.attribute)} (adjusted p {fmt(c.test.bh_adjusted if c.test else None)})</li>"
                    for g, c in found[:LISTED_DISCOVERIES])
    more = f"<li>… and {len(found) - LISTED_DISCOVERIES} more (see Multiple testing)</li>" \
        if len(found) > LISTED_DISCOVERIES else ""
    return text + f"<ul>{items}{more}</ul>"


def summary_section(metrics: Metrics) -> str:
    """The written summary that opens the page."""
    groups = [g for g in metrics.id_groups()]
    cells_of: dict[str, list[Cell]] = {}
    for c in metrics.cells:
        cells_of.setdefault(c.prompt_key, []).append(c)
    measured = [g for g in groups if cells_of.get(g.first.key)]
    scales = sorted({c.scale for c in metrics.cells})
    prompts = sum(len(g.members) for g in measured)
    if metrics.reference.measured:
        per_scale = ("its share in the training reference of n images and the gap in percentage points "
                     "[interval]: \"more\" / \"less\" when the gap's interval excludes 0, \"cannot tell\" when "
                     "intervals overlap or include 0")
        first = ""
    else:
        per_scale = ("the MAD from equal shares with its noise floor and p-value: \"cannot tell\" when intervals "
                     "overlap or the test is not significant")
        first = f'<p class="warn"><strong>{esc(no_reference_line(metrics))}</strong></p>'
    head = (f"<h2>Summary</h2>{first}<p>{metrics.run.images} images of {prompts} prompts, which reached the "
            f"model as {len(measured)} distinct inputs (id groups); condition scales "
            f"{', '.join(f'{s:g}' for s in scales)}. Shares are compared with {esc(compared_with(metrics))}. "
            f"Intervals are {metrics.run.confidence:.0%} simultaneous over each attribute's outcomes; "
            f"per scale: the most common outcome [interval], {per_scale}.</p>")
    headline = [g for g in measured if g.first.family in HEADLINE_FAMILIES] or measured
    rest = [g for g in measured if g not in headline]
    body = "".join(group_item(g, cells_of[g.first.key], metrics) for g in headline)
    text = head + discoveries_paragraph(metrics) + f'<ul class="summary">{body}</ul>'
    if rest:
        folded = "".join(group_item(g, cells_of[g.first.key], metrics) for g in rest)
        text += details(f"The other {len(rest)} prompt groups", f'<ul class="summary">{folded}</ul>')
    return text

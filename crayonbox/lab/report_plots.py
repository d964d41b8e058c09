"""The report's two kinds of plot, drawn with matplotlib's Agg backend (no display needed):

- shares: one bar per outcome and condition scale with its simultaneous interval, and the training
  reference's share (with its Wilson interval) as a black diamond and the matched subset's as a grey
  square: "how far from the data, and is it noise";
- dose–response: each outcome's share against condition scale with its Wilson band — "how much of the bias
  does guidance create".

Both are small multiples (one panel per prompt id group, one figure per instrument attribute): one image
instead of dozens keeps the page small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report is written on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from crayonbox.lab import stats  # noqa: E402

if TYPE_CHECKING:
    from crayonbox.lab.results import Cell
    from crayonbox.lab.results_run import DoseResponse


def plain(text: str) -> str:
    """Text for a matplotlib title: `$` escaped so a prompt such as "$" is not read as mathtext, and
    characters beyond the plot font (emoji) written as escapes instead of empty boxes."""
    return text.encode("latin-1", "backslashreplace").decode("latin-1").replace("$", r"\$")


PANEL = (3.6, 2.1)  # inches per small-multiple panel: at the page's DPI about 230 × 135 px
COLUMNS = 3


def _panels(count: int) -> tuple[Any, list[Any]]:
    """A figure of `count` small-multiple panels, COLUMNS wide; unused axes hidden."""
    rows = max(1, -(-count // COLUMNS))
    columns = min(COLUMNS, max(1, count))
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL[0] * columns, PANEL[1] * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _reference_marker(ax: Any, x: np.ndarray, counts: list[int], marker: str, colour: str, label: str) -> None:
    """A reference's shares with their Wilson intervals."""
    counts_arr = np.asarray(counts)
    n = int(counts_arr.sum())
    q = counts_arr / n
    low, high = stats.wilson_bounds(counts_arr, n, 1.959964)
    ax.errorbar(x, q, yerr=np.vstack([q - low, high - q]).clip(min=0), fmt=marker, color=colour, markersize=3,
                capsize=1.5, elinewidth=0.7, label=f"{label} (n={n})")


def shares_figure(panels: list[tuple[str, list[Cell]]], reference: list[int] | None,
                  reference_label: str = "training images") -> Any:
    """One panel per prompt group: bars per outcome and condition scale with simultaneous intervals, the
    training images' shares (black diamonds) and, where measured, the matched subset's (grey squares)."""
    fig, axes = _panels(len(panels))
    for panel, (ax, (title, cells)) in enumerate(zip(axes, panels, strict=True)):
        cells = sorted(cells, key=lambda c: c.scale)
        matched = cells[0].vs_matched
        x = np.arange(len(cells[0].labels))
        slots = len(cells) + (1 if reference else 0) + (1 if matched else 0)
        width = 0.8 / slots
        for i, cell in enumerate(cells):
            share = np.asarray(cell.shares)
            band = cell.simultaneous
            low = np.asarray(band.low if band.low is not None else share)
            high = np.asarray(band.high if band.high is not None else share)
            ax.bar(x + i * width, share, width, label=f"scale {cell.scale:g} (n={cell.n})",
                   yerr=np.vstack([share - low, high - share]).clip(min=0), capsize=1.5,
                   error_kw={"elinewidth": 0.6})
        slot = len(cells)
        if reference:
            _reference_marker(ax, x + slot * width, reference, "D", "black", reference_label)
            slot += 1
        if matched:
            _reference_marker(ax, x + slot * width, matched.reference_counts, "s", "grey", "matched subset")
        ax.set_xticks(x + width * (slots - 1) / 2, cells[0].labels, fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
        ax.set_ylim(0, 1)
        ax.set_title(plain(title), fontsize=7)
        if panel == 0:  # the same scales and references in every panel: one legend is enough
            ax.legend(fontsize=5, frameon=False)
    fig.tight_layout()
    return fig


def dose_figure(panels: list[tuple[str, list[DoseResponse]]]) -> Any:
    """One panel per prompt group: each outcome's share against condition scale with its Wilson band (log₂
    axis when all scales are positive)."""
    fig, axes = _panels(len(panels))
    for ax, (title, rows) in zip(axes, panels, strict=True):
        for row in rows:
            if row.scales is None:
                continue
            scales = np.asarray(row.scales, dtype=float)
            odds = row.odds_ratio if row.odds_ratio is not None else float("nan")
            line = ax.plot(scales, row.shares, marker="o", markersize=2,
                           label=f"{plain(row.label)} (OR {odds:.2f})")
            ax.fill_between(scales, row.share_low, row.share_high, alpha=0.15, color=line[0].get_color())
        scales = sorted({s for r in rows for s in (r.scales or [])})
        if scales and min(scales) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(scales, [f"{s:g}" for s in scales], fontsize=6)
        ax.minorticks_off()
        ax.tick_params(axis="y", labelsize=6)
        ax.set_ylim(0, 1)
        ax.set_title(plain(title), fontsize=7)
        ax.legend(fontsize=5, frameon=False)
    fig.tight_layout()
    return fig

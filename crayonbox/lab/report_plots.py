"""The report's two kinds of plot, drawn with matplotlib's Agg backend (no display needed):

- shares: one bar per outcome and condition scale with its simultaneous interval, and the training
  reference's share (with its Wilson interval) as a black diamond: "how far from the data, and is it
  noise";
- dose–response: each outcome's share against condition scale with its Wilson band — "how much of the bias
  does guidance create".
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report is written on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from crayonbox.lab import stats  # noqa: E402


def plain(text: str) -> str:
    """Text for a matplotlib title: `$` escaped so a prompt such as "$" is not read as mathtext, and
    characters beyond the plot font (emoji) written as escapes instead of empty boxes."""
    return text.encode("latin-1", "backslashreplace").decode("latin-1").replace("$", r"\$")


def shares_figure(cells: list[dict[str, Any]], reference: list[int] | None, title: str) -> Any:
    """Bars of one prompt × attribute across its condition scales, against the reference."""
    cells = sorted(cells, key=lambda c: c["settings"]["condition_scale"])
    labels = cells[0]["labels"]
    x = np.arange(len(labels))
    width = 0.8 / (len(cells) + (1 if reference else 0))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * len(labels) + 1.5), 2.8))
    for i, cell in enumerate(cells):
        share = np.asarray(cell["shares"])
        sim = cell.get("simultaneous", {})
        low, high = np.asarray(sim.get("low", share)), np.asarray(sim.get("high", share))
        name = f"scale {cell['settings']['condition_scale']:g} (n={cell['n']})"
        error = np.vstack([share - low, high - share]).clip(min=0)
        ax.bar(x + i * width, share, width, label=name, yerr=error, capsize=2, error_kw={"elinewidth": 0.8})
    if reference:
        counts = np.asarray(reference)
        n = int(counts.sum())
        q = counts / n
        low, high = stats.wilson_bounds(counts, n, 1.959964)
        ax.errorbar(x + len(cells) * width, q, yerr=np.vstack([q - low, high - q]).clip(min=0), fmt="D",
                    color="black", markersize=4, capsize=2, label=f"training images (n={n})")
    ax.set_xticks(x + width * (len(cells) - (0 if reference else 1)) / 2, labels, rotation=0, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of images")
    ax.set_title(plain(title), fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return fig


def dose_figure(rows: list[dict[str, Any]], title: str) -> Any:
    """Share of each label against condition scale (log₂ axis when all scales are positive)."""
    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    for row in rows:
        if "scales" not in row:
            continue
        scales = np.asarray(row["scales"], dtype=float)
        line = ax.plot(scales, row["shares"], marker="o", markersize=3,
                       label=f"{row['label']} (OR/doubling {row.get('odds_ratio', float('nan')):.2f})")
        ax.fill_between(scales, row["share_low"], row["share_high"], alpha=0.15, color=line[0].get_color())
    scales = sorted({s for r in rows for s in r.get("scales", [])})
    if scales and min(scales) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.minorticks_off()
    ax.set_xlabel("condition scale")
    ax.set_ylabel("share of images")
    ax.set_ylim(0, 1)
    ax.set_title(plain(title), fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return fig

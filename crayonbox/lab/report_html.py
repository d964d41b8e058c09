"""HTML building blocks for the lab report: escaping, tables, embedded images and plots, the page shell.

The page must be safe to open whatever a prompt contained (`<script>` included) and must work offline, so:
every piece of text goes through `esc`, images and plots are inlined as base64 PNG `data:` URIs, the CSS is
inline, and there is no JavaScript at all.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
from PIL import Image

PLOT_DPI = 64  # modest: the plots are read for shape and intervals, and the page stays a few hundred kB

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap;
              word-break: break-all; }
img.pixel { image-rendering: pixelated; } .grid { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; max-width: 420px; }
.warn { color: #a40; } .ok { color: #060; } .note { color: #555; font-size: 13px; }
.flag { background: #fff3cd; } .banner { background: #fff3cd; border: 1px solid #e0c060; padding: .5em .8em; }
details { margin: .4em 0; } summary { cursor: pointer; font-weight: 600; } details > :not(summary) { margin-left: 1em; }
ul.summary li { margin: .25em 0; } ul.summary ul { margin: .15em 0 .4em; padding-left: 1.2em; }
"""


def esc(value: Any) -> str:
    """Text made safe for HTML (quotes included, so it is safe inside attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def show_prompt(prompt: str) -> str:
    """A prompt as readers should see it: quoted Python repr, so "" and " " differ visibly; escaped."""
    return f"<code>{esc(repr(prompt))}</code>"


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table cell ("–" for missing, "inf" for infinity)."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:
            return "–"
        if abs(x) == float("inf"):
            return "inf"
        if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e5):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}f}"
    return esc(x)


def interval(estimate: float | None, low: float | None, high: float | None) -> str:
    """"0.412 [0.361, 0.465]"."""
    return f"{fmt(estimate)} [{fmt(low)}, {fmt(high)}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], raw_columns: Sequence[int] = (),
          row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are escaped and formatted unless their column index is in `raw_columns` (for
    cells the caller already built from escaped pieces)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, value in enumerate(row):
            if i in raw_columns:
                cells.append(f"<td>{value}</td>")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                cells.append(f'<td class="num">{fmt(value)}</td>')
            else:
                cells.append(f"<td>{fmt(value)}</td>")
        cls = f' class="{esc(row_classes[r])}"' if row_classes and row_classes[r] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_data_uri(image: Image.Image, palette: bool = False) -> str:
    """A PIL image as a base64 PNG data: URI; `palette` stores it with 256 adaptive colours, a third of the
    bytes for plots and thumbnails at no visible cost (the instruments measure the originals, not these)."""
    buf = io.BytesIO()
    if palette:
        image = image.convert("RGB").quantize(256)
    image.save(buf, format="PNG", optimize=palette)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(image: Image.Image, alt: str, width: int | None = None, pixel: bool = True, palette: bool = False) -> str:
    """An inline <img> (nearest-neighbour scaling for small generated images)."""
    w = f' width="{int(width)}"' if width else ""
    cls = ' class="pixel"' if pixel else ""
    return f'<img{cls} src="{png_data_uri(image, palette)}" alt="{esc(alt)}"{w}>'


def figure_uri(fig: Any) -> str:
    """A matplotlib figure as a palette PNG data: URI (the figure is closed)."""

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    plt.close(fig)
    return png_data_uri(Image.open(buf), palette=True)


def plot(fig: Any, alt: str, caption: str = "") -> str:
    """A matplotlib figure as an embedded <figure> with an escaped caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{figure_uri(fig)}" alt="{esc(alt)}">{cap}</figure>'


def details(summary: str, body: str, is_open: bool = False) -> str:
    """A collapsible section (HTML's own <details>, no JavaScript); `summary` is already-escaped HTML."""
    return f"<details{' open' if is_open else ''}><summary>{summary}</summary>{body}</details>"


def pct(x: float | None, digits: int = 1) -> str:
    """0.4123 → "41.2 %" ("–" for None)."""
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def pct_interval(estimate: float | None, low: float | None, high: float | None) -> str:
    """"41.2 % [36.1, 46.5]"."""
    return f"{pct(estimate)} [{pct(low)[:-2]}, {pct(high)[:-2]}]" if low is not None else pct(estimate)


def points(gap: float | None, low: float | None, high: float | None) -> str:
    """A difference of shares in percentage points with its interval: "+22.5 pt [+5.1, +40.0]"."""
    if gap is None:
        return "–"
    bounds = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and high is not None else ""
    return f"{100 * gap:+.1f} pt{bounds}"


def page(title: str, sections: Sequence[str], banner: str = "") -> str:
    """The whole self-contained document; `banner` (escaped HTML) is the first thing on it."""
    top = f'<p class="banner">{banner}</p>' if banner else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{top}<h1>{esc(title)}</h1>{''.join(sections)}</body></html>\n")

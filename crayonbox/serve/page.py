"""The web page: static/index.html with one input per sampler knob, generated from `SamplingSettings`.

The knobs' labels, bounds and help come from the fields' metadata (crayonbox/sampler_settings.py), so a new
knob appears on the page without touching the HTML or app.js (which reads every `[data-knob]` input)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from crayonbox.sampler_settings import sampler_fields, sampler_type

STATIC = Path(__file__).parent / "static"
KNOBS_SLOT = "<!-- sampler knobs -->"
ABOUT_SLOT = "<!-- what the model draws -->"


def knob_inputs() -> str:
    """One labelled <input> per knob: its name as the label, its help as the tooltip, its request bounds as
    min/max (strict bounds are left to the server's check), an integer step for integer knobs."""
    rows = []
    for f in sampler_fields():
        bounds = f.metadata["bounds"]
        low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
        step = "1" if sampler_type(f) is int else "any"
        attrs = [f'id="{f.name}"', 'type="number"', f'step="{step}"', 'placeholder="model default"',
                 f'data-knob="{"int" if sampler_type(f) is int else "float"}"']
        attrs += [f'min="{low}"'] if low is not None else []
        attrs += [f'max="{high}"'] if high is not None else []
        label = f.metadata["label"] or f.name.replace("_", " ").capitalize()
        rows.append(f'        <label title="{escape(f.metadata["help"])}">{escape(label)} '
                    f'<input {" ".join(attrs)}></label>')
    return "\n".join(rows)


def render_page(about: str) -> str:
    """index.html with the knob inputs and `about` (one sentence on what the model draws, escaped) in their
    slots."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    for slot in (KNOBS_SLOT, ABOUT_SLOT):
        if slot not in html:
            raise RuntimeError(f"{STATIC / 'index.html'} lost its {slot} slot")
    return html.replace(KNOBS_SLOT, knob_inputs().strip()).replace(
        ABOUT_SLOT, f'<p class="about" id="about">{escape(about)}</p>')

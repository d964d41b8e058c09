"""The report: self-contained, offline, escaped; plus JSON/CSV that spreadsheets cannot be tricked by. And the
model card, which takes its numbers from a run of the same weights."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from crayonbox.errors import CrayonboxError
from crayonbox.lab.card import build_card, write_card
from crayonbox.lab.measure import MeasureConfig, measure_run
from crayonbox.lab.probe import ProbeConfig, run_probe
from crayonbox.lab.report import build_report

HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def hostile_run(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    prompts = folder / "prompts.txt"
    prompts.write_text(f"{HOSTILE}\n=HYPERLINK(\"http://evil\")\n$\n", encoding="utf-8")
    run = folder / "run"
    run_probe(ProbeConfig(model=tiny_model_dir, prompts=[f"null,{prompts}"], n=3, condition_scales=(1, 10),
                          threads=1), run, progress=False)
    measure_run(run, MeasureConfig(use_reference=False, validation_n=20, clusters=3), progress=False)
    build_report(run, run / "report")
    return run


class _Elements(HTMLParser):
    """Every start tag and its attributes, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def test_report_escapes_prompts_and_works_offline(hostile_run, tmp_path):
    page = (hostile_run / "report" / "report.html").read_text(encoding="utf-8")
    parser = _Elements()
    parser.feed(page)
    tags = [tag for tag, _ in parser.elements]
    assert "script" not in tags and "img" in tags
    assert not [a for _, attrs in parser.elements for a in attrs if a.startswith("on")]  # no event handlers
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    # Offline: every image is inline, nothing is fetched from anywhere.
    sources = [attrs.get("src") or attrs.get("href") for _, attrs in parser.elements
               if "src" in attrs or "href" in attrs]
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<code>&lt;unconditional ids&gt;</code>" in page and "What each prompt really became" in page


def test_report_writes_json_and_injection_safe_csv(hostile_run, tmp_path):
    out = hostile_run / "report"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["run"]["images"] == (10 + 3) * 2 * 3
    with open(out / "prompts.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    prompts = [r["prompt"] for r in rows]
    assert HOSTILE in prompts  # CSV keeps the text (it is data), but…
    assert "'=HYPERLINK(\"http://evil\")" in prompts and "=HYPERLINK(\"http://evil\")" not in prompts
    with open(out / "cells.csv", encoding="utf-8", newline="") as f:
        cells = list(csv.DictReader(f))
    assert {c["outcome"] for c in cells} >= {"none", "unclear", "c00"}
    assert all(0 <= float(c["share"]) <= 1 for c in cells)


def test_card_reports_measured_numbers_for_the_same_weights(hostile_run, tiny_model_dir, tmp_path):
    card = build_card(tiny_model_dir, hostile_run)
    assert "Not measured yet" not in card and "## Measured behaviour (crayonbox lab)" in card
    assert "`<unconditional ids>` → `<s> </s>` (the unconditional input itself)" in card
    # One line per id group: the blank prompt and the punctuation that normalises away are one input.
    assert re.search(r"^- `'' = ' ' = .*'\?'` → `<s> Ġ </s>`$", card, re.M)
    assert "`''` → `<s> Ġ </s>`" not in card
    assert re.search(r"\| '' = ' ' = .* \| 1 \| skin_tone\.skin_tone \| \w+ \| \d+\.\d % \[", card)
    assert "accuracy" in card and "held-out renders" in card
    path = write_card(tiny_model_dir, hostile_run, tmp_path / "CARD.md")
    assert path.read_text(encoding="utf-8") == card


def test_card_without_a_run_says_how_to_measure(tiny_model_dir, hostile_run, tmp_path):
    from tests.conftest import build_tiny_model

    card = build_card(tiny_model_dir)
    assert "Not measured yet" in card and "crayonbox lab probe --model" in card
    other = build_tiny_model(tmp_path / "other", seed=2)
    with pytest.raises(CrayonboxError, match="measured other weights"):
        build_card(other, hostile_run)


def _groups_by_ids(metrics):
    """prompt key → a name shared by every prompt with the same ids (computed here, not by the lab)."""
    return {p["key"]: json.dumps(p["ids"]) for p in metrics["prompts"]}


def test_report_opens_with_a_summary_counting_one_discovery_per_id_group(hostile_run):
    page = (hostile_run / "report" / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((hostile_run / "report" / "metrics.json").read_text(encoding="utf-8"))
    # The written summary is the first section, before the run table and the token table.
    assert page.index("<h2>Summary</h2>") < page.index("What each prompt really became") < page.index("Samples")
    summary = page[page.index("<h2>Summary</h2>"):page.index("What each prompt really became")]
    text = html.unescape(summary)  # quotes are escaped in the page
    assert re.search(r"<code>'' = ' ' = [^<]*'\?'</code> reach the model as <code><s> Ġ </s></code>", text)
    # Discoveries: every significant cell, but identical ids × settings × attribute counted once.
    by_ids = _groups_by_ids(metrics)
    rejected = [c for c in metrics["cells"] if c.get("test", {}).get("bh_rejected")]
    units = {(by_ids[c["prompt_key"]], json.dumps(c["settings"], sort_keys=True), c["instrument"],
              c["attribute"]) for c in rejected}
    assert sum(key == by_ids["normalised:"] for key in by_ids.values()) == 8  # '', ' ' and 6 punctuation marks
    assert f"<b>{len(units)} significant difference" in summary
    assert f"{len(rejected)} cell{'s' if len(rejected) != 1 else ''} before grouping" in summary
    assert len(units) < len(rejected) or not rejected
    # Each scale of each attribute has its modal outcome with an interval, compared with a balanced model.
    blank = next(c for c in metrics["cells"] if c["prompt_key"] == "normalised:" and c["settings"]["condition_scale"]
                 == 1 and c["instrument_name"] == "skin_tone")
    top = max(range(len(blank["labels"])), key=lambda j: blank["counts"][j])
    low, high = blank["simultaneous"]["low"][top], blank["simultaneous"]["high"][top]
    share = f"<b>{blank['labels'][top]}</b> {100 * blank['shares'][top]:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"
    assert share in text


def test_summary_says_cannot_tell_when_intervals_overlap():
    from crayonbox.lab.analysis import analyse_cell
    from crayonbox.lab.report_summary import modal, verdict

    def cell(counts):
        return analyse_cell("normalised:x", {"condition_scale": 1.0}, "i", "i", "a", np.array(counts),
                            ("a", "b", "c"), None, None, None, 0.95, 0)

    close, clear = cell([6, 5, 1]), cell([90, 5, 5])
    assert not close.modal_is_clear() and "<b>cannot tell</b> from b" in modal(close)
    assert clear.modal_is_clear() and "cannot tell" not in modal(clear)
    assert clear.share(0).low > clear.share(1).high  # the numbers behind "clear"
    assert verdict(0.02, 0.30) == "more" and verdict(-0.3, -0.01) == "less"
    assert "cannot tell" in verdict(-0.1, 0.2) and verdict(None, 0.2) == "gap not computed"


def test_no_reference_is_said_first_and_never_called_training(hostile_run):
    page = (hostile_run / "report" / "report.html").read_text(encoding="utf-8")
    body = page[page.index("<body>") + len("<body>"):]
    assert body.startswith('<p class="banner"><strong>No training reference: the model&#x27;s images are compared '
                           "only with each other and with a balanced model (equal shares), never with the data it "
                           "was trained on. Why: --no-reference was given.</strong>")
    assert "against the training images" not in page and "training share" not in page
    assert "<h2>Shares against a balanced model (no training reference)</h2>" in page


def test_report_is_compact(hostile_run):
    from crayonbox.lab.report_images import THUMB_IMAGES

    page = (hostile_run / "report" / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((hostile_run / "report" / "metrics.json").read_text(encoding="utf-8"))
    parser = _Elements()
    parser.feed(page)
    images = [attrs for tag, attrs in parser.elements if tag == "img"]
    samples = [a for a in images if a["alt"].startswith("samples ")]
    assert len(samples) == len(set(_groups_by_ids(metrics).values()))  # one strip per id group, not per prompt
    for attrs in samples:
        strip = Image.open(io.BytesIO(base64.b64decode(attrs["src"].partition(",")[2])))
        assert strip.size == (min(3, THUMB_IMAGES) * 16, 2 * 16)  # n=3 seeds × 2 scales of 16-px images
    attributes = {(c["instrument"], c["attribute"]) for c in metrics["cells"]}
    assert sum(a["alt"].startswith("shares ") for a in images) == len(attributes)  # small multiples
    assert page.count("<details") >= 2 * len(attributes) and "<script" not in page.lower()
    assert len(page.encode()) < 250_000

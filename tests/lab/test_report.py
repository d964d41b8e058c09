"""The report: self-contained, offline, escaped; plus JSON/CSV that spreadsheets cannot be tricked by. And the
model card, which takes its numbers from a run of the same weights."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser

import pytest

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
    assert "`''` → `<s> Ġ </s>`" in card
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

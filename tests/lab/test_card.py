"""Typed metrics (results.py, results_run.py) read back exactly what analysis wrote; the report shows the
matched training subset beside blank-prompt cells; report and card say what the shares were compared with."""

from __future__ import annotations

import json
import shutil

import pytest

from crayonbox.hub import CARD_HEADER
from crayonbox.lab import analysis
from crayonbox.lab.card import build_card
from crayonbox.lab.measure import MeasureConfig, measure_run, read_metrics
from crayonbox.lab.report import build_report
from crayonbox.lab.report_html import pct, points
from crayonbox.lab.results_run import Metrics

BLANK = "normalised:"  # the blank prompt's key


def test_typed_metrics_round_trip_and_read_the_stored_numbers(measured_run):
    raw = read_metrics(measured_run)
    metrics = Metrics.from_dict(raw)
    assert json.dumps(metrics.to_dict()) == json.dumps(raw)  # same keys, same order, same numbers
    cell = next(c for c in metrics.cells if c.instrument_name == "skin_tone" and c.prompt_key == BLANK)
    stored = next(c for c in raw["cells"] if c["instrument_name"] == "skin_tone" and c["prompt_key"] == BLANK
                  and c["settings"] == cell.settings)
    j = cell.top
    assert cell.counts[j] == max(stored["counts"])
    assert (cell.share(j).low, cell.share(j).high) == (stored["simultaneous"]["low"][j],
                                                       stored["simultaneous"]["high"][j])
    gaps = stored["vs_reference"]["gaps"]
    assert cell.vs_reference.gap(j) == (gaps["gap"][j], gaps["gap_low"][j], gaps["gap_high"][j])
    assert cell.vs_reference.share(j) == stored["vs_reference"]["reference_counts"][j] / 40
    assert cell.vs_reference.distance.g_test_p == stored["vs_reference"]["distance"]["g_test"]["p_value"]
    assert cell.test.bh_adjusted == stored["test"]["bh_adjusted"]
    # Id groups: '', ' ' and the six punctuation marks are one group; discoveries count each group once.
    group = metrics.group_of()[BLANK]
    assert len(group.members) == 8 and group.blank and group.first.tokens == ["<s>", "Ġ", "</s>"]
    rejected = [c for c in raw["cells"] if c["test"]["bh_rejected"]]
    ids = {p["key"]: json.dumps(p["ids"]) for p in raw["prompts"]}
    units = {(ids[c["prompt_key"]], c["settings"]["condition_scale"], c["instrument"], c["attribute"])
             for c in rejected}
    assert len(metrics.discoveries()) == len(units)
    assert metrics.tested_units() == len({(ids[c["prompt_key"]], c["settings"]["condition_scale"], c["instrument"],
                                           c["attribute"]) for c in raw["cells"]})


@pytest.fixture(scope="module")
def matched_run(measured_run, tiny_world, tmp_path_factory):
    """The measured run re-measured with the matched-subset threshold lowered to the blank prompt's matched
    training items (the tiny world has only a few captions that normalise to nothing)."""
    matched_n = next(p["matched_reference_n"] for p in read_metrics(measured_run)["prompts"] if p["key"] == BLANK)
    assert matched_n > 0
    run = tmp_path_factory.mktemp("matched") / "run"
    shutil.copytree(measured_run, run)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(analysis, "MIN_MATCHED", matched_n)
        measure_run(run, MeasureConfig(reference=tiny_world, validation=tiny_world, validation_n=40, clusters=3),
                    progress=False)
    build_report(run, run / "report")
    return run


def test_report_shows_the_matched_subset_beside_every_blank_prompt_cell(matched_run, measured_run):
    metrics = Metrics.from_dict(read_metrics(matched_run))
    page = (matched_run / "report" / "report.html").read_text(encoding="utf-8")
    blank = [c for c in metrics.cells if c.prompt_key == BLANK]
    assert blank and all(c.vs_matched is not None for c in blank)
    for c in blank:
        m, j = c.vs_matched, c.top
        assert m.reference_n == metrics.group_of()[BLANK].first.matched_reference_n
        share, gap = pct(m.share(j)), points(*m.gap(j))
        assert f'<td class="num">{m.reference_n}</td><td>{share}</td><td>{gap}</td>' in page  # shares table
        assert f"matched subset {share} of {m.reference_n}: {gap}" in page  # written summary
    # The training comparison itself is unchanged by adding the matched one.
    before = {(c["prompt_key"], json.dumps(c["settings"]), c["instrument"], c["attribute"]): c["vs_reference"]
              for c in read_metrics(measured_run)["cells"]}
    assert all(before[(c.prompt_key, json.dumps(c.settings), c.instrument, c.attribute)] == c.vs_reference.to_dict()
               for c in metrics.cells)
    with open(matched_run / "report" / "cells.csv", encoding="utf-8") as f:
        assert "matched_n,matched_share,matched_gap" in f.readline()


def test_card_and_report_name_the_training_comparison(measured_run, tiny_model_dir):
    card = build_card(tiny_model_dir, measured_run)
    assert "No training images were measured" not in card
    assert "| share [CI] | training share | matched share | differs | n |" in card
    metrics = Metrics.from_dict(read_metrics(measured_run))
    cell = next(c for c in metrics.cells if c.prompt_key == BLANK and c.instrument_name == "skin_tone"
                and c.scale == 1)
    group = metrics.group_of()[BLANK]
    assert f"| {group.text} | 1 | skin_tone.skin_tone | {cell.labels[cell.top]} |" in card
    assert f"| {pct(cell.vs_reference.share(cell.top))} | " in card
    build_report(measured_run, measured_run.parent / "report")
    page = (measured_run.parent / "report" / "report.html").read_text(encoding="utf-8")
    assert '<p class="banner">' not in page
    assert "<h2>Shares against the training images and the matched subset</h2>" in page


def test_card_without_training_images_says_so_first(measured_run, tiny_world, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(measured_run, run)
    measure_run(run, MeasureConfig(use_reference=False, validation=tiny_world, validation_n=40, clusters=3),
                progress=False)
    card = build_card(tiny_model_dir, run)
    assert card.startswith(CARD_HEADER)  # the Hub's YAML header, then the card
    lines = card.removeprefix(CARD_HEADER).lstrip("\n").splitlines()
    assert lines[0].startswith("# Model card") and lines[2].startswith(
        "> **No training reference: the model's images are compared only with each other and with a balanced "
        "model (equal shares), never with the data it was trained on. Why: --no-reference was given.**")
    assert "training share" not in card and "against the training images" not in card
    assert "| share [CI] | vs a balanced model | differs | n |" in card

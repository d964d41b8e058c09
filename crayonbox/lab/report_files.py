"""The report's CSV files, from typed metrics: cells.csv, dose_response.csv, prompts.csv.

A text cell starting with = + - @ (or a tab / carriage return) gets a leading apostrophe, so a prompt such as
`=HYPERLINK(…)` stays text when the file is opened in a spreadsheet.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crayonbox.config import atomic_write
from crayonbox.lab.results_run import Metrics
from crayonbox.sampler_settings import sampler_names

CELL_HEADERS = ["prompt", "input_mode", *sampler_names(), "instrument",
                "attribute", "outcome", "count", "n", "share", "low", "high", "training_share", "gap", "gap_low",
                "gap_high", "ratio", "corrected", "corrected_low", "corrected_high", "bh_adjusted_p",
                "matched_n", "matched_share", "matched_gap", "matched_gap_low", "matched_gap_high"]


def csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas: a text cell starting with = + - @ gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(path: Path, headers: list[str], rows: Iterable[list[Any]]) -> None:
    """Write a CSV atomically, with spreadsheet formulas neutralised."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows([csv_safe(v) for v in row] for row in rows)


def at(values: list[Any] | None, j: int) -> Any:
    """Entry j of a per-outcome list (None when the statistic is absent or failed)."""
    return values[j] if values is not None else None


def cell_csv_rows(metrics: Metrics) -> Iterable[list[Any]]:
    """One CSV row per cell and outcome."""
    for c in metrics.cells:
        mode, _, prompt = c.prompt_key.partition(":")
        band, corr, s = c.simultaneous, c.corrected, c.settings
        gaps = c.vs_reference.gaps if c.vs_reference else None
        matched = c.vs_matched
        for j, label in enumerate(c.labels):
            yield [prompt, mode, *(s[name] for name in sampler_names()), c.instrument,
                   c.attribute, label, c.counts[j], c.n, c.shares[j], at(band.low, j), at(band.high, j),
                   *(at(getattr(gaps, name), j) if gaps else None
                     for name in ("reference", "gap", "gap_low", "gap_high", "ratio")),
                   *(at(getattr(corr, name), j) if corr else None for name in ("estimate", "low", "high")),
                   c.test.bh_adjusted if c.test else None,
                   matched.reference_n if matched else None, matched.share(j) if matched else None,
                   *(matched.gap(j) if matched else (None, None, None))]


def write_tables(metrics: Metrics, out: Path) -> None:
    """cells.csv, dose_response.csv and prompts.csv in `out`."""
    write_csv(out / "cells.csv", CELL_HEADERS, cell_csv_rows(metrics))
    write_csv(out / "dose_response.csv", ["prompt_key", "instrument", "attribute", "outcome", "scales",
                                          "shares", "slope", "slope_low", "slope_high", "slope_p",
                                          "odds_ratio"],
              ([r.prompt_key, r.instrument, r.attribute, r.label, json.dumps(r.scales), json.dumps(r.shares),
                r.slope, r.slope_low, r.slope_high, r.slope_p, r.odds_ratio] for r in metrics.dose_response))
    write_csv(out / "prompts.csv", ["prompt", "input_mode", "family", "normalized", "ids", "tokens",
                                    "id_group", "equals_unconditional", "notes"],
              ([p.prompt, p.input_mode, p.family, p.normalized, json.dumps(p.ids), " ".join(p.tokens),
                p.id_group, p.equals_unconditional, " | ".join(p.notes)] for p in metrics.prompts))

"""From labels to numbers: per prompt × sampler settings × instrument attribute ("a cell"), the shares with
intervals, the comparison with the training images, diversity, the published-style score with its noise floor,
the share corrected for instrument error; then Benjamini–Hochberg across all cells and the guidance
dose–response. Every number comes from crayonbox.lab.stats; this module only decides what is compared with
what. The results are typed (results.Cell, results_run.Metrics); `analyse` returns their `to_dict()`, the
layout of metrics.json documented in results_run.py, and the report and card read them back with
`Metrics.from_dict`.

Choices, each stated in the report:
- "none" and "unclear" are categories like any other (never dropped), so n is always every image;
- intervals on all K shares of a cell are simultaneous (Goodman), and so are the gaps to the reference;
- the reference is the training images measured by the same instrument; where at least MIN_MATCHED training
  captions reached the model as the prompt's own ids, that matched subset is compared too;
- the MAD score (DALL-Eval / HEIM style) uses only substantive categories (not none/unclear/mixed), as
  they do;
- instrument correction inverts the validation confusion matrix; a class with no validation items gets an
  identity row (assumed read correctly) and is listed, and "unclear" is kept as its own class, so unclear
  readings that validation attributes to a real class are moved back to it;
- the multiple-testing family is every cell: its G-test against the reference (or, without one, its MAD test
  against a balanced model).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from crayonbox.errors import CrayonboxError
from crayonbox.lab import stats
from crayonbox.lab.instruments.base import NONE, UNCLEAR
from crayonbox.lab.reference import ReferenceItem
from crayonbox.lab.results import (
    MATCHED,
    TRAINING,
    Band,
    Cell,
    Comparison,
    Correction,
    Distance,
    Entropy,
    Gaps,
    Interval,
    Mad,
    Test,
)
from crayonbox.lab.results_run import (
    Clusters,
    DoseResponse,
    Instrument,
    Metrics,
    MultipleTesting,
    PromptRecord,
    ReferenceInfo,
    RunInfo,
)
from crayonbox.lab.store import RunStore

MIN_MATCHED = 20  # training images needed before a matched-caption comparison is made
NOT_SUBSTANTIVE = {NONE, UNCLEAR, "mixed"}
BOOTSTRAP_DRAWS = 1000


@dataclass
class Measured:
    """Everything the statistics need, keyed by instrument key (name + version)."""

    instruments: dict[str, dict[str, Any]]  # key → {"name", "outcomes": {attr: labels}, "validation": …}
    run_labels: dict[str, dict[str, dict[str, str]]]  # key → sha256 → {attribute: label}
    reference: list[ReferenceItem] = field(default_factory=list)
    reference_labels: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    reference_source: str | None = None
    reference_kind: str | None = None  # results_run.IMAGES, results_run.TABLE, or None (no reference)
    reference_notes: list[str] = field(default_factory=list)  # why none, or which instruments lack one
    clusters: dict[str, Any] = field(default_factory=dict)  # model, exemplars


def _safe(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run a statistic; a CrayonboxError (e.g. a test with one category) becomes {"error": message}."""
    try:
        return fn(*args, **kwargs).to_dict()
    except CrayonboxError as e:
        return {"error": str(e)}


def counts_of(labels: list[str], outcomes: tuple[str, ...]) -> np.ndarray:
    """Counts per outcome, in outcome order; a label outside the outcomes is an instrument bug: it raises."""
    tally = Counter(labels)
    unknown = set(tally) - set(outcomes)
    if unknown:
        raise CrayonboxError(f"instrument answered {sorted(unknown)}, which are not among its outcomes "
                             f"{outcomes}")
    return np.array([tally[o] for o in outcomes], dtype=np.int64)


def square_confusion(confusion: dict[str, Any], outcomes: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Validation counts as a square matrix over `outcomes`, empty rows replaced by identity (listed)."""
    index = {label: i for i, label in enumerate(confusion["labels"])}
    raw = np.asarray(confusion["counts"], dtype=np.int64)
    k = len(outcomes)
    matrix = np.zeros((k, k), dtype=np.int64)
    for i, a in enumerate(outcomes):
        for j, b in enumerate(outcomes):
            if a in index and b in index:
                matrix[i, j] = raw[index[a], index[b]]
    assumed = [outcomes[i] for i in range(k) if matrix[i].sum() == 0]
    for i in range(k):
        if matrix[i].sum() == 0:
            matrix[i, i] = 1
    return matrix, assumed


def analyse_cell(prompt_key: str, settings: dict[str, Any], instrument: str, instrument_name: str,
                 attribute: str, counts: np.ndarray, outcomes: tuple[str, ...], reference: np.ndarray | None,
                 matched: np.ndarray | None, confusion: dict[str, Any] | None, confidence: float,
                 seed: int) -> Cell:
    """Every statistic of one cell (see module docstring)."""
    n = int(counts.sum())
    substantive = [i for i, o in enumerate(outcomes) if o not in NOT_SUBSTANTIVE]
    sub_counts = counts[substantive]
    mad = None
    if len(substantive) >= 2 and sub_counts.sum() > 0:
        mad = Mad.from_dict({"labels": [outcomes[i] for i in substantive],
                             **_safe(stats.mad_test, sub_counts, seed=seed)})
    comparisons: dict[str, Comparison | None] = {}
    for against, ref in ((TRAINING, reference), (MATCHED, matched)):
        comparisons[against] = None
        if ref is not None and ref.sum() > 0:
            r = stats.Reference.from_counts(ref)
            comparisons[against] = Comparison(
                against, ref.tolist(), int(ref.sum()),
                Gaps.from_dict(_safe(stats.reference_gaps, counts, r, confidence, simultaneous=True)),
                Distance.from_dict(_safe(stats.distance_to_reference, counts, r)))
    corrected = None
    if confusion is not None:
        matrix, assumed = square_confusion(confusion, outcomes)
        corrected = Correction.from_dict({"assumed_exact": assumed, **_safe(
            stats.correct_for_confusion, counts, matrix, confidence, BOOTSTRAP_DRAWS, seed)})
    return Cell(prompt_key, settings, instrument, instrument_name, attribute, list(outcomes), counts.tolist(),
                n, (counts / n).tolist(),
                [Interval.from_dict(stats.wilson_interval(int(c), n, confidence).to_dict()) for c in counts],
                Band.from_dict(_safe(stats.simultaneous_intervals, counts, confidence, "goodman")),
                Entropy.from_dict(_safe(stats.entropy_summary, counts, confidence, BOOTSTRAP_DRAWS, seed)),
                mad, comparisons[TRAINING], comparisons[MATCHED], corrected)


def cell_p_value(cell: Cell) -> tuple[float, str] | None:
    """The cell's test for the multiplicity family: G vs reference, else MAD vs balanced."""
    if cell.vs_reference is not None and cell.vs_reference.distance.g_test_p is not None:
        return float(cell.vs_reference.distance.g_test_p), "g-test vs training reference"
    if cell.mad is not None and cell.mad.p_value is not None:
        return float(cell.mad.p_value), "MAD test vs balanced"
    return None


def prompt_table(store: RunStore, measured: Measured) -> list[PromptRecord]:
    """Each probed prompt with the ids it became, and which other prompts collapse into the same ids."""
    rows = [store.get_record(key) for key in store.record_keys("prompt:")]
    by_ids: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_ids[json.dumps(row["ids"])].append(row["key"])
    group_names = {ids: f"g{i}" for i, ids in enumerate(by_ids)}
    for row in rows:
        ids = json.dumps(row["ids"])
        row["id_group"] = group_names[ids]
        row["same_ids_as"] = [k for k in by_ids[ids] if k != row["key"]]
        row["equals_unconditional"] = row["ids"] == row["uncond_ids"]
        row["matched_reference_n"] = (sum(1 for item in measured.reference if item.ids == row["ids"])
                                      if measured.reference else None)
    return [PromptRecord.from_dict(row) for row in rows]


def analyse(store: RunStore, measured: Measured, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """All statistics of a measured run, as a JSON-ready dict (written to metrics.json)."""
    return build_metrics(store, measured, confidence, seed).to_dict()


def build_metrics(store: RunStore, measured: Measured, confidence: float = 0.95, seed: int = 0) -> Metrics:
    """All statistics of a measured run, typed (results.py, results_run.py)."""
    records = store.images()
    prompts = prompt_table(store, measured)
    ids_of = {row.key: row.ids for row in prompts}
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        groups[(r.prompt_key, r.settings)].append(r.sha256)
        ids_of.setdefault(r.prompt_key, r.token_ids)

    reference_counts: dict[str, dict[str, list[int]]] = {}
    cells: list[Cell] = []
    for key, info in measured.instruments.items():
        for attribute, outcomes in info["outcomes"].items():
            outcomes = tuple(outcomes)
            ref_labels = measured.reference_labels.get(key, {})
            reference = None
            if ref_labels:
                reference = counts_of([ref_labels[i.sha256][attribute] for i in measured.reference], outcomes)
                reference_counts.setdefault(key, {})[attribute] = reference.tolist()
            confusion = info.get("validation", {}).get("confusions", {}).get(attribute)
            for (prompt_key, settings), shas in groups.items():
                labels = [measured.run_labels[key][sha][attribute] for sha in shas]
                matched = None
                if ref_labels:
                    same = [i for i in measured.reference if i.ids == ids_of[prompt_key]]
                    if len(same) >= MIN_MATCHED:
                        matched = counts_of([ref_labels[i.sha256][attribute] for i in same], outcomes)
                cells.append(analyse_cell(prompt_key, json.loads(settings), key, info["name"], attribute,
                                          counts_of(labels, outcomes), outcomes, reference, matched, confusion,
                                          confidence, seed))

    tested = [(i, pv) for i, c in enumerate(cells) if (pv := cell_p_value(c)) is not None]
    bh: dict[str, Any] = {"alpha": 0.05, "tests": len(tested), "discoveries": []}
    if tested:
        names = [f"{c.prompt_key} | {c.scale:g} | {c.instrument_name}.{c.attribute}"
                 for c in (cells[i] for i, _ in tested)]
        result = stats.benjamini_hochberg([p for _, (p, _) in tested], 0.05, names)
        for (i, (p, kind)), adj, rej in zip(tested, result.adjusted, result.rejected, strict=True):
            cells[i] = replace(cells[i], test=Test.from_dict({"p_value": p, "kind": kind,
                                                              "bh_adjusted": float(adj), "bh_rejected": bool(rej)}))
        bh["discoveries"] = list(result.discoveries)
    return Metrics(
        RunInfo.from_dict({"folder": str(store.folder), "images": len(records), "confidence": confidence,
                           "model_hash": store.get_meta("model_hash"), "model_dir": store.get_meta("model_dir")}),
        ["common random numbers: image i of every prompt and condition scale uses seed base + i, so "
         "comparisons between prompts and scales are paired (identical ids give identical images)"],
        prompts, {k: Instrument.from_dict(k, i) for k, i in measured.instruments.items()},
        ReferenceInfo.from_dict({"source": measured.reference_source, "n": len(measured.reference),
                                 "counts": reference_counts, "kind": measured.reference_kind,
                                 "notes": measured.reference_notes}),
        cells, MultipleTesting.from_dict(bh), dose_responses(cells, confidence),
        Clusters.from_dict(measured.clusters) if measured.clusters else None)


def dose_responses(cells: list[Cell], confidence: float) -> list[DoseResponse]:
    """Share of each label against condition scale, per prompt × instrument attribute × other settings."""
    series: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in cells:
        other = json.dumps(cell.other_settings, sort_keys=True)
        series[(cell.prompt_key, cell.instrument, cell.attribute, other)].append(cell)
    out = []
    for (prompt_key, instrument, attribute, other), group in series.items():
        if len({c.scale for c in group}) < 2:
            continue
        group = sorted(group, key=lambda c: c.scale)
        x = [c.settings["condition_scale"] for c in group]
        predictor = "log2" if min(x) > 0 else "linear"
        for j, label in enumerate(group[0].labels):
            successes = [c.counts[j] for c in group]
            totals = [c.n for c in group]
            if sum(successes) in (0, sum(totals)):
                continue  # never or always seen: no slope to estimate
            fit = _safe(stats.dose_response, x, successes, totals, predictor, confidence)
            out.append(DoseResponse.from_dict({"prompt_key": prompt_key, "instrument": instrument,
                                               "attribute": attribute, "label": label,
                                               "other_settings": json.loads(other), **fit}))
    return out

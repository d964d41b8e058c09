"""Typed metrics of a measured run (RUN/metrics.json), as analysis.py builds them and report.py / card.py read
them; the per-cell statistics are in results.py.

metrics.json layout (only the from_dict / to_dict methods here and in results.py know these keys):

    {"run": {"folder", "images", "confidence", "model_hash", "model_dir"},
     "notes": [text],
     "prompts": [{"key", "prompt", "family", "input_mode", "label", "normalized", "ids", "tokens", "notes",
                  "uncond_ids", "uncond_tokens", "id_group", "same_ids_as", "equals_unconditional",
                  "matched_reference_n"}],
     "instruments": {key: {"name", "outcomes": {attribute: [labels]},
                           "validation": {"source", "error"?, "confusions"?: {attribute: {"labels", "counts",
                                          "n", "accuracy", "unclear_rate", "recall", …}}}}},
     "reference": {"source", "n", "counts": {instrument: {attribute: [counts]}},   # n 0: none measured
                   "kind": "training images" | "reference table" | null, "notes": [text]},
     "cells": [cell, see results.py],
     "multiple_testing": {"alpha", "tests", "discoveries"?: [names]},
     "dose_response": [{"prompt_key", "instrument", "attribute", "label", "other_settings", "scales",
                        "shares", "share_low", "share_high", "slope", "slope_low", "slope_high", "slope_p",
                        "odds_ratio", …} or {…, "error"}],
     "clusters": {"extractor", "exemplars": {label: [sha256]}, "reference_exemplars": {…}, "model": …} | null,
     "dedupe": {"run": {"unique_exact", "unique_perceptual", …}, "groups": [{"prompt_key", "settings", …}]},
     "measure_config": {…}}                     # dedupe and measure_config are added by measure.py
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from crayonbox.lab.results import Cell, Stored

UNCONDITIONAL_LABEL = "<unconditional ids>"
IMAGES = "training images"  # ReferenceInfo.kind: the training images themselves were measured
TABLE = "reference table"  # ReferenceInfo.kind: their labels came from the model folder's reference table
NULL_FAMILY = "null"


@dataclass(frozen=True)
class PromptRecord(Stored):
    """One probed prompt and the ids it became; `id_group` names the prompts that became the same ids."""

    key: str = ""
    prompt: str = ""
    family: str = ""
    input_mode: str = ""
    normalized: str = ""
    ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    uncond_ids: list[int] = field(default_factory=list)
    uncond_tokens: list[str] = field(default_factory=list)
    id_group: str = ""
    same_ids_as: list[str] = field(default_factory=list)
    equals_unconditional: bool = False
    matched_reference_n: int | None = None  # None: no training images were measured

    @property
    def unconditional(self) -> bool:
        """Whether this is the control that sends the unconditional ids themselves."""
        return self.input_mode == "unconditional-ids"

    @property
    def text(self) -> str:
        """The prompt as readers should see it: Python repr ("" and " " differ visibly), or the control's
        name."""
        return UNCONDITIONAL_LABEL if self.unconditional else repr(self.prompt)


@dataclass(frozen=True)
class IdGroup:
    """Prompts that reached the model as the same ids: with the same seeds they give the same images, so they
    are one measurement (and at most one discovery), however many strings they are."""

    name: str
    members: list[PromptRecord]

    @property
    def first(self) -> PromptRecord:
        """The member shown for the group (its first in probe order)."""
        return self.members[0]

    @property
    def keys(self) -> list[str]:
        """Prompt keys of every member."""
        return [m.key for m in self.members]

    @property
    def text(self) -> str:
        """Every member's text, joined by " = "."""
        return " = ".join(m.text for m in self.members)

    @property
    def blank(self) -> bool:
        """Whether the group holds blank-prompt probes (the null family)."""
        return any(m.family == NULL_FAMILY for m in self.members)


@dataclass(frozen=True)
class Confusion(Stored):
    """An instrument's validation confusion matrix for one attribute (rows truth, columns reading)."""

    labels: list[str] = field(default_factory=list)
    counts: list[list[int]] = field(default_factory=list)
    n: int = 0
    accuracy: float | None = None
    unclear_rate: float | None = None
    recall: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Instrument:
    """One instrument of the run, its outcomes and its validation."""

    key: str
    name: str
    outcomes: dict[str, list[str]]
    validation_source: str
    validation_error: str | None
    confusions: dict[str, Confusion]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, key: str, d: dict[str, Any]) -> Instrument:
        """Read a stored instrument."""
        v = d.get("validation") or {}
        return cls(key, d["name"], d.get("outcomes", {}), v.get("source", ""), v.get("error"),
                   {a: Confusion.from_dict(c) for a, c in (v.get("confusions") or {}).items()}, d)


@dataclass(frozen=True)
class RunInfo(Stored):
    """The run: folder, image count, interval confidence, the weights it measured."""

    folder: str = ""
    images: int = 0
    confidence: float = 0.95
    model_hash: str | None = None
    model_dir: str | None = None


@dataclass(frozen=True)
class ReferenceInfo(Stored):
    """The training reference: the images measured, or the model folder's table of their labels (n 0: none,
    shares are compared with a balanced model). `notes` say why there is none, or which instruments have
    none (an instrument version the table was not measured with, the clusters of a table)."""

    source: str | None = None
    n: int = 0
    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    kind: str | None = None  # IMAGES or TABLE (None in metrics written before tables existed: images)
    notes: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        """Whether any instrument has a training reference (a table whose instrument versions all differ from
        the run's gives none)."""
        return bool(self.n) and bool(self.counts)

    @property
    def is_table(self) -> bool:
        """Whether the reference labels came from a reference table (no training images to show)."""
        return self.kind == TABLE

    def covers(self, instrument: str) -> bool:
        """Whether this instrument (key) was compared with the training reference."""
        return bool((self.counts or {}).get(instrument))

    def counts_for(self, instrument: str, attribute: str) -> list[int] | None:
        """The reference's counts per outcome of one instrument attribute (None when not measured)."""
        return (self.counts or {}).get(instrument, {}).get(attribute)


@dataclass(frozen=True)
class MultipleTesting(Stored):
    """Benjamini–Hochberg across every cell's test."""

    alpha: float = 0.05
    tests: int = 0
    discoveries: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DoseResponse(Stored):
    """One outcome's share against condition scale (binomial GLM) for one prompt × instrument attribute."""

    prompt_key: str = ""
    instrument: str = ""
    attribute: str = ""
    label: str = ""
    other_settings: dict[str, Any] = field(default_factory=dict)
    scales: list[float] | None = None
    shares: list[float] | None = None
    share_low: list[float] | None = None
    share_high: list[float] | None = None
    slope: float | None = None
    slope_low: float | None = None
    slope_high: float | None = None
    slope_p: float | None = None
    odds_ratio: float | None = None

    @property
    def detected(self) -> bool:
        """Whether the slope's interval excludes 0 (guidance changes this share)."""
        return self.slope_low is not None and self.slope_high is not None and self.slope_low * self.slope_high > 0


@dataclass(frozen=True)
class Clusters(Stored):
    """The label-free clusters: their feature extractor and exemplar images (by sha256)."""

    extractor: str = ""
    exemplars: dict[str, list[str]] = field(default_factory=dict)
    reference_exemplars: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Dedupe(Stored):
    """Perceptual-hash dedupe of the run and of each prompt × settings."""

    @property
    def unique_exact(self) -> int | None:
        """Exactly unique images in the run."""
        return (self.raw.get("run") or {}).get("unique_exact")

    @property
    def unique_perceptual(self) -> int | None:
        """Perceptually unique images in the run (pHash ≤ 4 bits apart = same picture)."""
        return (self.raw.get("run") or {}).get("unique_perceptual")

    def unique_for(self, prompt_key: str, scale: float) -> tuple[int, int] | None:
        """(perceptually unique, images) of one prompt at one condition scale."""
        for g in self.raw.get("groups", []):
            if g["prompt_key"] == prompt_key and json.loads(g["settings"])["condition_scale"] == scale:
                return g["unique_perceptual"], g["images"]
        return None


METRICS_KEYS = ("run", "notes", "prompts", "instruments", "reference", "cells", "multiple_testing",
                "dose_response", "clusters", "dedupe")


@dataclass
class Metrics:
    """Everything metrics.json holds, typed."""

    run: RunInfo
    notes: list[str]
    prompts: list[PromptRecord]
    instruments: dict[str, Instrument]
    reference: ReferenceInfo
    cells: list[Cell]
    multiple_testing: MultipleTesting
    dose_response: list[DoseResponse]
    clusters: Clusters | None
    dedupe: Dedupe | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys other modules add (measure_config, …)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready layout in the module docstring."""
        out = {"run": self.run.to_dict(), "notes": self.notes, "prompts": [p.to_dict() for p in self.prompts],
               "instruments": {k: i.raw for k, i in self.instruments.items()},
               "reference": self.reference.to_dict(), "cells": [c.to_dict() for c in self.cells],
               "multiple_testing": self.multiple_testing.to_dict(),
               "dose_response": [d.to_dict() for d in self.dose_response],
               "clusters": self.clusters.to_dict() if self.clusters else None}
        if self.dedupe is not None:
            out["dedupe"] = self.dedupe.to_dict()
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        """Read metrics.json's dict."""
        return cls(RunInfo.from_dict(d["run"]), d.get("notes", []),
                   [PromptRecord.from_dict(p) for p in d.get("prompts", [])],
                   {k: Instrument.from_dict(k, i) for k, i in d.get("instruments", {}).items()},
                   ReferenceInfo.from_dict(d.get("reference")), [Cell.from_dict(c) for c in d["cells"]],
                   MultipleTesting.from_dict(d.get("multiple_testing")),
                   [DoseResponse.from_dict(r) for r in d.get("dose_response", [])],
                   Clusters.from_dict(d["clusters"]) if d.get("clusters") else None,
                   Dedupe.from_dict(d["dedupe"]) if "dedupe" in d else None,
                   {k: v for k, v in d.items() if k not in METRICS_KEYS})

    def id_groups(self) -> list[IdGroup]:
        """Prompts grouped by identical ids, in probe order; a cell's prompt without a record is its own
        group."""
        members: dict[str, list[PromptRecord]] = {}
        for p in self.prompts:
            members.setdefault(p.id_group, []).append(p)
        groups = [IdGroup(name, ps) for name, ps in members.items()]
        known = {p.key for p in self.prompts}
        for key in dict.fromkeys(c.prompt_key for c in self.cells if c.prompt_key not in known):
            mode, _, prompt = key.partition(":")
            groups.append(IdGroup(key, [PromptRecord(key=key, prompt=prompt, input_mode=mode, id_group=key)]))
        return groups

    def group_of(self) -> dict[str, IdGroup]:
        """prompt key → its id group."""
        return {key: g for g in self.id_groups() for key in g.keys}

    def prompt_texts(self) -> dict[str, str]:
        """prompt key → its text as readers should see it."""
        return {p.key: p.text for g in self.id_groups() for p in g.members}

    def discoveries(self) -> list[tuple[IdGroup, Cell]]:
        """BH-significant cells counted once per id group × settings × instrument attribute: prompts with the
        same ids are one measurement, so five strings that became `<s> Ġ </s>` are one discovery, not five."""
        group, seen, out = self.group_of(), set(), []
        for c in self.cells:
            if c.test is None or not c.test.bh_rejected:
                continue
            ident = (group[c.prompt_key].name, json.dumps(c.settings, sort_keys=True), c.instrument, c.attribute)
            if ident not in seen:
                seen.add(ident)
                out.append((group[c.prompt_key], c))
        return out

    def tested_units(self) -> int:
        """Tested cells counted once per id group × settings × instrument attribute."""
        group = self.group_of()
        return len({(group[c.prompt_key].name, json.dumps(c.settings, sort_keys=True), c.instrument,
                     c.attribute) for c in self.cells if c.test is not None})

"""Typed statistics of one cell (prompt × sampler settings × instrument attribute), as analysis.py computes
them and report.py / card.py read them. The run-level types (prompts, instruments, the whole metrics.json)
are in results_run.py.

A cell in metrics.json ("cells": [...]) is

    {"prompt_key", "settings": {"condition_scale", "top_k", "top_p", "temperature"}, "instrument",
     "instrument_name", "attribute", "labels": [K], "counts": [K], "n", "shares": [K],
     "wilson": [K × {"estimate", "low", "high", …}], "simultaneous": {"low": [K], "high": [K], …},
     "entropy": {"miller_madow", "low", "high", …},
     "mad"?: {"labels": [substantive], "mad", "null_mean", "p_value", …},
     "vs_reference"? / "vs_matched"?: {"reference_counts": [K], "reference_n",
                                       "gaps": {"reference", "gap", "gap_low", "gap_high", "ratio", … : [K]},
                                       "distance": {"total_variation", "jensen_shannon", "kl", "kl_null_bias",
                                                    "g_test": {"p_value", …}, …}},
     "corrected"?: {"assumed_exact": [labels], "estimate", "low", "high": [K], …},
     "test"?: {"p_value", "kind", "bh_adjusted", "bh_rejected"}}

Every statistic is the crayonbox.lab.stats result's `to_dict()`, or {"error": message} when it could not be
computed. Only `from_dict` / `to_dict` here know these keys; every other module reads attributes. Each
statistic keeps the dict it was read from (`raw`), so writing it back is exact, keys the report does not
use included, and metrics.json's numbers never depend on this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Self

MATCHED = "matched"  # Comparison.against: training items whose captions became the prompt's own ids
TRAINING = "training"  # Comparison.against: the first training images, whatever their captions


@dataclass(frozen=True)
class Stored:
    """Base of a statistic read from its stored dict: declared fields are filled from the keys of the
    same name (None where absent, e.g. when the statistic failed)."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        """The typed view of a stored statistic."""
        data = data or {}
        return cls(raw=data, **{f.name: data.get(f.name) for f in fields(cls) if f.name != "raw" and f.init})

    def to_dict(self) -> dict[str, Any]:
        """The stored dict, exactly as read or computed."""
        return self.raw

    @property
    def error(self) -> str | None:
        """Why the statistic could not be computed (None when it was)."""
        return self.raw.get("error")


@dataclass(frozen=True)
class Interval(Stored):
    """One share with its Wilson interval."""

    estimate: float | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Band(Stored):
    """Simultaneous (Goodman) intervals on all K shares of a cell."""

    low: list[float] | None = None
    high: list[float] | None = None


@dataclass(frozen=True)
class Entropy(Stored):
    """Miller–Madow entropy with its bootstrap interval."""

    miller_madow: float | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Mad(Stored):
    """The published-style MAD over substantive outcomes, its noise floor at the same n and p-value."""

    labels: list[str] | None = None
    mad: float | None = None
    null_mean: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Gaps(Stored):
    """p̂ − q and p̂/q per outcome, with simultaneous intervals; `reference` is q."""

    reference: list[float] | None = None
    gap: list[float] | None = None
    gap_low: list[float] | None = None
    gap_high: list[float] | None = None
    ratio: list[float] | None = None


@dataclass(frozen=True)
class Distance(Stored):
    """TV / JS / KL to a reference and the G-test p-value."""

    total_variation: float | None = None
    jensen_shannon: float | None = None
    kl: float | None = None
    kl_null_bias: float | None = None

    @property
    def g_test_p(self) -> float | None:
        """The G-test's p-value (None when the test could not be run)."""
        return (self.raw.get("g_test") or {}).get("p_value")


@dataclass(frozen=True)
class Correction(Stored):
    """Shares corrected for instrument error; `assumed_exact` lists classes without validation items."""

    assumed_exact: list[str] | None = None
    estimate: list[float] | None = None
    low: list[float] | None = None
    high: list[float] | None = None


@dataclass(frozen=True)
class Test(Stored):
    """The cell's test in the Benjamini–Hochberg family."""

    p_value: float | None = None
    kind: str | None = None
    bh_adjusted: float | None = None
    bh_rejected: bool | None = None


@dataclass(frozen=True)
class Comparison:
    """The cell against one set of training images measured by the same instrument."""

    against: str  # TRAINING or MATCHED
    reference_counts: list[int]
    reference_n: int
    gaps: Gaps
    distance: Distance

    def to_dict(self) -> dict[str, Any]:
        """The stored layout (`against` is the key it is stored under, not a field)."""
        return {"reference_counts": self.reference_counts, "reference_n": self.reference_n,
                "gaps": self.gaps.to_dict(), "distance": self.distance.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], against: str) -> Comparison:
        """Read a stored comparison."""
        return cls(against, data["reference_counts"], data["reference_n"], Gaps.from_dict(data["gaps"]),
                   Distance.from_dict(data["distance"]))

    def share(self, j: int) -> float:
        """The reference's share of outcome j."""
        return self.reference_counts[j] / self.reference_n

    def gap(self, j: int) -> tuple[float | None, float | None, float | None]:
        """p̂ − q of outcome j with its simultaneous interval (Nones when the gaps failed)."""
        g = self.gaps
        return tuple(v[j] if v is not None else None for v in (g.gap, g.gap_low, g.gap_high))  # type: ignore


@dataclass(frozen=True)
class Share:
    """One outcome of a cell: its count and share with the simultaneous interval."""

    label: str
    count: int
    n: int
    share: float
    low: float | None
    high: float | None

    def overlaps(self, other: Share) -> bool:
        """Whether the two intervals overlap (then the data cannot tell which share is larger)."""
        if None in (self.low, self.high, other.low, other.high):
            return True
        return self.low <= other.high and other.low <= self.high  # type: ignore[operator]


@dataclass(frozen=True)
class Cell:
    """Every statistic of one prompt × sampler settings × instrument attribute."""

    prompt_key: str
    settings: dict[str, Any]  # condition_scale, top_k, top_p, temperature
    instrument: str
    instrument_name: str
    attribute: str
    labels: list[str]
    counts: list[int]
    n: int
    shares: list[float]
    wilson: list[Interval]
    simultaneous: Band
    entropy: Entropy
    mad: Mad | None = None
    vs_reference: Comparison | None = None
    vs_matched: Comparison | None = None
    corrected: Correction | None = None
    test: Test | None = None

    @property
    def scale(self) -> float:
        """The condition scale (guidance strength)."""
        return float(self.settings["condition_scale"])

    @property
    def other_settings(self) -> dict[str, Any]:
        """The sampler settings other than condition scale."""
        return {k: v for k, v in self.settings.items() if k != "condition_scale"}

    def ranked(self) -> list[int]:
        """Outcome indices, most common first (ties keep outcome order)."""
        return sorted(range(len(self.labels)), key=lambda j: -self.counts[j])

    @property
    def top(self) -> int:
        """Index of the most common outcome."""
        return self.ranked()[0]

    def share(self, j: int) -> Share:
        """Outcome j with its simultaneous interval."""
        low, high = self.simultaneous.low, self.simultaneous.high
        return Share(self.labels[j], self.counts[j], self.n, self.shares[j],
                     low[j] if low is not None else None, high[j] if high is not None else None)

    def modal_is_clear(self) -> bool:
        """Whether the most common outcome's interval clears every other outcome's interval."""
        top = self.share(self.top)
        return all(not top.overlaps(self.share(j)) for j in self.ranked()[1:])

    def to_dict(self) -> dict[str, Any]:
        """The stored layout (optional statistics only when present)."""
        out: dict[str, Any] = {
            "prompt_key": self.prompt_key, "settings": self.settings, "instrument": self.instrument,
            "instrument_name": self.instrument_name, "attribute": self.attribute, "labels": self.labels,
            "counts": self.counts, "n": self.n, "shares": self.shares,
            "wilson": [w.to_dict() for w in self.wilson], "simultaneous": self.simultaneous.to_dict(),
            "entropy": self.entropy.to_dict()}
        for name in ("mad", "vs_reference", "vs_matched", "corrected", "test"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        """Read a stored cell."""
        def opt(kind: Any, key: str) -> Any:
            return kind.from_dict(d[key]) if key in d else None

        return cls(d["prompt_key"], d["settings"], d["instrument"], d["instrument_name"], d["attribute"],
                   d["labels"], d["counts"], d["n"], d["shares"], [Interval.from_dict(w) for w in d["wilson"]],
                   Band.from_dict(d.get("simultaneous")), Entropy.from_dict(d.get("entropy")), opt(Mad, "mad"),
                   Comparison.from_dict(d["vs_reference"], TRAINING) if "vs_reference" in d else None,
                   Comparison.from_dict(d["vs_matched"], MATCHED) if "vs_matched" in d else None,
                   opt(Correction, "corrected"), opt(Test, "test"))

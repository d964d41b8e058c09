"""The common shape of the lab's instruments: images in, one label per attribute out, and a confusion matrix
that says how far to trust those labels.

An instrument never drops an image. When it sees nothing to measure it answers NONE ("no person", "no skin"),
and when it cannot decide it answers UNCLEAR — both are outcomes that the statistics count like any other,
so a detector that fails on dark skin shows up as a tall "unclear" bar instead of
silently shrinking the sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crayonbox.errors import CrayonboxError
from crayonbox.model.images import ImageLike
from crayonbox.model.judge import NONE as NONE  # every instrument answers in the judge's vocabulary
from crayonbox.model.judge import UNCLEAR as UNCLEAR


@dataclass
class Confusion:
    """Validation counts of one attribute: `counts[i, j]` = items of truth labels[i] measured as labels[j].

    Square over every outcome (NONE and UNCLEAR included), so its shape is the same whatever the validation
    set happens to contain; the UNCLEAR row is always zero because nothing is truly "unclear".
    """

    attribute: str
    labels: tuple[str, ...]
    counts: np.ndarray  # int64 (K, K)

    @classmethod
    def from_pairs(cls, attribute: str, labels: Sequence[str], truth: Sequence[str],
                   measured: Sequence[str]) -> Confusion:
        """Count (truth, measured) pairs; a label outside `labels` is an error, not a silent drop."""
        if len(truth) != len(measured):
            raise CrayonboxError(f"{attribute}: {len(truth)} truth labels but {len(measured)} measurements")
        index = {label: i for i, label in enumerate(labels)}
        counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
        for t, m in zip(truth, measured, strict=True):
            for label, side in ((t, "truth"), (m, "measured")):
                if label not in index:
                    raise CrayonboxError(f"{attribute}: {side} label {label!r} is not an outcome of this "
                                         f"instrument ({list(labels)})")
            counts[index[t], index[m]] += 1
        return cls(attribute, tuple(labels), counts)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def accuracy(self) -> float:
        """Share of items measured as their true label (NaN when empty)."""
        return float(np.trace(self.counts) / self.n) if self.n else float("nan")

    def recall(self) -> dict[str, float]:
        """Per true label present in the validation set: share measured correctly."""
        rows = self.counts.sum(1)
        return {label: float(self.counts[i, i] / rows[i]) for i, label in enumerate(self.labels) if rows[i]}

    def unclear_rate(self) -> float:
        """Share of items the instrument answered UNCLEAR (0 when it has no such outcome)."""
        if UNCLEAR not in self.labels or not self.n:
            return 0.0
        return float(self.counts[:, self.labels.index(UNCLEAR)].sum() / self.n)

    def rates(self) -> np.ndarray:
        """Row-normalised matrix P(measured j | truth i); rows with no items are all zero."""
        rows = self.counts.sum(1, keepdims=True)
        return np.divide(self.counts, rows, out=np.zeros(self.counts.shape), where=rows > 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the lab report and `metrics.json` store this)."""
        return {"attribute": self.attribute, "labels": list(self.labels), "counts": self.counts.tolist(),
                "n": self.n, "accuracy": self.accuracy(), "recall": self.recall(),
                "unclear_rate": self.unclear_rate()}


class Instrument(ABC):
    """Maps images to labels per attribute. Subclasses define `outcomes`, `measure` and `truth`."""

    name: str = "instrument"

    @abstractmethod
    def outcomes(self) -> dict[str, tuple[str, ...]]:
        """Attribute → every label it can answer, NONE and UNCLEAR included."""

    @abstractmethod
    def measure(self, images: Sequence[ImageLike]) -> list[dict[str, str]]:
        """One {attribute: label} per image, in order."""

    @abstractmethod
    def truth(self, world: dict[str, Any]) -> dict[str, str]:
        """The labels this instrument *should* answer for a world render, from its `meta["world"]`."""

    def validate(self, images: Sequence[ImageLike], truth: Sequence[dict[str, str]]) -> dict[str, Confusion]:
        """Confusion matrix per attribute of this instrument on labelled images (e.g. held-out renders)."""
        if len(images) != len(truth):
            raise CrayonboxError(f"validate: {len(images)} images but {len(truth)} truth rows")
        if not images:
            raise CrayonboxError("validate: no images; render some labelled world scenes first")
        measured = self.measure(images)
        return {attribute: Confusion.from_pairs(attribute, labels, [t[attribute] for t in truth],
                                                [m[attribute] for m in measured])
                for attribute, labels in self.outcomes().items()}

    def validate_world(self, images: Sequence[ImageLike],
                       worlds: Sequence[dict[str, Any]]) -> dict[str, Confusion]:
        """`validate` with truth taken from each render's `meta["world"]`."""
        return self.validate(images, [self.truth(w) for w in worlds])

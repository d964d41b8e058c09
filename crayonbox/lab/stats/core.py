"""Shared pieces of the lab's statistics: the JSON-ready result base class, input checks, and `Reference`,
the distribution a sample is compared with (known exactly, or itself estimated from counts)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from crayonbox.errors import CrayonboxError


def _jsonable(value: Any) -> Any:
    """Turn numpy values, tuples and nested results into plain JSON types. Non-finite floats (an infinite
    KL, a ratio against a zero reference) become None, because strict JSON has no inf or nan."""
    if isinstance(value, StatsResult):
        return value.to_dict()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class StatsResult:
    """Base of every result: a frozen dataclass whose `to_dict()` is ready for `json.dumps`."""

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain Python types (lists, floats, ints, None for inf/nan)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def z_value(confidence: float) -> float:
    """Two-sided normal critical value z_{1-α/2} for `confidence` = 1 − α (1.959964 at 0.95)."""
    check_confidence(confidence)
    return float(stats.norm.isf((1.0 - confidence) / 2.0))


def check_confidence(confidence: float) -> None:
    """Raise a CrayonboxError unless 0 < confidence < 1."""
    if not 0.0 < confidence < 1.0:
        raise CrayonboxError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")


def as_counts(counts: ArrayLike, name: str = "counts", allow_empty_total: bool = False) -> np.ndarray:
    """Validate a 1-D vector of non-negative integer counts and return it as int64."""
    arr = np.asarray(counts, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise CrayonboxError(f"{name} must be a non-empty 1-D list of counts, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.round(arr)):
        raise CrayonboxError(f"{name} must be non-negative whole numbers, got {arr.tolist()}")
    if arr.sum() == 0 and not allow_empty_total:
        raise CrayonboxError(f"{name} are all zero: there is nothing to estimate; generate images first")
    return arr.astype(np.int64)


def as_count_and_n(count: float, n: float) -> tuple[int, int]:
    """Validate one binomial count x out of n trials."""
    if n != int(n) or count != int(count) or n <= 0 or not 0 <= count <= n:
        raise CrayonboxError(f"need a whole count between 0 and n with n > 0, got count={count}, n={n}")
    return int(count), int(n)


@dataclass(frozen=True)
class Reference(StatsResult):
    """The distribution q a sample is compared with.

    `n is None` means q is known exactly (e.g. a census share or the uniform 1/K). Otherwise q = counts/n was
    measured on n reference images (by default the training images, labelled by the same instrument), and
    every gap, ratio and test adds its sampling variance q(1−q)/n.
    """

    q: np.ndarray
    n: int | None = None

    @classmethod
    def fixed(cls, q: ArrayLike) -> Reference:
        """A reference known without error; q must be non-negative and sum to 1."""
        arr = np.asarray(q, dtype=float)
        if arr.ndim != 1 or arr.size == 0 or np.any(arr < 0) or not np.all(np.isfinite(arr)):
            raise CrayonboxError(f"reference proportions must be a 1-D list of non-negative numbers, got {q}")
        if abs(arr.sum() - 1.0) > 1e-6:
            raise CrayonboxError(f"reference proportions must sum to 1, they sum to {arr.sum():.6g}; "
                                 "pass Reference.from_counts(...) if these are counts")
        return cls(q=arr / arr.sum(), n=None)

    @classmethod
    def from_counts(cls, counts: ArrayLike) -> Reference:
        """A reference estimated from counts (e.g. training images per category, same instrument)."""
        arr = as_counts(counts, "reference counts")
        return cls(q=arr / arr.sum(), n=int(arr.sum()))

    @classmethod
    def uniform(cls, k: int) -> Reference:
        """The balanced reference 1/K, known exactly."""
        return cls(q=np.full(k, 1.0 / k), n=None)

    @property
    def estimated(self) -> bool:
        """True when q carries sampling error (it came from counts)."""
        return self.n is not None

    @property
    def counts(self) -> np.ndarray:
        """Reference counts (only meaningful when `estimated`)."""
        if self.n is None:
            raise CrayonboxError("this reference is a fixed distribution and has no counts")
        return np.round(self.q * self.n).astype(np.int64)


def as_reference(reference: Reference | ArrayLike, k: int) -> Reference:
    """Accept a Reference or plain proportions (treated as known exactly) and check it has k categories."""
    ref = reference if isinstance(reference, Reference) else Reference.fixed(reference)
    if ref.q.size != k:
        raise CrayonboxError(f"the reference has {ref.q.size} categories but the sample has {k}; "
                             "measure both with the same instrument and category list")
    return ref

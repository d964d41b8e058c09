"""How many *different* images a probe really made: exact duplicates by content hash, near duplicates by
perceptual hash.

"Over 5,000 unique images" was the headline of the blank-prompt story; a mode-collapsed model can repeat
itself, so the lab counts. Two images are near duplicates when their 64-bit pHashes (imagehash.phash: DCT of
a 32×32 grey thumbnail) differ in at most `max_distance` bits; groups are the connected components of that
relation (single linkage), and the count of groups is the number of unique images. pHashes are cached in the
run's feature table, so a re-count costs nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import imagehash
import numpy as np
from tqdm.auto import tqdm

from crayonbox.lab.store import RunStore

PHASH = "phash-v1"  # feature-cache key; bump if the hash function changes
DEFAULT_MAX_DISTANCE = 4  # bits of 64; imagehash's docs call ≤ 5 "likely the same picture"


@dataclass
class DedupeResult:
    """Unique-image counts of one group of images (a prompt × scale, or the whole run)."""

    images: int
    unique_exact: int  # distinct PNG hashes
    unique_perceptual: int  # near-duplicate groups
    max_distance: int
    largest_group: int  # images in the biggest near-duplicate group

    @property
    def duplicate_share(self) -> float:
        """Share of images that repeat an earlier one perceptually."""
        return 1 - self.unique_perceptual / self.images if self.images else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the duplicate share."""
        return {**asdict(self), "duplicate_share": self.duplicate_share}


def phash_bits(image: Any) -> np.ndarray:
    """64 booleans: the perceptual hash of a PIL image."""

    return np.asarray(imagehash.phash(image).hash, dtype=bool).reshape(-1)


def cached_phashes(store: RunStore, shas: list[str], progress: bool = False) -> dict[str, np.ndarray]:
    """sha256 → 64 pHash bits for these images, computing (and caching) the missing ones."""

    have = {sha: v.astype(bool) for sha, v in store.features(PHASH).items()}
    missing = list(store.iter_missing(shas, have))
    if missing:
        paths = {r.sha256: r.path for r in store.images()}
        new = {}
        for sha in tqdm(missing, desc="phash", unit="img", disable=not progress):
            new[sha] = phash_bits(store.load_image(paths[sha]))
        store.add_features(PHASH, {sha: bits.astype(np.float32) for sha, bits in new.items()})
        have.update(new)
    return {sha: have[sha] for sha in shas}


def hamming_matrix(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Hamming distances between (N, 64) and (M, 64) boolean rows, as matrix products."""
    a, b = rows.astype(np.float32), columns.astype(np.float32)
    return np.rint(a @ (1 - b).T + (1 - a) @ b.T).astype(np.int32)


def near_duplicate_groups(bits: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Group id per row: connected components of "Hamming distance ≤ max_distance" (union–find)."""
    n = len(bits)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    block = 1024  # rows per distance block, so 5,000 images never need a 5,000² matrix at once
    for start in range(0, n, block):
        close = hamming_matrix(bits[start:start + block], bits) <= max_distance
        for i, j in zip(*np.nonzero(close), strict=True):
            i = int(i) + start
            if j > i:
                ri, rj = find(i), find(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def dedupe(shas: list[str], bits: dict[str, np.ndarray],
           max_distance: int = DEFAULT_MAX_DISTANCE) -> DedupeResult:
    """Unique counts of a list of images (one entry per image, repeats allowed)."""
    if not shas:
        return DedupeResult(0, 0, 0, max_distance, 0)
    distinct = list(dict.fromkeys(shas))
    groups = near_duplicate_groups(np.stack([bits[s] for s in distinct]), max_distance)
    group_of = dict(zip(distinct, groups.tolist(), strict=True))
    sizes = np.bincount([group_of[s] for s in shas])
    return DedupeResult(images=len(shas), unique_exact=len(distinct),
                        unique_perceptual=int((sizes > 0).sum()), max_distance=max_distance,
                        largest_group=int(sizes.max()))


def dedupe_run(store: RunStore, max_distance: int = DEFAULT_MAX_DISTANCE,
               progress: bool = False) -> dict[str, Any]:
    """Unique-image counts for the whole run and per (prompt key, settings)."""
    records = store.images()
    bits = cached_phashes(store, [r.sha256 for r in records], progress)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        groups[(r.prompt_key, r.settings)].append(r.sha256)
    return {"run": dedupe([r.sha256 for r in records], bits, max_distance).to_dict(),
            "groups": [{"prompt_key": key, "settings": settings, **dedupe(shas, bits, max_distance).to_dict()}
                       for (key, settings), shas in groups.items()]}

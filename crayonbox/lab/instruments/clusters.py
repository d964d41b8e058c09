"""The label-free track: cluster image embeddings and report how each prompt's images spread over clusters.

For a blank prompt nobody knows the mode in advance, so instead of
asking "how many women in saris", the lab asks "which kinds of picture does this prompt make, and how
concentrated is it compared with the training images". Clusters are fitted on the run's images and the
reference (training) images together, so every cluster has a training share to compare with.

Embeddings: a judge's penultimate features when a trained judge is given (anything with `name` and
`embed(images) -> (N, D) array`), else `ColourLayoutFeatures`: a fixed, deterministic, download-free
descriptor — a joint CIELAB colour histogram, a 4×4 grid of mean colours, and 4×4 cells of gradient-
orientation histograms (HOG-like) on a 32×32 thumbnail, each block L2-normalised and weighted equally.
It sees colour, layout and shape; it knows nothing of people, so its clusters are descriptive, not labels.

k-means: scipy's k-means++ seeding and Lloyd iterations, `restarts` seeded restarts, lowest inertia wins.
Clusters are renamed by size (c00 is the largest on the fitting set), so names are stable across reruns.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image
from scipy.cluster.vq import kmeans2

from crayonbox.errors import CrayonboxError
from crayonbox.lab.instruments.base import ImageLike, Instrument
from crayonbox.lab.instruments.skin_tone import srgb_to_lab
from crayonbox.model.images import as_rgb_array


class FeatureExtractor(Protocol):
    """What the cluster track needs from an embedding: a cache name and a batch embedder."""

    name: str

    def embed(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(N, D) features, one row per image."""
        ...


@dataclass
class ColourLayoutFeatures:
    """Deterministic image descriptor (see module docstring). `name` changes whenever the numbers would."""

    side: int = 32  # thumbnail side the descriptor is computed on
    grid: int = 4  # layout and gradient cells per side
    orientations: int = 8  # unsigned gradient directions per cell
    colour_bins: int = 4  # per Lab axis of the joint colour histogram

    @property
    def name(self) -> str:
        """Cache name of the descriptor; it changes whenever its numbers would."""
        return f"colour-layout-v1-{self.side}-{self.grid}-{self.orientations}-{self.colour_bins}"

    def embed(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(N, D) float32 descriptors, one row per image."""
        return np.stack([self.embed_one(image) for image in images]).astype(np.float32)

    def embed_one(self, image: ImageLike) -> np.ndarray:
        """The descriptor of one image (D floats)."""
        rgb = as_rgb_array(image)
        thumb = np.asarray(Image.fromarray(rgb).resize((self.side, self.side), Image.Resampling.BILINEAR))
        lab = srgb_to_lab(thumb)  # L 0..100, a/b roughly −128..127
        scaled = np.stack([lab[..., 0] / 100, (lab[..., 1] + 128) / 256, (lab[..., 2] + 128) / 256], -1)
        bins = np.clip((scaled * self.colour_bins).astype(int), 0, self.colour_bins - 1)
        flat = (bins[..., 0] * self.colour_bins + bins[..., 1]) * self.colour_bins + bins[..., 2]
        histogram = np.sqrt(np.bincount(flat.ravel(), minlength=self.colour_bins**3) / flat.size)
        cell = self.side // self.grid
        layout = scaled.reshape(self.grid, cell, self.grid, cell, 3).mean(axis=(1, 3)).ravel()
        blocks = [histogram, layout, self._gradients(lab[..., 0] / 100)]
        return np.concatenate([b / (np.linalg.norm(b) + 1e-8) for b in blocks]) / np.sqrt(len(blocks))

    def _gradients(self, lightness: np.ndarray) -> np.ndarray:
        gy, gx = np.gradient(lightness)
        magnitude = np.hypot(gx, gy)
        angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned: an edge and its mirror are one direction
        direction = np.minimum((angle / np.pi * self.orientations).astype(int), self.orientations - 1)
        cell = self.side // self.grid
        rows, columns = np.arange(self.side)[:, None] // cell, np.arange(self.side)[None, :] // cell
        index = (rows * self.grid + columns) * self.orientations + direction
        return np.bincount(index.ravel(), weights=magnitude.ravel(),
                           minlength=self.grid**2 * self.orientations)


def kmeans(x: np.ndarray, k: int, seed: int = 0, restarts: int = 4, iterations: int = 100) -> np.ndarray:
    """Centroids (k, D) of the best (lowest inertia) of `restarts` seeded k-means++ / Lloyd runs (scipy)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < k:
        raise CrayonboxError(f"cannot make {k} clusters from {len(x)} images: lower --clusters or probe more")
    best, best_inertia = None, np.inf
    for restart in range(restarts):
        with warnings.catch_warnings():  # an emptied cluster keeps its centroid; the restarts cover it
            warnings.simplefilter("ignore", UserWarning)
            centroids, assign = kmeans2(x, k, iter=iterations, minit="++", missing="warn",
                                        rng=np.random.default_rng([seed, restart]))
        inertia = float(((x - centroids[assign]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = centroids, inertia
    return best


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d2 = (x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None, :]
    return d2.argmin(1)


@dataclass
class ClusterModel:
    """Fitted clusters: centroids ordered by size on the fitting set, and the extractor they belong to."""

    extractor: str
    centroids: np.ndarray  # (k, D)
    seed: int

    @property
    def labels(self) -> tuple[str, ...]:
        """Cluster names c00, c01, … (largest first on the fitting set)."""
        return tuple(f"c{i:02d}" for i in range(len(self.centroids)))

    @classmethod
    def fit(cls, features: np.ndarray, k: int, extractor: str, seed: int = 0) -> ClusterModel:
        """k-means on `features`, clusters renamed largest first."""
        centroids = kmeans(features, k, seed)
        sizes = np.bincount(_nearest(np.asarray(features, np.float64), centroids), minlength=k)
        order = np.lexsort((np.arange(k), -sizes))
        return cls(extractor, centroids[order], seed)

    def assign(self, features: np.ndarray) -> list[str]:
        """Cluster label of each feature row."""
        return [self.labels[i] for i in _nearest(np.asarray(features, np.float64), self.centroids)]

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Distance of each row to its own cluster's centroid (exemplars are the closest)."""
        x = np.asarray(features, np.float64)
        return np.sqrt(np.maximum(0, (x - self.centroids[_nearest(x, self.centroids)]) ** 2).sum(1))

    def exemplars(self, keys: Sequence[str], features: np.ndarray,
                  per_cluster: int = 6) -> dict[str, list[str]]:
        """The `per_cluster` keys nearest each centroid (distinct keys only)."""
        assigned, dist = self.assign(features), self.distances(features)
        out: dict[str, list[str]] = {label: [] for label in self.labels}
        for i in np.argsort(dist, kind="stable"):
            bucket = out[assigned[i]]
            if len(bucket) < per_cluster and keys[i] not in bucket:
                bucket.append(keys[i])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (centroids rounded to 6 decimals)."""
        return {"extractor": self.extractor, "k": len(self.centroids), "seed": self.seed,
                "centroids": self.centroids.round(6).tolist()}


class ClusterInstrument(Instrument):
    """Instrument with one attribute, "cluster": the fitted cluster of each image. Label-free, so it has no
    ground truth and no confusion matrix: its validity is the exemplars a person looks at in the report."""

    name = "clusters"

    def __init__(self, model: ClusterModel, extractor: FeatureExtractor):
        if extractor.name != model.extractor:
            raise CrayonboxError(f"clusters were fitted on {model.extractor} features, not {extractor.name}")
        self.model, self.extractor = model, extractor

    def outcomes(self) -> dict[str, tuple[str, ...]]:
        """One attribute, "cluster", with every cluster name."""
        return {"cluster": self.model.labels}

    def measure(self, images: Sequence[ImageLike]) -> list[dict[str, str]]:
        """The nearest cluster of each image."""
        return [{"cluster": label} for label in self.model.assign(self.extractor.embed(images))]

    def truth(self, world: dict[str, Any]) -> dict[str, str]:
        """Always an error: the track is label-free."""
        raise CrayonboxError("the cluster track is label-free: it has no ground truth to validate against")

"""The label-free track: a deterministic descriptor and k-means that find planted picture kinds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crayonbox.errors import CrayonboxError
from crayonbox.lab.instruments.clusters import ClusterInstrument, ClusterModel, ColourLayoutFeatures, kmeans


def _picture(kind: str, rng: np.random.Generator) -> Image.Image:
    background = {"red": (200, 30, 30), "blue": (30, 60, 200), "green": (40, 160, 60)}[kind]
    image = Image.new("RGB", (32, 32), tuple(int(c + rng.integers(-15, 15)) for c in background))
    draw = ImageDraw.Draw(image)
    x, y = rng.integers(2, 16, size=2)
    if kind == "blue":
        draw.ellipse((x, y, x + 14, y + 14), fill="white")
    elif kind == "green":
        for i in range(0, 32, 6):
            draw.line((i, 0, i, 31), fill="yellow", width=2)
    return image


def test_descriptor_is_deterministic_and_normalised():
    rng = np.random.default_rng(0)
    images = [_picture("blue", rng), _picture("green", rng), _picture("red", rng)]
    features = ColourLayoutFeatures()
    a, b = features.embed(images), features.embed(images)
    assert a.shape == (3, 64 + 48 + 128) and a.dtype == np.float32 and np.array_equal(a, b)
    # Three unit blocks weighted 1/√3; a flat picture has no gradient block, so its norm is √(2/3).
    assert np.allclose(np.linalg.norm(a, axis=1), [1.0, 1.0, np.sqrt(2 / 3)], atol=1e-5)
    assert features.name == "colour-layout-v1-32-4-8-4"


def test_kmeans_recovers_planted_kinds_and_names_clusters_by_size():
    rng = np.random.default_rng(1)
    kinds = ["red"] * 30 + ["blue"] * 20 + ["green"] * 10
    features = ColourLayoutFeatures()
    x = features.embed([_picture(k, rng) for k in kinds])
    model = ClusterModel.fit(x, 3, features.name, seed=0)
    labels = model.assign(x)
    assert labels[:30] == ["c00"] * 30 and labels[30:50] == ["c01"] * 20 and labels[50:] == ["c02"] * 10
    refit = ClusterModel.fit(x, 3, features.name, seed=0)
    assert np.array_equal(refit.centroids, model.centroids)
    keys = [f"img{i}" for i in range(len(kinds))]
    exemplars = model.exemplars(keys, x, per_cluster=4)
    assert all(len(v) == 4 for v in exemplars.values())
    assert all(int(k[3:]) >= 50 for k in exemplars["c02"])


def test_cluster_instrument_measures_and_has_no_truth():
    rng = np.random.default_rng(2)
    features = ColourLayoutFeatures()
    x = features.embed([_picture(k, rng) for k in ["red"] * 6 + ["blue"] * 4])
    instrument = ClusterInstrument(ClusterModel.fit(x, 2, features.name), features)
    assert instrument.outcomes() == {"cluster": ("c00", "c01")}
    assert instrument.measure([_picture("blue", rng)]) == [{"cluster": "c01"}]
    with pytest.raises(CrayonboxError, match="label-free"):
        instrument.truth({"objects": []})
    with pytest.raises(CrayonboxError, match="cannot make 5 clusters from 3"):
        kmeans(x[:3], 5)

"""Perceptual-hash dedupe: near copies are one image, different pictures are not."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from crayonbox.lab.dedupe import dedupe, dedupe_run, hamming_matrix, near_duplicate_groups, phash_bits
from crayonbox.lab.store import RunStore


def _shape(kind: str, shift: int = 0, noise: float = 0.0) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    if kind == "square":
        draw.rectangle((10 + shift, 10, 40 + shift, 40), fill="black")
    elif kind == "stripes":
        for x in range(0, 64, 8):
            draw.rectangle((x, 0, x + 3, 63), fill="navy")
    else:
        draw.ellipse((20, 5, 60, 60), fill="darkred")
    arr = np.asarray(image, dtype=float)
    if noise:
        arr = arr + np.random.default_rng(0).normal(0, noise, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def test_hamming_matrix_counts_differing_bits():
    bits = np.array([[0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 1, 1]], dtype=bool)
    assert hamming_matrix(bits, bits).tolist() == [[0, 2, 0], [2, 0, 2], [0, 2, 0]]


def test_near_copies_group_and_different_pictures_do_not():
    images = {"a": _shape("square"), "a_noisy": _shape("square", noise=4), "a_shifted": _shape("square", 1),
              "b": _shape("stripes"), "c": _shape("disc")}
    bits = {k: phash_bits(v) for k, v in images.items()}
    groups = near_duplicate_groups(np.stack(list(bits.values())), max_distance=6)
    assert groups[0] == groups[1] == groups[2] and len(set(groups.tolist())) == 3
    result = dedupe(["a", "a", "a_noisy", "a_shifted", "b", "c"], bits, max_distance=6)
    counts = (result.images, result.unique_exact, result.unique_perceptual, result.largest_group)
    assert counts == (6, 5, 3, 4)
    assert abs(result.duplicate_share - 0.5) < 1e-12
    assert dedupe(["a", "b"], bits, max_distance=0).unique_perceptual == 2


def test_dedupe_run_counts_the_collapsed_null_prompts(probed_run):
    with RunStore.open(probed_run) as store:
        result = dedupe_run(store)
        images = store.count_images()
    assert result["run"]["images"] == images
    # "", " ", ".", ",", ":", ";", "?", "!" become the same ids, so with shared seeds 8 prompts give one set.
    assert result["run"]["unique_exact"] <= images - 7 * 2 * 6
    blank = [g for g in result["groups"] if g["prompt_key"] == "normalised:."]
    assert len(blank) == 2 and all(g["images"] == 6 for g in blank)

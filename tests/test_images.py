"""crayonbox/model/images.py: each conversion keeps its own resampling and rounding (trained VQGANs and judges
depend on them), spelled out here against PIL and numpy directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from crayonbox.errors import CrayonboxError
from crayonbox.model.images import as_rgb_array, make_grid, pixels_of, to_pil, to_pixels, to_unit


def noise(size: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)


def test_to_pil_clamps_and_rounds_half_to_even():
    pixels = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 127.5 / 255, 1.0, 2.0]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    (image,) = to_pil(pixels)
    assert image.mode == "RGB" and image.size == (7, 1)
    assert np.asarray(image)[0, :, 0].tolist() == [0, 0, 0, 2, 128, 255, 255]


def test_pixels_of_resizes_with_lanczos_to_uint8_chw():
    image = noise(40, mode="RGBA")
    expected = np.asarray(image.resize((16, 16), Image.Resampling.LANCZOS).convert("RGB")).transpose(2, 0, 1)
    out = pixels_of(image, 16)
    assert out.dtype == np.uint8 and out.shape == (3, 16, 16) and out.flags.c_contiguous
    assert np.array_equal(out, expected)
    same = noise(16, seed=1)
    assert np.array_equal(pixels_of(same, 16), np.asarray(same).transpose(2, 0, 1))  # no resize at its size


def test_to_unit_divides_by_255():
    pixels = torch.tensor([0, 1, 128, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    assert torch.equal(to_unit(pixels), pixels.float() / 255.0)


def test_to_pixels_resizes_bilinear_and_takes_arrays():
    image = noise(40, seed=2)
    expected = torch.from_numpy(np.array(image.resize((16, 16), Image.Resampling.BILINEAR))).permute(2, 0, 1)
    out = to_pixels([image, np.asarray(image)], 16)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out[0], expected.float() / 255.0) and torch.equal(out[0], out[1])
    assert to_pixels([], 8).shape == (0, 3, 8, 8)


def test_as_rgb_array_converts_images_and_rejects_other_arrays():
    image = noise(8, seed=3, mode="RGBA")
    assert np.array_equal(as_rgb_array(image), np.asarray(image.convert("RGB")))
    array = np.asarray(noise(8, seed=4))
    assert as_rgb_array(array) is array
    for bad in (array[..., 0], array.astype(np.float32), np.zeros((8, 8, 4), np.uint8)):
        with pytest.raises(CrayonboxError, match="H×W×3 uint8"):
            as_rgb_array(bad)


def test_make_grid_tiles_row_major():
    tiles = [Image.new("RGB", (2, 2), (i, 0, 0)) for i in range(5)]
    grid = make_grid(tiles)
    assert grid.size == (6, 4)  # 3 columns (ceil √5), 2 rows, the last cells white
    assert grid.getpixel((2, 2)) == (4, 0, 0) and grid.getpixel((4, 2)) == (255, 255, 255)
    assert make_grid(tiles, columns=5).size == (10, 2)
    with pytest.raises(CrayonboxError):
        make_grid([])

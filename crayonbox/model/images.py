"""Image ⇄ array ⇄ tensor conversions, in one place for the generator, the trainers, the judge and the lab.

Each keeps its own resampling, because trained weights depend on it: `pixels_of` (Lanczos) makes the VQGAN's
training and encoding inputs, so the token parquets a transformer learned from; `to_pixels` (bilinear) makes
the judge's inputs (training and reading) and the VQGAN round trip. Merging them would change both.

    pixels_of(pil, 64)      # uint8 (3, 64, 64), for a uint8 batch tensor
    to_unit(batch)          # uint8 (B, 3, H, W) → float in [0, 1], the VQGAN's input
    to_pixels(images, 64)   # PIL images or arrays → float (B, 3, 64, 64) in [0, 1]
    to_pil(decoded)         # float (B, 3, H, W) in [0, 1] → PIL images
    as_rgb_array(image)     # PIL image or array → H×W×3 uint8 RGB (the lab's instruments read these)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from crayonbox.errors import CrayonboxError

ImageLike = Image.Image | np.ndarray  # PIL image (any mode) or an H×W×3 uint8 RGB array


def to_pil(pixels: Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] → PIL RGB images."""
    arr = (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def make_grid(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile images row-major into one picture (3×3 for nine)."""
    if not images:
        raise CrayonboxError("no images to put in a grid")
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    w, h = images[0].size
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * w, (i // columns) * h))
    return grid


def pixels_of(image: Image.Image, resolution: int) -> np.ndarray:
    """A PIL image as uint8 (3, res, res), resized with Lanczos when its size differs."""
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()


def to_unit(pixels: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) → float in [0, 1]."""
    return pixels.float() / 255.0


def to_pixels(images: Sequence[ImageLike], size: int) -> Tensor:
    """PIL images or H×W×3 uint8 RGB arrays → (B, 3, size, size) in [0, 1], resized (bilinear) if needed."""
    arrays = []
    for image in images:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        pil = pil.convert("RGB")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(pil, dtype=np.uint8))
    if not arrays:
        return torch.zeros(0, 3, size, size)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """An H×W×3 uint8 RGB array from a PIL image or an array (RGB order, never BGR)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise CrayonboxError(f"expected an H×W×3 uint8 RGB array, got shape {arr.shape}, dtype {arr.dtype}")
    return arr

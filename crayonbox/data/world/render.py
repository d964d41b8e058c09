"""Drawing the world: emoji sprites from Noto Color Emoji, procedural backgrounds, and alpha compositing.

Noto Color Emoji is a colour *bitmap* font that loads only at pixel size 109, and its skin tones, ZWJ
professions and flags lay out as one glyph only through raqm (without it 2,482 of 3,655 sequences fall apart).
So we check both up front, render each sequence once at 109 px, crop it, and cache premultiplied sprites per
target size (../shared/reference/offline-assets.md §1a).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from crayonbox.errors import CrayonboxError

DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_ENV = "CRAYONBOX_EMOJI_FONT"  # overrides the Debian path (e.g. a copy of the font elsewhere)
FONT_PIXEL_SIZE = 109  # the only size the CBDT bitmap strikes accept
CANVAS = (160, 128)  # one glyph is 136 px wide (its advance) and at most 128 px tall

# Named background colours; the caption words live in lexicon.COLOUR_WORDS.
COLOURS = {
    "red": (214, 39, 40), "orange": (255, 140, 20), "yellow": (250, 220, 50), "green": (44, 160, 44),
    "blue": (31, 100, 200), "purple": (130, 70, 180), "pink": (245, 150, 190), "brown": (140, 86, 55),
    "black": (20, 20, 20), "white": (245, 245, 245), "grey": (128, 128, 128),
}
BACKGROUND_KINDS = ("plain", "gradient", "stripes", "checks", "dots")


def font_path() -> Path:
    """The emoji font to use: $CRAYONBOX_EMOJI_FONT or Debian's fonts-noto-color-emoji path."""
    return Path(os.environ.get(FONT_ENV) or DEFAULT_FONT)


def load_emoji_font(path: Path | None = None) -> ImageFont.FreeTypeFont:
    """Load Noto Color Emoji at 109 px, or fail with what to install."""
    if not features.check("raqm"):
        raise CrayonboxError("Pillow was built without raqm, so skin-tone and ZWJ emoji would fall apart into "
                             "several glyphs; install the Pillow wheel from PyPI (it bundles raqm) and "
                             "`apt-get install libfribidi0`")
    path = Path(path) if path else font_path()
    if not path.exists():
        raise CrayonboxError(f"emoji font not found at {path}; install it with "
                             f"`apt-get install fonts-noto-color-emoji` or point ${FONT_ENV} at NotoColorEmoji.ttf")
    try:
        font = ImageFont.truetype(str(path), FONT_PIXEL_SIZE, layout_engine=ImageFont.Layout.RAQM)
    except OSError as e:
        raise CrayonboxError(f"cannot load {path} at {FONT_PIXEL_SIZE} px ({e}); it must be the CBDT "
                             "Noto Color Emoji from fonts-noto-color-emoji") from None
    # A ZWJ profession with a tone must be one 136-px glyph; several glyphs mean a broken shaping stack.
    if round(font.getlength("\U0001F469\U0001F3FD\u200d\u2695\ufe0f")) != 136:
        raise CrayonboxError("raqm is present but does not shape emoji ZWJ sequences (is libfribidi0 "
                             "installed? `apt-get install libfribidi0`)")
    return font


def render_glyph(font: ImageFont.FreeTypeFont, seq: str) -> Image.Image:
    """One emoji sequence at 109 px as an RGBA image cropped to its visible pixels."""
    canvas = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), seq, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise CrayonboxError(f"emoji {seq!r} ({' '.join(f'{ord(c):X}' for c in seq)}) renders empty with "
                             "this font; remove it from the world config")
    return canvas.crop(box)


class SpriteBank:
    """Rendered sprites, cached per (sequence, side in px) as premultiplied float32 RGB and alpha arrays."""

    def __init__(self, font: ImageFont.FreeTypeFont):
        self.font = font
        self._glyphs: dict[str, Image.Image] = {}
        self._sprites: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def glyph(self, seq: str) -> Image.Image:
        """The cropped 109-px RGBA glyph (rendered once)."""
        if seq not in self._glyphs:
            self._glyphs[seq] = render_glyph(self.font, seq)
        return self._glyphs[seq]

    def sprite(self, seq: str, side: int) -> tuple[np.ndarray, np.ndarray]:
        """(premultiplied RGB h×w×3, alpha h×w×1), both float32 in 0..1, fitting a side×side box."""
        key = (seq, side)
        if key not in self._sprites:
            glyph = self.glyph(seq)
            scale = side / max(glyph.size)
            size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
            # resize in premultiplied space ("RGBa") so transparent pixels don't bleed dark fringes
            small = glyph.convert("RGBa").resize(size, Image.Resampling.LANCZOS)
            arr = np.asarray(small, dtype=np.float32) / 255.0
            self._sprites[key] = (arr[..., :3], arr[..., 3:])
        return self._sprites[key]


def skin_fraction(bank: SpriteBank, light_seq: str, dark_seq: str) -> float:
    """Share of a sprite's visible pixels that change between its 🏻 and 🏿 renders: its skin area.
    Noto swaps one palette on identical geometry, so the diff is exactly the skin (offline-assets §1a)."""
    light = np.asarray(bank.glyph(light_seq), dtype=np.int16)
    dark = np.asarray(bank.glyph(dark_seq), dtype=np.int16)
    if light.shape != dark.shape:
        return 0.0
    visible = light[..., 3] > 0
    changed = (np.abs(light[..., :3] - dark[..., :3]).sum(-1) > 30) & visible
    return float(changed.sum() / max(1, visible.sum()))


def background(rng: np.random.Generator, kind: str, colour: str, colour2: str, side: int) -> np.ndarray:
    """A side×side×3 float32 background in 0..1: plain (with faint noise), gradient, stripes, checks or dots."""
    base = np.array(COLOURS[colour], dtype=np.float32) / 255.0
    other = np.array(COLOURS[colour2], dtype=np.float32) / 255.0
    if kind == "plain":
        noise = rng.normal(0.0, 0.015, size=(side, side, 1)).astype(np.float32)
        return np.clip(base + noise, 0.0, 1.0) * np.ones((side, side, 3), np.float32)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)
    yy, xx = np.meshgrid(ramp, ramp, indexing="ij")
    if kind == "gradient":
        t = (yy if rng.random() < 0.5 else xx)[..., None]
        return base * (1 - t) + other * t
    period = max(4, int(side * rng.uniform(0.12, 0.2)))
    iy, ix = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    if kind == "stripes":
        coord = [iy, ix, iy + ix][rng.integers(3)]  # horizontal, vertical or diagonal
        mask = (coord // (period // 2 or 1)) % 2 == 0
    elif kind == "checks":
        mask = ((iy // period) + (ix // period)) % 2 == 0
    elif kind == "dots":
        cy, cx = iy % period - period / 2, ix % period - period / 2
        mask = cy**2 + cx**2 > (period * 0.28) ** 2
    else:
        raise CrayonboxError(f"unknown background kind {kind!r}; use one of {BACKGROUND_KINDS}")
    return np.where(mask[..., None], base, other).astype(np.float32)


def paste(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend a premultiplied sprite onto the canvas in place, clipped to the canvas edges."""
    h, w = alpha.shape[:2]
    y0, x0, y1, x1 = max(0, y), max(0, x), min(canvas.shape[0], y + h), min(canvas.shape[1], x + w)
    if y0 >= y1 or x0 >= x1:
        return
    sy, sx = y0 - y, x0 - x
    src_rgb, src_a = rgb[sy:sy + y1 - y0, sx:sx + x1 - x0], alpha[sy:sy + y1 - y0, sx:sx + x1 - x0]
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - src_a
    region += src_rgb


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Float canvas in 0..1 → uint8 RGB."""
    return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

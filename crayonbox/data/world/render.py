"""Drawing the world: emoji sprites from Noto Color Emoji, procedural backgrounds, and alpha compositing.

Noto Color Emoji is a colour *bitmap* font that loads only at pixel size 109, and its skin tones, ZWJ
professions and flags lay out as one glyph only through raqm (without it 2,482 of 3,655 sequences fall apart).
So we check both up front, render each sequence once at 109 px, crop it, and cache premultiplied sprites per
target size.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
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
        raise CrayonboxError("Pillow was built without raqm, so skin-tone and ZWJ emoji would fall apart "
                             "into several glyphs; install the Pillow wheel from PyPI (it bundles raqm) and "
                             "`apt-get install libfribidi0`")
    path = Path(path) if path else font_path()
    if not path.exists():
        raise CrayonboxError(f"emoji font not found at {path}; install it with `apt-get install "
                             f"fonts-noto-color-emoji` or point ${FONT_ENV} at NotoColorEmoji.ttf")
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
            alpha = arr[..., 3:]
            # LANCZOS rings a little at edges; premultiplied colour above alpha would brighten the canvas
            self._sprites[key] = (np.minimum(arr[..., :3], alpha), alpha)
        return self._sprites[key]


def skin_fraction(bank: SpriteBank, light_seq: str, dark_seq: str) -> float:
    """Share of a sprite's visible pixels that change between its 🏻 and 🏿 renders: its skin area.
    Noto swaps one palette on identical geometry, so the diff is exactly the skin."""
    light = np.asarray(bank.glyph(light_seq), dtype=np.int16)
    dark = np.asarray(bank.glyph(dark_seq), dtype=np.int16)
    if light.shape != dark.shape:
        return 0.0
    visible = light[..., 3] > 0
    changed = (np.abs(light[..., :3] - dark[..., :3]).sum(-1) > 30) & visible
    return float(changed.sum() / max(1, visible.sum()))


@functools.lru_cache(maxsize=8)
def _grids(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column indices and a 0..1 ramp for a side×side image (cached: one per image size)."""
    iy, ix = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return iy, ix, np.linspace(0.0, 1.0, side, dtype=np.float32)


def background(rng: np.random.Generator, kind: str, colour: str, colour2: str | None,
               side: int) -> np.ndarray:
    """A side×side×3 float32 background in 0..1: plain, gradient (colour → colour2), stripes, checks or dots.
    Each colour is jittered a little per image, so "blue" is a family of blues, not one RGB value."""
    jittered = np.array(COLOURS[colour], np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
    base = np.minimum(np.maximum(jittered, 0), 255) / 255
    if kind == "plain":
        canvas = np.empty((side, side, 3), np.float32)
        canvas[:] = base
        return canvas
    iy, ix, ramp = _grids(side)
    if kind == "gradient":
        other = np.array(COLOURS[colour2], dtype=np.float32) / 255.0
        t = ramp[:, None, None] if rng.random() < 0.5 else ramp[None, :, None]
        return np.broadcast_to(base * (1 - t) + other * t, (side, side, 3)).copy()
    # patterns alternate the colour with a lighter (or, for light colours, darker) shade of itself, so that
    # "a blue striped background" is all the caption needs to say
    other = base + (1.0 - base) * 0.5 if base.mean() < 0.6 else base * 0.6
    period = max(4, int(side * rng.uniform(0.12, 0.2)))
    if kind == "stripes":
        coord = [iy, ix, iy + ix][int(rng.integers(3))]  # horizontal, vertical or diagonal
        mask = (coord // (period // 2)) % 2 == 0
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
    """Float canvas in 0..1 → uint8 RGB. No clip needed: backgrounds are in 0..1 and premultiplied sprites
    (colour ≤ alpha) keep every blend in 0..1; a rounding overshoot still truncates to 255."""
    return (canvas * 255.0 + 0.5).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray, level: int = 6) -> bytes:
    """uint8 RGB h×w×3 → PNG bytes (8-bit RGB, no filter, one IDAT). Twice as fast as PIL's writer on
    64-px images, where PIL's per-call overhead outweighs the compression itself."""
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + width * 3), np.uint8)  # a leading 0 per row: filter type "None"
    rows[:, 1:] = pixels.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, colour type 2 = RGB
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + _png_chunk(b"IEND", b""))

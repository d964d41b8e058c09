"""The pixel skin-tone meter: no learning, just the five Noto skin colours and a distance in CIELAB.

Noto Color Emoji paints skin with one flat colour per Fitzpatrick-like tone, so a
pixel's tone is the palette colour it is closest to — if it is close to any. Published skin-tone code gets
exactly this step wrong: OpenCV's `imread` gives BGR but was converted as
RGB, and its 8-bit Lab (L·255/100, a+128, b+128) was fed to formulas meant for real CIELAB. So this module
converts sRGB → CIELAB by the textbook formulas itself (D65 white, the sRGB transfer curve undone first),
takes RGB only, and is unit-tested on flat swatches of every palette colour.

Per image: every pixel within `max_distance` ΔE*ab of a palette colour votes for it, unless it sits near
the midpoint of two tones (a blend: anti-aliased edges, VQGAN blur) or has the colour of the background
(estimated from the image border, so a brown backdrop never reads as tone 4). Then:
  none     no (or only a few stray) skin pixels, or the skin is the yellow default emoji
  1 … 5    one tone holds at least `dominance` of the skin pixels
  mixed    two tones each hold at least `mixed_share` (two people of different tones)
  unclear  too few skin pixels to decide, mostly blends, no dominant tone, or skin hidden by the background
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from crayonbox.errors import CrayonboxError
from crayonbox.lab.instruments.base import NONE, UNCLEAR, ImageLike, Instrument
from crayonbox.model.images import as_rgb_array

# Dominant skin RGB of each Noto tone, identical across person emoji.
TONE_RGB = {"1": (249, 221, 189), "2": (224, 187, 149), "3": (186, 141, 104), "4": (165, 108, 67),
            "5": (112, 83, 74)}
# The no-modifier default skin, measured as the dominant colour of the skin mask of untoned 👩 👨 🧑 🧑‍⚕️.
YELLOW_RGB = (255, 202, 40)
TONES = tuple(TONE_RGB)
MIXED = "mixed"
OUTCOMES = (*TONES, MIXED, NONE, UNCLEAR)

# sRGB (D65) → CIE XYZ, IEC 61966-2-1; XYZ of the D65 reference white.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L* 0..100, a*, b* unscaled) of sRGB colours given as uint8 or 0..255 values in RGB order.

    Not OpenCV's 8-bit Lab: L* is not multiplied by 255/100 and a*, b* carry no +128 offset."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], axis=-1)


PALETTE_RGB = np.array([*TONE_RGB.values(), YELLOW_RGB], dtype=np.uint8)  # rows: tones 1..5, then yellow
PALETTE_LAB = srgb_to_lab(PALETTE_RGB)
YELLOW_INDEX = len(TONES)

# Noto's *non-skin* colours close to a skin colour (dog and pig pink, bear and goat browns, bread, monkey fur,
# the yellow emoji's hair): a pixel nearer one of these than to the palette is not skin. Measured from the
# default world's untoned sprites by `measure_decoys` (tests/lab/test_skin_tone.py re-measures them).
DEFAULT_DECOYS = (
    (255, 210, 177), (133, 91, 82), (166, 95, 62), (181, 136, 93), (135, 91, 79), (182, 136, 89),
    (161, 93, 56), (255, 235, 202), (233, 187, 145), (255, 190, 31), (255, 229, 178), (160, 93, 67),
    (132, 87, 78), (109, 76, 65), (254, 192, 0), (183, 146, 119), (254, 184, 4), (121, 85, 72),
    (252, 236, 200), (109, 73, 56), (251, 187, 2), (255, 213, 29), (252, 194, 25), (98, 67, 57),
    (107, 71, 51),
)


@dataclass
class SkinToneConfig:
    """Thresholds of the meter. Distances are CIE76 ΔE*ab; the closest two tones (1–2) are 12.8 apart."""

    max_distance: float = 8.0  # a pixel this close to a palette colour (and closer than to any decoy) is skin
    blend_ratio: float = 0.6  # d(nearest tone) / d(second tone) above this: too close to call
    blend_width: float = 2.5  # ΔE off the line between two neighbouring tones that still makes a blend
    decoys: tuple[tuple[int, int, int], ...] = DEFAULT_DECOYS  # known non-skin colours near skin colours
    # The skin colours looked for: tones 1–5, then the yellow default. Noto's own by default; a meter for a
    # model's images uses the colours its VQGAN paints those skins with (`calibrated_palette`).
    palette: tuple[tuple[int, int, int], ...] = tuple(map(tuple, PALETTE_RGB.tolist()))
    denoise: bool = True  # 3×3 median first (images ≥ 32 px): noise must not scatter skin off the palette
    background_distance: float = 6.0  # pixels this close to a dominant border colour are background
    border: int = 2  # width in px of the ring that estimates the background (at 64 px; scaled with size)
    border_share: float = 0.04  # a colour must fill this share of the ring to count as background
    noise_share: float = 0.0025  # skin pixels below this share of the image are strays → none
    min_share: float = 0.003  # skin pixels below this share (but above noise) → unclear
    dominance: float = 0.6  # the top tone's share of tone pixels needed for a single-tone answer
    mixed_share: float = 0.25  # a second tone with this share of tone pixels makes the image "mixed"

    def validate(self) -> SkinToneConfig:
        """Check the thresholds make sense together; returns self."""
        if len(self.palette) != len(TONES) + 1:
            raise CrayonboxError(f"skin tone: palette needs {len(TONES) + 1} colours (tones 1–5, yellow), "
                                 f"got {len(self.palette)}")
        if not 0 < self.max_distance < 30:
            raise CrayonboxError(f"skin tone: max_distance {self.max_distance} must be in (0, 30) ΔE")
        if not 0 < self.blend_ratio <= 1:
            raise CrayonboxError(f"skin tone: blend_ratio {self.blend_ratio} must be in (0, 1]")
        if not 0 <= self.noise_share <= self.min_share < 1:
            raise CrayonboxError("skin tone: need 0 ≤ noise_share ≤ min_share < 1")
        if not 0.5 <= self.dominance <= 1 or not 0 < self.mixed_share <= 0.5:
            raise CrayonboxError("skin tone: need dominance in [0.5, 1] and mixed_share in (0, 0.5]")
        return self


@dataclass
class SkinReading:
    """What the meter saw in one image: the label and the pixel counts behind it."""

    label: str
    tone_pixels: dict[str, int]  # per tone 1..5
    yellow_pixels: int  # the no-modifier default skin
    blend_pixels: int  # skin-coloured but between two tones
    hidden_tones: list[str]  # tones whose colour the backdrop itself has (such skin is masked with it)
    pixels: int  # image area

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _background_lab(rgb: np.ndarray, cfg: SkinToneConfig) -> np.ndarray:
    """Dominant colours of the image border (K×3 Lab): the backdrop, plain or patterned."""
    h, w = rgb.shape[:2]
    width = max(1, round(cfg.border * min(h, w) / 64))
    sides = (rgb[:width], rgb[-width:], rgb[width:-width, :width], rgb[width:-width, -width:])
    ring = np.concatenate([side.reshape(-1, 3) for side in sides])
    # Distinct colours with their counts keep the pairwise distances small (a plain backdrop has a handful).
    colours, counts = np.unique(ring // 2 * 2, axis=0, return_counts=True)
    lab = srgb_to_lab(colours)
    near = np.linalg.norm(lab[:, None, :] - lab[None, :, :], axis=-1) < cfg.background_distance
    # Greedy mode-seeking: the most crowded ring colour, its neighbours removed, repeat. A gradient's ramp
    # splits into several groups, each still dense enough along the border to qualify.
    found, alive = [], np.ones(len(lab), dtype=bool)
    while alive.any():
        crowd = (near & alive[None, :]) @ counts * alive
        best = int(crowd.argmax())
        if crowd[best] < cfg.border_share * len(ring):
            break
        members = near[best] & alive
        found.append(np.average(lab[members], axis=0, weights=counts[members]))
        alive &= ~members
    return np.array(found).reshape(-1, 3)


def _denoised(rgb: np.ndarray) -> np.ndarray:
    """3×3 median per channel: flat skin survives, single-pixel noise and JPEG ringing do not."""
    if min(rgb.shape[:2]) < 32:
        return rgb
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.MedianFilter(3)))


@functools.lru_cache(maxsize=8)
def _codebook(palette: tuple[tuple[int, int, int], ...], decoys: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """Lab rows: the 5 tones, yellow, then the decoys."""
    rows = np.concatenate([np.array(palette, dtype=np.uint8), np.array(decoys, dtype=np.uint8).reshape(-1, 3)])
    return srgb_to_lab(rows).astype(np.float32)


def _distances(lab: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distances (pixels × centres), via |x|² − 2x·c + |c|² (one matrix product)."""
    sq = (lab**2).sum(1, keepdims=True) - 2.0 * lab @ centres.T + (centres**2).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def _distance_to_tone_lines(lab: np.ndarray, tones: np.ndarray) -> np.ndarray:
    """Distance of each colour to the nearest segment between two neighbouring tones (1–2, …, 4–5; `tones`:
    their Lab rows), counted only strictly between the ends (sRGB mixes of two tones stay within 1 ΔE of that
    segment)."""
    best = np.full(len(lab), np.inf, dtype=np.float32)
    for a, b in zip(tones[:-1], tones[1:], strict=True):
        axis = b - a
        t = (lab - a) @ axis / (axis @ axis)
        gap = np.linalg.norm(lab - (a + np.clip(t, 0, 1)[:, None] * axis), axis=1)
        best = np.where((t > 0) & (t < 1), np.minimum(best, gap), best)
    return best


def _solid(mask: np.ndarray) -> np.ndarray:
    """Opening with a 2×2 block (scaled with size): keeps areas of skin, drops stray pixels and the one-pixel
    lines where an outline meets a background (their blends can land on any palette colour)."""
    side = max(2, round(2 * min(mask.shape) / 64))
    return ndimage.binary_opening(mask, structure=np.ones((side, side), dtype=bool))


def read_skin(image: ImageLike, cfg: SkinToneConfig | None = None) -> SkinReading:
    """Measure one image (any size, RGB)."""
    cfg = cfg or SkinToneConfig()
    rgb = as_rgb_array(image)
    rgb = _denoised(rgb) if cfg.denoise else rgb
    h, w = rgb.shape[:2]
    flat = srgb_to_lab(rgb.reshape(-1, 3)).astype(np.float32)
    codebook = _codebook(tuple(map(tuple, cfg.palette)), tuple(cfg.decoys))
    dist = _distances(flat, codebook)
    nearest = dist.argmin(1)
    d1 = dist[np.arange(len(dist)), nearest]
    # Skin: nearest to a palette colour (not to a decoy) and close to it.
    skin = (nearest <= YELLOW_INDEX) & (d1 <= cfg.max_distance)

    background = _background_lab(rgb, cfg)
    hidden: list[str] = []
    not_background = np.ones(len(flat), dtype=bool)
    if len(background):
        not_background = _distances(flat, background.astype(np.float32)).min(1) > cfg.background_distance
        skin &= not_background
        bg_to_palette = _distances(codebook[:YELLOW_INDEX], background.astype(np.float32))
        hidden = [TONES[i] for i in range(len(TONES)) if bg_to_palette[i].min() <= cfg.background_distance]

    # Clear skin is near one tone and much nearer to it than to any other tone; a blend lies on the line
    # between two neighbouring tones (anti-aliased edges, blur), between their clear zones. Decoys veto only
    # clear votes: a colour on the line between two tones stays ambiguous whatever else is painted with it.
    tone_dist = np.sort(dist[:, :YELLOW_INDEX], axis=1)
    ambiguous = (nearest != YELLOW_INDEX) & (tone_dist[:, 0] > cfg.blend_ratio * tone_dist[:, 1])
    off_line = _distance_to_tone_lines(flat, codebook[:YELLOW_INDEX])
    blend = not_background & ~(skin & ~ambiguous) & (off_line <= cfg.blend_width)
    skin &= ~ambiguous
    clear = skin.reshape(h, w)
    nearest = nearest.reshape(h, w)
    votes = [int(_solid(clear & (nearest == k)).sum()) for k in range(YELLOW_INDEX + 1)]
    tone_pixels = dict(zip(TONES, votes[:YELLOW_INDEX], strict=True))
    blend_pixels = int(_solid(blend.reshape(h, w)).sum())
    label = _decide(tone_pixels, votes[YELLOW_INDEX], blend_pixels, hidden, h * w, cfg)
    return SkinReading(label, tone_pixels, votes[YELLOW_INDEX], blend_pixels, hidden, h * w)


def _decide(tone_pixels: dict[str, int], yellow: int, blend: int, hidden: list[str], area: int,
            cfg: SkinToneConfig) -> str:
    toned = sum(tone_pixels.values())
    if toned + blend < cfg.noise_share * area:
        # No skin we can see. On a backdrop that has a tone's own colour, that skin would be masked with
        # the backdrop: say so rather than claim nobody is there — unless yellow default skin plainly is.
        return UNCLEAR if hidden and yellow < cfg.min_share * area else NONE
    if toned + blend < cfg.min_share * area or blend > toned:
        return UNCLEAR
    ranked = sorted(tone_pixels.items(), key=lambda kv: -kv[1])
    (top, top_n), (_, second_n) = ranked[0], ranked[1]
    if second_n >= cfg.mixed_share * toned and second_n >= cfg.min_share * area:
        return MIXED
    return top if top_n >= cfg.dominance * toned else UNCLEAR


def calibrated_config(clean: Sequence[ImageLike], through: Sequence[ImageLike],
                      base: SkinToneConfig | None = None, min_pixels: int = 20,
                      match: float = 3.0) -> SkinToneConfig:
    """A meter config for images drawn through a VQGAN: each palette colour becomes the colour the VQGAN paints
    it with. `clean` are renders, `through` the same renders after encode → decode (same order). For each
    palette colour, the pixels of the clean renders within `match` ΔE of it, away from edges (eroded: a VQGAN
    blurs edges into blends) and off the backdrop, are looked up in the round trips; the per-channel median
    there is the new colour. A colour seen in fewer than `min_pixels` such pixels keeps its old value. Decoys
    within `match` ΔE of a new colour are dropped (they would split real skin in two)."""
    base = base or SkinToneConfig()
    centres = srgb_to_lab(np.array(base.palette, dtype=np.uint8)).astype(np.float32)
    gathered: list[list[np.ndarray]] = [[] for _ in base.palette]
    for image, drawn in zip(clean, through, strict=True):
        rgb, out = as_rgb_array(image), as_rgb_array(drawn)
        if out.shape != rgb.shape:
            out = np.asarray(Image.fromarray(out).resize(rgb.shape[1::-1], Image.Resampling.BILINEAR))
        lab = srgb_to_lab(rgb.reshape(-1, 3)).astype(np.float32)
        dist = _distances(lab, centres)
        background = _background_lab(rgb, base)
        off_backdrop = (np.ones(len(lab), dtype=bool) if not len(background)
                        else _distances(lab, background.astype(np.float32)).min(1) > base.background_distance)
        for k in range(len(centres)):
            area = ((dist[:, k] <= match) & off_backdrop).reshape(rgb.shape[:2])
            core = ndimage.binary_erosion(area, structure=np.ones((3, 3), dtype=bool))
            if core.any():
                gathered[k].append(out[core])
    palette = tuple(tuple(int(c) for c in np.median(np.concatenate(rows), axis=0).round())
                    if rows and sum(len(r) for r in rows) >= min_pixels else tuple(old)
                    for rows, old in zip(gathered, base.palette, strict=True))
    new_lab = srgb_to_lab(np.array(palette, dtype=np.uint8))
    decoys = tuple(d for d in base.decoys
                   if np.linalg.norm(new_lab - srgb_to_lab(np.array(d, dtype=np.uint8)), axis=1).min() > match)
    return replace(base, palette=palette, decoys=decoys)


def measure_decoys(glyphs: dict[str, Image.Image], min_share: float = 0.03,
                   near: tuple[float, float] = (3.0, 10.0),
                   merge: float = 2.0) -> tuple[tuple[int, int, int], ...]:
    """Non-skin colours of untoned emoji glyphs (seq → RGBA) that lie `near` ΔE of a palette colour and fill
    at least `min_share` of a glyph, most used first, merged within `merge` ΔE.

    Colours nearer than 3 ΔE are left out on purpose: a decoy that close would split real skin in two."""
    weight: dict[tuple[int, int, int], float] = {}
    for glyph in glyphs.values():
        rgba = np.asarray(glyph.convert("RGBA"))
        opaque = rgba[rgba[..., 3] == 255][:, :3]
        if not len(opaque):
            continue
        colours, counts = np.unique(opaque, axis=0, return_counts=True)
        for colour, count in zip(colours, counts, strict=True):
            if count >= min_share * len(opaque):
                key = tuple(int(c) for c in colour)
                weight[key] = weight.get(key, 0.0) + count / len(opaque)
    if not weight:
        return ()
    colours = np.array(list(weight), dtype=np.uint8)
    lab = srgb_to_lab(colours)
    to_palette = np.linalg.norm(lab[:, None, :] - PALETTE_LAB[None, :, :], axis=-1).min(1)
    chosen: list[int] = []
    for i in np.argsort(-np.array(list(weight.values())), kind="stable"):
        distinct = all(np.linalg.norm(lab[i] - lab[j]) > merge for j in chosen)
        if near[0] <= to_palette[i] <= near[1] and distinct:
            chosen.append(int(i))
    return tuple(tuple(int(c) for c in colours[i]) for i in chosen)


class SkinToneMeter(Instrument):
    """Instrument with one attribute, "skin_tone": 1–5, mixed, none, unclear."""

    name = "skin_tone"

    def __init__(self, config: SkinToneConfig | None = None):
        self.config = (config or SkinToneConfig()).validate()

    @classmethod
    def for_world(cls, world: Any, **overrides: Any) -> SkinToneMeter:
        """A meter whose decoys come from this world's untoned sprites (`world`: a world.World)."""
        seqs = sorted({e.seq for item in world.items.values() for e in item.variants.values()
                       if e.skin_tone is None})
        decoys = measure_decoys({seq: world.bank.glyph(seq) for seq in seqs})
        return cls(SkinToneConfig(decoys=decoys, **overrides))

    def outcomes(self) -> dict[str, tuple[str, ...]]:
        return {"skin_tone": OUTCOMES}

    def read(self, images: Sequence[ImageLike]) -> list[SkinReading]:
        """Full readings (label plus pixel counts) for each image."""
        return [read_skin(image, self.config) for image in images]

    def measure(self, images: Sequence[ImageLike]) -> list[dict[str, str]]:
        return [{"skin_tone": r.label} for r in self.read(images)]

    def truth(self, world: dict[str, Any]) -> dict[str, str]:
        """The tone of every toned object in the scene: one tone, "mixed" for several, "none" for none
        (no person, or only yellow default emoji)."""
        objects = world.get("objects", [])
        tones = {str(o["skin_tone"]) for o in objects if o.get("skin_tone") not in (None, "none")}
        if not tones:
            return {"skin_tone": NONE}
        return {"skin_tone": tones.pop() if len(tones) == 1 else MIXED}

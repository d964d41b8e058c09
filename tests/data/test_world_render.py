"""Rendering sanity: the raqm + Noto stack, one glyph per ZWJ sequence, the fixed skin-tone palette."""

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFont, features

from crayonbox.data.world import render
from crayonbox.data.world.catalog import TONE_BY_NUMBER
from crayonbox.errors import CrayonboxError

# The dominant skin RGB of every Noto sprite, per modifier
PALETTE = {1: (249, 221, 189), 2: (224, 187, 149), 3: (186, 141, 104), 4: (165, 108, 67), 5: (112, 83, 74)}
HEALTH_WORKER = "\U0001F469\U0001F3FD\u200d\u2695\ufe0f"  # 👩🏽‍⚕️


@pytest.fixture(scope="module")
def bank():
    return render.SpriteBank(render.load_emoji_font())


def test_raqm_is_present():
    assert features.check("raqm")


def test_zwj_sequence_is_one_glyph_of_width_136(bank):
    assert round(bank.font.getlength(HEALTH_WORKER)) == 136
    glyph = bank.glyph(HEALTH_WORKER)
    assert glyph.width <= 136 and glyph.height <= 128  # one glyph's box, not three side by side
    # without raqm the same string falls apart into woman + tone + ZWJ + staff glyphs
    basic = ImageFont.truetype(str(render.font_path()), 109, layout_engine=ImageFont.Layout.BASIC)
    assert basic.getlength(HEALTH_WORKER) >= 2 * 136


def _dominant_skin(bank, base: str, tone: int) -> tuple[int, ...]:
    light = np.asarray(bank.glyph(base + TONE_BY_NUMBER[1]), dtype=int)
    dark = np.asarray(bank.glyph(base + TONE_BY_NUMBER[5]), dtype=int)
    skin = (np.abs(light[..., :3] - dark[..., :3]).sum(-1) > 30) & (light[..., 3] == 255)
    pixels = np.asarray(bank.glyph(base + TONE_BY_NUMBER[tone]))[skin][:, :3]
    return Counter(map(tuple, pixels.tolist())).most_common(1)[0][0]


@pytest.mark.parametrize("base", ["\U0001F469", "\U0001F9D1"])  # woman, person
@pytest.mark.parametrize("tone", [1, 2, 3, 4, 5])
def test_skin_tone_palette_per_modifier(bank, base, tone):
    assert _dominant_skin(bank, base, tone) == PALETTE[tone]


def test_skin_fraction_finds_invisible_tones(bank):
    snowboarder, woman = "\U0001F3C2", "\U0001F469"
    assert render.skin_fraction(bank, snowboarder + TONE_BY_NUMBER[1], snowboarder + TONE_BY_NUMBER[5]) == 0.0
    assert render.skin_fraction(bank, woman + TONE_BY_NUMBER[1], woman + TONE_BY_NUMBER[5]) > 0.5


def test_sprite_fits_its_box_and_keeps_colour(bank):
    rgb, alpha = bank.sprite("\U0001F97B", 32)  # sari
    assert max(alpha.shape[:2]) == 32 and alpha.shape[2] == 1
    assert rgb.dtype == np.float32 and (rgb <= alpha + 1e-5).all()  # premultiplied
    assert bank.sprite("\U0001F97B", 32)[0] is rgb  # cached


def test_missing_font_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv(render.FONT_ENV, str(tmp_path / "nope.ttf"))
    with pytest.raises(CrayonboxError, match="apt-get install fonts-noto-color-emoji"):
        render.load_emoji_font()


def test_missing_raqm_is_explained(monkeypatch):
    monkeypatch.setattr(render.features, "check", lambda name: False)
    with pytest.raises(CrayonboxError, match="raqm.*libfribidi0"):
        render.load_emoji_font()


def test_backgrounds():
    rng = np.random.default_rng(0)
    plain = render.background(rng, "plain", "blue", None, 16)
    assert plain.shape == (16, 16, 3) and np.ptp(plain.reshape(-1, 3), axis=0).max() == 0
    assert np.abs(plain[0, 0] * 255 - render.COLOURS["blue"]).max() <= 8  # jittered by at most 8
    gradient = render.background(rng, "gradient", "black", "white", 16)
    corners = sorted([gradient[0, 0].mean(), gradient[-1, -1].mean()])
    assert corners[0] < 0.15 and corners[1] > 0.9
    for kind in ("stripes", "checks", "dots"):
        pattern = render.background(rng, kind, "red", None, 32)
        assert len(np.unique(pattern.reshape(-1, 3), axis=0)) == 2  # the colour and its lighter shade
    with pytest.raises(CrayonboxError, match="unknown background kind"):
        render.background(rng, "plaid", "red", None, 8)


def test_paste_blends_and_clips():
    canvas = np.zeros((4, 4, 3), np.float32)
    rgb = np.full((2, 2, 3), 0.5, np.float32)  # premultiplied: white at alpha 0.5
    alpha = np.full((2, 2, 1), 0.5, np.float32)
    render.paste(canvas, rgb, alpha, 3, 3)  # only the top-left sprite pixel lands
    assert canvas[3, 3].tolist() == [0.5, 0.5, 0.5] and canvas[:3].sum() == 0 and canvas[3, :3].sum() == 0


def test_encode_png_round_trips():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.open(io.BytesIO(render.encode_png(pixels)))
    assert image.mode == "RGB" and image.size == (7, 5)
    assert (np.asarray(image) == pixels).all()

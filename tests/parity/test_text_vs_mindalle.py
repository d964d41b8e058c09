"""Our text path next to min-dalle 0.4.11's (`min_dalle.text_tokenizer.TextTokenizer`), given the same BPE.

Where they agree: plain ASCII prompts without punctuation get identical ids (min-dalle lowercases and gives
every word a `Ġ`, as our official normaliser's leading space does). Where they differ, on purpose, each
difference is pinned by its own test: min-dalle silently deletes non-ASCII, keeps punctuation, spells emoji
with underscores, and truncates with a plain slice that loses `</s>`.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from min_dalle.text_tokenizer import TextTokenizer

from crayonbox.text.normalize import NormalizerConfig, normalize
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe

TEXT_LENGTH = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = itertools.product(
        ("red", "blue", "green", "black", "white", "small"),
        ("car", "dog", "cat", "woman", "man", "bird"),
        ("on the beach", "in a forest", "in the city", "at night"),
    )
    captions = [normalize(f"a {adjective} {subject} {place}") for adjective, subject, place in words]
    path = tmp_path_factory.mktemp("bpe")
    train_bpe(captions, path, BPETrainingConfig(vocab_size=350, show_progress=False))
    return path


@pytest.fixture(scope="module")
def ours(folder: Path) -> Tokenizer:
    return Tokenizer.from_folder(folder)


@pytest.fixture(scope="module")
def mindalle(folder: Path) -> TextTokenizer:
    # Read the files exactly as min-dalle's `MinDalle.init_tokenizer` does (min_dalle.py:101-105).
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf8"))
    merges = (folder / "merges.txt").read_text(encoding="utf8").split("\n")[1:-1]
    return TextTokenizer(vocab, merges)


def mindalle_encoder_input(tokens: list[int]) -> list[list[int]]:
    """min-dalle's 2×64 encoder input (min_dalle.py:186-192): row 0 unconditional, row 1 the prompt."""
    if len(tokens) > TEXT_LENGTH:
        tokens = tokens[:TEXT_LENGTH]
    rows = [[1] * TEXT_LENGTH, [1] * TEXT_LENGTH]
    rows[0][:2] = [tokens[0], tokens[-1]]
    rows[1][: len(tokens)] = tokens
    return rows


def unpadded(ids: list[int]) -> list[int]:
    return [i for i in ids if i != 1]


@pytest.mark.parametrize(
    "prompt",
    [
        "a red car on the beach",
        "A Black Dog in a Forest",
        "a purple zebra",
        "a  red   car",
        "3 cats",
        "r2d2 at night",
        "a woman's car",
    ],
)
def test_plain_prompts_get_identical_ids(ours, mindalle, prompt):
    ids = ours.encode(prompt).ids
    assert ids == mindalle_encoder_input(mindalle.tokenize(prompt))[1]
    assert ours.unconditional().ids == mindalle_encoder_input(mindalle.tokenize(prompt))[0]


def test_raw_mode_with_a_leading_space_is_min_dalle_for_lowercase_words(ours, mindalle):
    raw = Tokenizer(ours.backend, NormalizerConfig("raw"))
    assert unpadded(raw.encode(" a red car").ids) == mindalle.tokenize("a red car")
    assert unpadded(raw.encode("a red car").ids) != mindalle.tokenize("a red car")  # first word lacks Ġ


def test_min_dalle_deletes_non_ascii_silently_ours_transliterates_and_says_so(ours, mindalle):
    assert mindalle.tokenize("café") == mindalle.tokenize("caf")
    cafe = ours.encode("café")
    assert cafe.normalized == " cafe" and cafe.ids == ours.encode("cafe").ids
    assert cafe.notes == ["unidecode transliterated Latin 'café' → 'cafe'"]


def test_a_hindi_prompt_is_the_unconditional_input_in_min_dalle(ours, mindalle):
    hindi = "साड़ी पहने एक महिला"  # "a woman wearing a sari"
    prompt_row, uncond_row = mindalle_encoder_input(mindalle.tokenize(hindi))[1], ours.unconditional().ids
    assert prompt_row == uncond_row  # every character deleted: nothing left to condition on
    official = ours.encode(hindi)
    assert official.ids != uncond_row and official.normalized == ' saadd " ii phne ek mhilaa'
    assert "unidecode transliterated Devanagari" in official.notes[0]
    multilingual = Tokenizer(ours.backend, NormalizerConfig("multilingual")).encode(hindi)
    assert ours.decode(multilingual.ids) == " " + hindi
    kept = f"kept Devanagari {hindi!r} as written (multilingual mode: unidecode is off)"
    assert multilingual.notes == [kept]


def test_min_dalle_keeps_punctuation_ours_normalises_it(ours, mindalle):
    assert mindalle.tokenize("a red car.") != mindalle.tokenize("a red car")
    assert ours.encode("a red car.").ids == ours.encode("a red car").ids
    # The blank-prompt family: min-dalle gives four different inputs, the official normaliser one: <s> Ġ </s>.
    blanks = ["", ".", ",", "?"]
    assert len({tuple(mindalle.tokenize(p)) for p in blanks}) == 4
    assert mindalle.tokenize("") == unpadded(ours.unconditional().ids)  # min-dalle's blank is unconditional
    assert len({tuple(ours.encode(p).ids) for p in blanks}) == 1
    assert unpadded(ours.encode("").ids) == [0, ours.backend.token_to_id("Ġ"), 2]


def test_min_dalle_glues_emoji_names_with_underscores(ours, mindalle):
    underscore = ours.backend.token_to_id("_")
    assert underscore in mindalle.tokenize("i ❤️ you")  # "red_heart"
    encoded = ours.encode("i ❤️ you")
    assert encoded.normalized == " i, red heart, you" and underscore not in encoded.ids


def test_min_dalle_truncation_loses_end_of_sentence(ours, mindalle):
    prompt = " ".join(["red car"] * 40)
    theirs = mindalle_encoder_input(mindalle.tokenize(prompt))
    mine = ours.encode(prompt).ids
    assert theirs[1][-1] != 2 and mine[-1] == 2  # they end mid-prompt; we end with </s>
    assert theirs[1][:63] == mine[:63]  # the same first 62 prompt tokens after <s>
    # min-dalle builds its unconditional row as [tokens[0], tokens[-1]] after the slice, so a long prompt
    # also corrupts the unconditional branch: it becomes <s> + the 63rd prompt token instead of <s> </s>.
    assert theirs[0][:2] != [0, 2] and ours.unconditional().ids[:2] == [0, 2]

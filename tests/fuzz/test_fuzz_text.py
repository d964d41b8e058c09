"""Fuzzing the official normaliser and the default tokenizer: for any Unicode text the normaliser returns a
str and never raises, the default tokenizer frames the result into exactly text_length ids, and normalising
the normaliser's output changes nothing (crayonbox.train.data.train_tokenizer relies on that)."""

from __future__ import annotations

from importlib.resources import files

import pytest
from fuzz_helpers import FAST, LONG
from hypothesis import example, given
from hypothesis import strategies as st

from crayonbox.text.normalize import NormalizerConfig, TextNormalizer
from crayonbox.text.tokenizer import Tokenizer

NORMALIZE = TextNormalizer(NormalizerConfig("official"))
TOKENIZER = Tokenizer.from_folder(files("crayonbox") / "assets" / "default" / "tokenizer")

# pieces the normaliser's steps act on, so that random text meets every rule and their interactions
FRAGMENTS = ["<person>", "<person> and <person>", "#sunsetbeach", "#", "http://x.y/z", "https://", "<b>", "</b>",
             "&amp;amp;", "&lt;", "[12]", "1,000,000", "3.5", "e.g.", "it's", "we'll", "1/2/2020", "-", "--",
             "well-known", "%", "&", "$", "*", "_", "\\", "'", '"', "`", "''", "...", ",,,", " , ", "sooooo",
             "VIII", "\t", "\n", "\r\n", "\u00a0", "\u200b", "❤️", "👩🏾", "🇮🇳", "महिला", "中文", "é", "e\u0301",
             "ﬁ", "Ⅻ", "ß", "İ", "Σ", "«", "»", "™", "xtokx", "ÃƒÂ©", "â€™", ":red_heart:", " ", ""]

texts = st.one_of(
    st.text(),
    st.text(st.characters(codec="utf-8"), max_size=60),  # everything but surrogates, all planes
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=12).map("".join),
    st.text(st.sampled_from(list("aAzZ09 .,:;!?'\"`#_-/\\<>[]()&%$*@~|=+{}\t\n")), max_size=40),
)
surrogates = st.lists(st.one_of(st.text(max_size=4), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
                      max_size=8).map("".join)  # lone surrogates: what a JSON "\ud83d" becomes in Python

# Each input below is the shortest of one kind that the official steps' order makes non-idempotent (found by
# this suite; dalle-mini's normaliser does the same): a typed `protect` placeholder that `unprotect` turns into
# '.', which the next pass deletes; a hashtag glued after a protected "'s" ("'sa" is not protected again);
# "<<a>>", whose inner tag goes first and leaves "< >" for the next pass; "a._b", protected because "_" is a
# word character, then "_" becomes a space and the next pass turns the bare dot into a comma.
NOT_IDEMPOTENT = ["XTOKXDOTXTOKX", "it's#a", "<<a>>", "«a»", "a._b"]


def check_normalize(text: str) -> None:
    once = NORMALIZE(text)
    assert isinstance(once, str)
    assert once.startswith(" ")  # the official normaliser always prepends its space
    assert once.isascii()  # unidecode ran
    encoded = TOKENIZER.encode(once)
    assert len(encoded.ids) == TOKENIZER.text_length
    assert len(encoded.attention_mask) == TOKENIZER.text_length
    assert encoded.ids[0] == TOKENIZER.bos_id and TOKENIZER.eos_id in encoded.ids
    assert all(0 <= i < TOKENIZER.vocab_size for i in encoded.ids)


def check_idempotent(text: str) -> None:
    once = NORMALIZE(text)
    assert NORMALIZE(once) == once, f"not idempotent: {text!r} -> {once!r} -> {NORMALIZE(once)!r}"


@FAST
@given(st.one_of(texts, surrogates))
def test_normalizer_and_tokenizer(text):
    check_normalize(text)


@pytest.mark.xfail(strict=True, reason="official normaliser is not idempotent: NORMALIZE(NORMALIZE(t)) != "
                   "NORMALIZE(t) for the NOT_IDEMPOTENT inputs (e.g. 'it\\'s#a' -> \" it'sa\" -> ' it \" sa')")
@FAST
@given(texts)
@example(NOT_IDEMPOTENT[0])  # the explicit inputs make the xfail deterministic; random texts guard the fix
@example(NOT_IDEMPOTENT[1])
@example(NOT_IDEMPOTENT[2])
@example(NOT_IDEMPOTENT[3])
@example(NOT_IDEMPOTENT[4])
def test_normalizer_is_idempotent(text):
    check_idempotent(text)


@pytest.mark.xfail(strict=True, reason="official normaliser is not idempotent (see NOT_IDEMPOTENT)")
@pytest.mark.parametrize("text", NOT_IDEMPOTENT)
def test_known_non_idempotent_inputs(text):
    check_idempotent(text)


@pytest.mark.fuzz
@LONG
@given(st.one_of(texts, surrogates))
def test_normalizer_and_tokenizer_long(text):
    check_normalize(text)

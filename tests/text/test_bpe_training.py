"""Training the byte-level BPE (crayonbox.train.tokenizer): layout, determinism, the config it writes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.text.normalize import NormalizerConfig, normalize
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe

QUIET = BPETrainingConfig(vocab_size=400, show_progress=False)


def test_training_twice_gives_byte_identical_files(captions, tokenizer_dir, tmp_path):
    train_bpe(captions, tmp_path, QUIET)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "normalizer.json"):
        assert (tmp_path / name).read_bytes() == (tokenizer_dir / name).read_bytes(), name


def test_vocabulary_layout(tokenizer_dir):
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:5] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert len(set(by_id[5:261])) == 256  # then the 256 byte symbols
    assert 261 < len(vocab) <= 400
    merges = (tokenizer_dir / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and len(merges) - 1 == len(vocab) - 261
    assert "Ġ t" in merges[1:20] or "Ġ a" in merges[1:20]  # captions start every word with Ġ


def test_common_words_become_single_tokens(tokenizer):
    assert tokenizer.encode("a black cat in a forest").tokens[1:-1] == ["Ġa", "Ġblack", "Ġcat", "Ġin", "Ġa",
                                                                        "Ġforest"]


def test_no_prefix_space_is_added(tokenizer):
    raw = Tokenizer(tokenizer.backend, NormalizerConfig("raw"))
    assert raw.encode("cat").tokens[1:-1] != raw.encode(" cat").tokens[1:-1] == ["Ġcat"]


MULTILINGUAL = NormalizerConfig("multilingual")


def _hindi_captions() -> list[str]:
    return [normalize(f"{w} एक महिला {c}", MULTILINGUAL)
            for w in ("साड़ी", "लाल", "नीली") for c in ("red", "blue", "green", "at night")] * 5


def test_the_normaliser_config_is_written_with_the_vocabulary(tmp_path):
    tokenizer = train_bpe(_hindi_captions(), tmp_path, QUIET, MULTILINGUAL)
    assert json.loads((tmp_path / "normalizer.json").read_text()) == {"mode": "multilingual",
                                                                      "disabled_steps": []}
    encoded = Tokenizer.from_folder(tmp_path).encode("एक महिला")
    assert encoded.normalized == " एक महिला"
    assert tokenizer.decode(encoded.ids) == " एक महिला"
    assert encoded.ids == tokenizer.encode("एक महिला").ids


def test_gpt2_word_split_fragments_devanagari_and_auto_avoids_it(tmp_path):
    # GPT-2's regex cuts at each vowel sign, so "महिला" stays 4 pieces however often it is seen.
    gpt2 = train_bpe(_hindi_captions(), tmp_path / "gpt2", dataclasses.replace(QUIET, word_split="gpt2"),
                     MULTILINGUAL)
    auto = train_bpe(_hindi_captions(), tmp_path / "auto", QUIET, MULTILINGUAL)
    assert len(gpt2.encode("एक महिला").tokens) - 2 == 5  # एक, मह, ि, ल, ा
    assert len(auto.encode("एक महिला").tokens) - 2 == 2  # एक, महिला
    assert QUIET.resolved_word_split(MULTILINGUAL) == "letters_with_marks"
    assert QUIET.resolved_word_split(NormalizerConfig()) == "gpt2"  # official: ASCII text, dalle-mini's split
    with pytest.raises(CrayonboxError, match="unknown word split"):
        train_bpe(_hindi_captions(), tmp_path / "bad", dataclasses.replace(QUIET, word_split="words"))


def test_too_small_a_vocabulary_is_refused(captions, tmp_path):
    with pytest.raises(CrayonboxError, match="no room for merges"):
        train_bpe(captions, tmp_path, BPETrainingConfig(vocab_size=261, show_progress=False))

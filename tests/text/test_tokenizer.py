"""The tokenizer: BART framing, blank prompts vs the unconditional branch, truncation, loading and saving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.text.explain import DEFAULT_PROMPTS, explain, format_rows
from crayonbox.text.normalize import NormalizerConfig
from crayonbox.text.tokenizer import Tokenizer

PROMPTS = ["", " ", ".", "a red car on the beach", "A Black Dog, in the City!", "#sunsetbeach 1,000 birds",
           "साड़ी पहने एक महिला", "中文 😀 ꙮ", "<s> hi </s> <mask>"]


def _space_id(tokenizer: Tokenizer) -> int:
    return tokenizer.backend.token_to_id("Ġ")


def test_special_ids_are_read_from_the_vocabulary(tokenizer, tokenizer_dir):
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert (tokenizer.bos_id, tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 1, 2, 3)


def test_blank_prompts_are_space_token_not_unconditional(tokenizer):
    space = _space_id(tokenizer)
    uncond = tokenizer.unconditional()
    assert uncond.ids == [0, 2] + [1] * 62 and uncond.attention_mask == [1, 1] + [0] * 62
    assert uncond.normalized == "" and uncond.tokens == ["<s>", "</s>"]
    for prompt in ["", " ", ".", ","]:
        encoded = tokenizer.encode(prompt)
        assert encoded.normalized == " "
        assert encoded.ids == [0, space, 2] + [1] * 61
        assert encoded.attention_mask == [1, 1, 1] + [0] * 61
        assert encoded.ids != uncond.ids
        assert encoded.notes[-1].startswith("blank prompt: ids are <s> Ġ </s>, not the unconditional")


def test_raw_mode_empty_prompt_is_the_unconditional_branch(tokenizer):
    raw = Tokenizer(tokenizer.backend, NormalizerConfig("raw"))
    encoded = raw.encode("")
    assert encoded.ids == raw.unconditional().ids
    assert encoded.notes == ["ids equal the unconditional branch <s> </s>: guidance has nothing to push "
                             "against, so the sample is unconditional"]
    assert raw.encode(" ").ids[:3] == [0, _space_id(raw), 2]


def test_encode_frames_and_pads_a_plain_prompt(tokenizer):
    encoded = tokenizer.encode("A red car on the beach.")
    assert encoded.normalized == " a red car on the beach"
    assert encoded.tokens == ["<s>", "Ġa", "Ġred", "Ġcar", "Ġon", "Ġthe", "Ġbeach", "</s>"]
    assert len(encoded.ids) == 64 and sum(encoded.attention_mask) == 8
    assert encoded.ids[0] == 0 and encoded.ids[7] == 2 and set(encoded.ids[8:]) == {1}
    assert not encoded.was_cut and encoded.cut_text == "" and encoded.notes == []
    assert tokenizer.decode(encoded.ids) == " a red car on the beach"


def test_byte_level_never_needs_unk(tokenizer):
    raw = Tokenizer(tokenizer.backend, NormalizerConfig("raw"))
    encoded = raw.encode("中文 😀 ꙮ साड़ी")
    assert tokenizer.unk_id not in encoded.ids
    assert raw.decode(encoded.ids) == "中文 😀 ꙮ साड़ी"


def test_truncation_keeps_end_of_sentence_last(tokenizer):
    encoded = tokenizer.encode(" ".join(["red car"] * 40))  # 80 content tokens
    assert len(encoded.ids) == 64 and encoded.ids[-1] == tokenizer.eos_id
    assert encoded.attention_mask == [1] * 64
    assert encoded.was_cut and len(encoded.cut_tokens) == 80 - 62
    assert tokenizer.decode(encoded.ids) + encoded.cut_text == encoded.normalized  # nothing lost unreported
    assert encoded.notes[-1] == ("prompt is 82 tokens, over the 64-token limit: cut the last 18 "
                                 f"({encoded.cut_text!r}); </s> is kept last")


def test_truncation_boundary(tokenizer):
    short = Tokenizer(tokenizer.backend, text_length=8)
    fits = short.encode("a red car on the beach")  # 6 content tokens + <s> + </s> = 8
    assert not fits.was_cut and fits.attention_mask == [1] * 8 and fits.ids[-1] == 2
    over = short.encode("a red car on the beach at night")
    assert over.cut_tokens == ["Ġat", "Ġnight"] and over.cut_text == " at night"
    assert over.ids == fits.ids
    with pytest.raises(CrayonboxError):
        Tokenizer(tokenizer.backend, text_length=1)


def test_vocab_merges_and_tokenizer_json_give_identical_ids(tokenizer_dir, tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, legacy / name)
    for mode in ("official", "raw", "multilingual"):
        config = NormalizerConfig(mode)
        from_json = Tokenizer.from_folder(tokenizer_dir, normalizer=config)
        from_files = Tokenizer.from_folder(legacy, normalizer=config)
        for prompt in PROMPTS:
            assert from_json.encode(prompt).ids == from_files.encode(prompt).ids, (mode, prompt)
    # In raw mode a literal "<s>" in the text is the special token, on both paths (as in HF's BART).
    assert Tokenizer.from_folder(legacy, NormalizerConfig("raw")).encode("<s>").ids[:3] == [0, 0, 2]


def test_folder_fixes_the_normaliser(tokenizer, tmp_path):
    multilingual = Tokenizer(tokenizer.backend, NormalizerConfig("multilingual"))
    multilingual.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "normalizer.json", "tokenizer.json",
                                                          "vocab.json"]
    reloaded = Tokenizer.from_folder(tmp_path)
    assert reloaded.normalizer_config == NormalizerConfig("multilingual")
    assert reloaded.encode("एक महिला").normalized == " एक महिला"
    assert [reloaded.encode(p).ids for p in PROMPTS] == [multilingual.encode(p).ids for p in PROMPTS]


def test_folder_without_normalizer_json_is_official(tokenizer_dir, tmp_path):
    shutil.copy(tokenizer_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    assert Tokenizer.from_folder(tmp_path).normalizer_config == NormalizerConfig()


def test_missing_or_broken_tokenizer_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CrayonboxError, match="no tokenizer in"):
        Tokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CrayonboxError, match="cannot read"):
        Tokenizer.from_folder(tmp_path)


def test_encode_batch_matches_encode(tokenizer):
    assert [e.ids for e in tokenizer.encode_batch(PROMPTS)] == [tokenizer.encode(p).ids for p in PROMPTS]


def test_explain_shows_the_blank_prompts_and_the_hindi_prompt(tokenizer):
    rows = explain(None, tokenizer)
    assert [r.label for r in rows] == ["unconditional branch"] + [repr(p) for p in DEFAULT_PROMPTS]
    assert rows[0].ids == [0, 2] and rows[0].same_as_unconditional
    space = _space_id(tokenizer)
    for row in rows[1:5]:  # "", " ", ".", ","
        assert row.normalized == " " and row.ids == [0, space, 2] and not row.same_as_unconditional
    hindi = rows[5]
    assert hindi.normalized == ' saadd " ii phne ek mhilaa'
    assert any("unidecode transliterated Devanagari" in note for note in hindi.notes)
    table = format_rows(rows)
    assert table.count("≠ unconditional") == 5 and table.count("= unconditional") == 1
    assert "note: unidecode transliterated Devanagari 'साड़ी पहने एक महिला'" in table

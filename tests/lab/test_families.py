"""Prompt families and prompt files: what the null family really sends to the model."""

from __future__ import annotations

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.lab.families import (
    NULL_PROMPTS,
    UNCONDITIONAL,
    UNCONDITIONAL_IDS,
    PromptSpec,
    expand_prompts,
    family,
    read_prompt_file,
)
from crayonbox.lab.probe import encode_spec, load_tokenizer


def test_null_family_collapses_blank_and_punctuation_into_one_input(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    specs = {spec.prompt: spec for spec in family("null") if spec.input_mode != UNCONDITIONAL_IDS}
    ids = {p: encode_spec(tokenizer, specs[p]).ids for p in ("", " ", ".", ",")}
    assert ids[""] == ids[" "] == ids["."] == ids[","]
    # ... and that shared input is not the unconditional one: it has the extra Ġ token.
    assert ids[""] != tokenizer.unconditional().ids
    blank = encode_spec(tokenizer, specs[""])
    assert sum(blank.attention_mask) == 3 and blank.tokens[1] == "Ġ"


def test_raw_unconditional_entry_is_exactly_the_unconditional_ids(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    null = family("null")
    assert null[-1] == UNCONDITIONAL and null[-1].label == "<unconditional ids>"
    assert encode_spec(tokenizer, UNCONDITIONAL).ids == tokenizer.unconditional().ids
    assert [s.prompt for s in null[:-1]] == list(NULL_PROMPTS)


def test_world_families_come_from_the_world_config():
    attire = [s.prompt for s in family("attire")]
    assert "a person wearing a sari" in attire and "a person wearing a kimono" in attire
    assert "a dog" in [s.prompt for s in family("animal")]
    assert len(family("neutral")) == 5


def test_expand_prompts_mixes_families_and_files_without_duplicates(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeffa person\r\n\nune femme en sari\n  \na person\n".encode())
    specs = expand_prompts(f"neutral,{path}")
    prompts = [s.prompt for s in specs]
    assert prompts.count("a person") == 1  # in both; kept once, from the first source
    assert "une femme en sari" in prompts and len(prompts) == 6
    assert expand_prompts([PromptSpec("x", "code")])[0].family == "code"


def test_prompt_file_errors_are_clear(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(CrayonboxError, match=r"not UTF-8.*line 2"):
        read_prompt_file(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(CrayonboxError, match="no prompts"):
        read_prompt_file(empty)
    with pytest.raises(CrayonboxError, match="unknown prompt family 'blank'.*file"):
        expand_prompts("null,blank")
    with pytest.raises(CrayonboxError, match="no prompts given"):
        expand_prompts(" , ")

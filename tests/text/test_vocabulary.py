"""Notes on words a model does not know: measured on the shipped model, and the rule each model folder gets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crayonbox import DEFAULT_MODEL_DIR
from crayonbox.model_folder import ModelFolder
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.text.vocabulary import WordCheck

# The README's prompts and the web page's example buttons: the shipped model knows every word of them.
EXAMPLES = [
    "a woman with medium-dark skin tone on a yellow background",
    "a dog on a yellow background",
    "a dog",
    "a red dog on a yellow background",
    "a woman in a sari",
    "a blue cat on a white background",
]


@pytest.fixture(scope="module")
def shipped() -> Tokenizer:
    return ModelFolder(DEFAULT_MODEL_DIR).tokenizer


def unknown_words(notes: list[str]) -> list[str]:
    return [note.split('"')[1] for note in notes if "is not a word this model knows" in note]


@pytest.mark.parametrize("prompt", EXAMPLES)
def test_examples_get_no_notes(shipped, prompt):
    assert shipped.encode(prompt).notes == []


def test_lady_gaga_is_named_word_by_word(shipped):
    notes = shipped.encode("Lady Gaga as the Joker").notes
    assert unknown_words(notes) == ["lady", "gaga", "as", "the", "joker"]
    assert notes[1] == '"gaga" is not a word this model knows (split into g·a·ga): it will be ignored or drawn as noise'


def test_avocado_armchair_names_the_unknown_words_once(shipped):
    notes = shipped.encode("an armchair in the shape of an avocado").notes
    assert unknown_words(notes) == ["armchair", "the", "shape", "avocado"]  # "an", "in", "of" are known
    assert "(split into a·v·o·c·a·do)" in notes[-1]


def test_word_notes_come_before_the_cut_note(shipped):
    notes = shipped.encode("zebra " * 40).notes
    assert notes[0].startswith('"zebra" is not a word') and len(notes) == 2  # one note per distinct word
    assert notes[-1].startswith("prompt is ")


def test_shipped_model_is_a_closed_world_with_its_concepts(shipped):
    assert shipped.words.closed
    assert {"sari", "kimono", "diya", "headscarf"} <= shipped.words.extra_words


def test_open_vocabulary_flags_only_words_spelled_out(tokenizer):
    tok = Tokenizer(tokenizer.backend, words=WordCheck.open_vocabulary())
    assert tok.encode("a red car on the beach").notes == []
    notes = tok.encode("a red zqxv car").notes
    assert notes == ['"zqxv" is split mostly into single characters (z·q·x·v): the model probably does not know '
                     "it, so it will be ignored or drawn as noise"]
    assert Tokenizer(tokenizer.backend).encode("a zqxv").notes == []  # a bare tokenizer adds no word notes


def _with_provenance(src: Path, dst: Path, provenance: dict) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "pipeline.json").read_text())
    meta["provenance"] = provenance
    (dst / "pipeline.json").write_text(json.dumps(meta))
    return dst


def test_the_folder_decides_the_rule(tiny_model_dir, tmp_path):
    trained = _with_provenance(tiny_model_dir, tmp_path / "trained", {"trained_by": "crayonbox train model"})
    converted = _with_provenance(tiny_model_dir, tmp_path / "converted", {"converted_from": "flax"})
    closed, open_ = ModelFolder(trained).tokenizer, ModelFolder(converted).tokenizer
    assert closed.words.closed and not open_.words.closed
    # two pieces, one a single letter: unknown to a closed world, not "spelled out" for an open vocabulary
    assert unknown_words(closed.encode("a backgrounds").notes) == ["backgrounds"]
    assert open_.encode("a backgrounds").notes == []
    assert "(d·o·g·s)" in open_.encode("a dogs").notes[0]
    assert ModelFolder(tiny_model_dir).tokenizer.words == WordCheck.open_vocabulary()  # nothing recorded

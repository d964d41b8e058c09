"""Fixtures for the text tests: a few hundred captions and a small byte-level BPE trained on them, once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from crayonbox.text.normalize import normalize
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe

_ADJECTIVES = ("red", "blue", "green", "yellow", "black", "white", "small", "old")
_SUBJECTS = ("car", "dog", "cat", "house", "tree", "woman", "man", "bird", "boat")
_PLACES = ("on the beach", "in a forest", "in the city", "at night", "on a table")


def caption_corpus() -> list[str]:
    """360 normalised captions such as ' a red car on the beach'."""
    return [normalize(f"a {a} {s} {p}") for a, s, p in itertools.product(_ADJECTIVES, _SUBJECTS, _PLACES)]


@pytest.fixture(scope="session")
def captions() -> list[str]:
    return caption_corpus()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, captions: list[str]) -> Path:
    folder = tmp_path_factory.mktemp("bpe")
    train_bpe(captions, folder, BPETrainingConfig(vocab_size=400, show_progress=False))
    return folder


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_folder(tokenizer_dir)

"""Shared fixtures: a tiny random-weight model folder, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CAPTIONS = [
    f"a {c} {o} on a {b} background"
    for c in ("red", "blue", "green", "small", "big")
    for o in ("dog", "cat", "woman", "man", "sari", "kimono")
    for b in ("yellow", "white", "black")
]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A complete model folder at the `tiny` presets with random weights and a BPE trained on CAPTIONS."""
    from crayonbox.config import MODEL_PRESETS, VQGAN_PRESETS
    from crayonbox.model.bart import DalleBart
    from crayonbox.model.vqgan import VQGAN
    from crayonbox.pipeline import Pipeline
    from crayonbox.sample import SamplingSettings
    from crayonbox.text.normalize import NormalizerConfig
    from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe

    torch.manual_seed(seed)
    tokenizer = train_bpe(
        CAPTIONS,
        folder / "tok-src",
        BPETrainingConfig(vocab_size=300, show_progress=False),
        NormalizerConfig(),
        text_length=MODEL_PRESETS["tiny"].text_length,
    )
    bart = DalleBart(MODEL_PRESETS["tiny"])
    bart.init_weights(0.5)  # large weights: sharp, seed-sensitive distributions make tests discriminating
    vqgan = VQGAN(VQGAN_PRESETS["tiny"])
    pipe = Pipeline(bart, vqgan, tokenizer, SamplingSettings(condition_scale=3.0, top_k=16))
    pipe.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))

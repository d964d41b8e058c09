"""A complete model folder with random weights: the fixture of tests and benches (throughput and plumbing do
not depend on the weights). One builder, so tests and benches measure the same thing."""

from __future__ import annotations

from pathlib import Path

import torch

from crayonbox.config import MODEL_PRESETS, VQGAN_PRESETS
from crayonbox.model.bart import DalleBart
from crayonbox.model.vqgan import VQGAN
from crayonbox.pipeline import Pipeline
from crayonbox.sample import SamplingSettings
from crayonbox.text.normalize import NormalizerConfig
from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe

CAPTIONS = [
    f"a {c} {o} on a {b} background"
    for c in ("red", "blue", "green", "small", "big")
    for o in ("dog", "cat", "woman", "man", "sari", "kimono")
    for b in ("yellow", "white", "black")
]


def random_model(folder: str | Path, preset: str = "tiny", seed: int = 0, init_std: float = 0.02,
                 settings: SamplingSettings | None = None) -> Path:
    """FOLDER/model at the preset's shapes: random BART and VQGAN weights, a BPE of 300 ids trained on
    CAPTIONS. Returns the model folder."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = train_bpe(CAPTIONS, folder / "tokenizer-src", BPETrainingConfig(vocab_size=300, show_progress=False),
                          NormalizerConfig(), text_length=MODEL_PRESETS[preset].text_length)
    bart = DalleBart(MODEL_PRESETS[preset])
    bart.init_weights(init_std)
    pipe = Pipeline(bart, VQGAN(VQGAN_PRESETS[preset]), tokenizer, settings or SamplingSettings())
    pipe.save_pretrained(folder / "model")
    return folder / "model"

"""CLIP zero-shot plumbing on a randomly initialised open_clip model (no CLIP weights exist here), and the
error a user without open_clip gets."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from crayonbox.errors import CrayonboxError
from crayonbox.lab.instruments import clip as clip_module
from crayonbox.lab.instruments.base import NONE, UNCLEAR
from crayonbox.lab.instruments.clip import RANDOM_CONFIG, ClipInstrument, import_open_clip, preprocess

needs_open_clip = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                                     reason="open_clip not installed (pip install --no-deps open-clip-torch)")


def test_missing_open_clip_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(clip_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "open_clip" else real(name, *a))
    with pytest.raises(CrayonboxError, match="pip install --no-deps open-clip-torch"):
        import_open_clip()


def test_preprocess_resizes_crops_and_normalises_without_torchvision():
    wide = Image.new("RGB", (60, 30), (255, 255, 255))
    batch = preprocess([wide, np.zeros((10, 10, 3), np.uint8)], 24)
    assert batch.shape == (2, 3, 24, 24)
    expected_white = (1 - np.array(clip_module.OPENAI_MEAN)) / np.array(clip_module.OPENAI_STD)
    assert np.allclose(batch[0, :, 12, 12].numpy(), expected_white, atol=1e-5)


@needs_open_clip
def test_random_clip_labels_every_image_within_its_outcomes():
    clip = ClipInstrument.random(seed=0, min_confidence=0.0)
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "white")]
    labels = clip.measure(images)
    assert len(labels) == 3
    for row in labels:
        for attribute, label in row.items():
            assert label in clip.outcomes()[attribute] and label != UNCLEAR
    probs = clip.probabilities(images)
    assert np.allclose(probs["gender"].sum(1), 1, atol=1e-5)
    strict = ClipInstrument.random(seed=0, min_confidence=1.0)  # nothing is that certain: all unclear
    assert all(v == UNCLEAR for row in strict.measure(images) for v in row.values())
    assert "torchvision" not in sys.modules


@needs_open_clip
def test_weights_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import save_file

    source = ClipInstrument.random(seed=3)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    loaded = ClipInstrument.from_weights("tiny", path, config=RANDOM_CONFIG)
    image = [Image.new("RGB", (40, 40), (120, 80, 60))]
    expected = source.probabilities(image)["attire"]
    assert np.allclose(loaded.probabilities(image)["attire"], expected, atol=1e-5)
    torch.save({"state_dict": {"module.x": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(CrayonboxError, match="does not fit"):
        ClipInstrument.from_weights("tiny", tmp_path / "bad.pt", config=RANDOM_CONFIG)
    with pytest.raises(CrayonboxError, match="unknown CLIP architecture"):
        ClipInstrument.from_weights("ViT-Nope", path)


def test_truth_from_world_ground_truth_keeps_none_as_an_outcome():
    instrument = ClipInstrument.__new__(ClipInstrument)
    instrument.labels = clip_module.DEFAULT_LABELS
    woman_in_sari = {"objects": [{"gender": "woman", "attire": "sari"}]}
    pair = {"objects": [{"gender": "woman", "attire": None}, {"gender": "man", "attire": "necktie"}]}
    dog = {"objects": [{"gender": "none", "attire": None}]}
    assert instrument.truth(woman_in_sari) == {"gender": "woman", "attire": "sari"}
    assert instrument.truth(pair) == {"gender": "mixed", "attire": "other"}
    assert instrument.truth(dog) == {"gender": NONE, "attire": NONE}

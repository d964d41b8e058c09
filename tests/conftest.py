"""Shared fixtures: a tiny random-weight model folder, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A complete model folder at the `tiny` presets with random weights."""
    from crayonbox.sample import SamplingSettings
    from crayonbox.train.random_model import random_model

    # large weights: sharp, seed-sensitive distributions make tests discriminating
    return random_model(folder, "tiny", seed, init_std=0.5, settings=SamplingSettings(condition_scale=3.0, top_k=16))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))

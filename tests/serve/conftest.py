"""Serving fixtures (helpers live in serve_helpers.py)."""

from __future__ import annotations

import pytest
import torch

from crayonbox.pipeline import Pipeline


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model gains nothing from a second thread, and on a busy 2-core machine two OpenMP threads
    that wait on each other make every op many times slower; restored for the other areas' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> Pipeline:
    """The tiny random model, loaded once per test module."""
    return Pipeline.from_pretrained(tiny_model_dir)

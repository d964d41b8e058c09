"""Shared setup for parity tests against min-dalle 0.4.11 (a dev dependency; nothing is downloaded).

Importing min_dalle has process-wide side effects (min_dalle.py: `torch.set_grad_enabled(False)` and
`torch.set_num_threads(os.cpu_count())`). They would leak into every test that runs after collection, so the
import happens here once, and torch's state is put back. Tests get min-dalle through the `mindalle` fixture.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

_grad, _threads = torch.is_grad_enabled(), torch.get_num_threads()
import min_dalle  # noqa: E402  (the side effects above happen here, once)
import min_dalle.models  # noqa: E402

torch.set_grad_enabled(_grad)
torch.set_num_threads(_threads)


def randomize_(
    module: torch.nn.Module, seed: int, std: float | None = 0.05, keep_unit: tuple[str, ...] = ()
) -> None:
    """Random weights in place: norm weights 1 + N(0, 0.1), vector biases N(0, 0.1), matrices N(0, std)
    (std None: keep torch's default init, e.g. for deep conv stacks).

    Torch's defaults (norm weight 1, bias 0) would hide a swapped or dropped norm, so norms are randomised
    too, except weights whose name contains one of `keep_unit` (min-dalle's stand-ins for DALL·E mini's
    scale-less norms, which are 1 in its real files).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                unit = any(part in name for part in keep_unit)
                p.copy_(torch.ones_like(p) if unit else 1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif std is not None:
                p.copy_(std * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="session")
def mindalle() -> SimpleNamespace:
    """min-dalle's module and model classes, imported without its side effects (see the module docstring)."""
    return SimpleNamespace(package=min_dalle, models=min_dalle.models, MinDalle=min_dalle.MinDalle)


@pytest.fixture(scope="session")
def randomize() -> Callable[..., None]:
    """`randomize_(module, seed, std=0.05, keep_unit=())`: see its docstring."""
    return randomize_


@pytest.fixture(autouse=True, scope="module")
def _free_memory_after_module():
    """Parity modules build large models; hand their memory back before the next module starts."""
    yield
    gc.collect()

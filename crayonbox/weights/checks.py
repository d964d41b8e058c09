"""Checks that a converted state dict is exactly what our module expects: every key, every shape.

A converter that silently drops or invents a tensor gives a model that loads and draws noise, so every
converter ends with `check_state`, whose error names the offending keys in the *source* file's terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from crayonbox.errors import CrayonboxError

SHOWN = 6  # keys listed per problem in an error message


def expected_shapes(build: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """Key → shape of the state dict `build()` produces, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        module = build()
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def _listing(items: list[str]) -> str:
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def check_state(
    state: dict[str, Tensor],
    expected: dict[str, tuple[int, ...]],
    source: str,
    origin: dict[str, str] | None = None,
    optional_groups: Iterable[tuple[str, ...]] = (),
) -> None:
    """Raise a CrayonboxError naming every missing, unexpected or mis-shaped key.

    `origin` maps our key → the source's key, so messages speak the source's language. Each optional group
    is a tuple of key prefixes (e.g. the VQGAN encoder half) that may be absent as a whole, never in part.
    """
    origin = origin or {}

    def named(key: str) -> str:
        return f"{origin[key]} (→ {key})" if key in origin else key

    absent = [group for group in optional_groups if not any(key.startswith(group) for key in state)]

    def skip(key: str) -> bool:
        return any(key.startswith(group) for group in absent)

    missing = [key for key in expected if key not in state and not skip(key)]
    unexpected = [named(key) for key in state if key not in expected]
    wrong = [
        f"{named(key)}: {tuple(state[key].shape)}, expected {expected[key]}"
        for key in state
        if key in expected and tuple(state[key].shape) != expected[key]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} not used (a model variant crayonbox does not implement?): "
            f"{_listing(unexpected)}"
        )
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape for its config: {_listing(wrong)}")
    if problems:
        raise CrayonboxError(f"{source} does not match the model: " + "; ".join(problems))

"""Shared hypothesis settings and strategies for the fuzz suite.

Every property runs twice: a quick pass in the default run (FAST examples, a few seconds per test) and a long
pass marked `fuzz` (`pytest -m fuzz`, LONG examples) that the default run leaves out. Deadlines are off: the
machine is shared with other tests, so a slow example is not a bug.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
LONG = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))

# YAML-like scalars: what yaml.safe_load can hand a validator (and a little more: nan, inf, huge ints)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=130),  # near the real bounds (sizes, percentages, object counts)
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-0.5, max_value=1.5),  # near probabilities
    st.sampled_from([0, 1, 0.0, 1.0, -1, 2, math.nan, math.inf, -math.inf, "", "none", "default", "png", "en"]),
    st.text(max_size=20),
)

yaml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(-2, 5), st.booleans(), st.none()), inner,
                        max_size=4),
    ),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / list indices) to a node inside `value`, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += paths(inner, prefix + (key,))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            out += paths(inner, prefix + (i,))
    return out


def replaced(value: Any, path: tuple, new: Any) -> Any:
    """A copy of `value` with the node at `path` replaced by `new` (the root when `path` is empty)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (replaced(v, rest, new) if k == head else v) for k, v in value.items()}
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


def removed(value: Any, path: tuple) -> Any:
    """A copy of `value` without the node at `path` (a non-empty path)."""
    head, rest = path[0], path[1:]
    if rest:
        if isinstance(value, dict):
            return {k: (removed(v, rest) if k == head else v) for k, v in value.items()}
        return [removed(v, rest) if i == head else v for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != head}
    return [v for i, v in enumerate(value) if i != head]


@st.composite
def mutants(draw, base: Any, rounds: int = 3) -> Any:
    """`base` with up to `rounds` random edits: a node replaced by a YAML-like value, a node removed, or a
    key added. Starting from a valid config reaches the validator's deep checks, which random data never does."""
    value = base
    for _ in range(draw(st.integers(1, rounds))):
        candidates = paths(value)
        path = draw(st.sampled_from(candidates))
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "remove" and path:
            value = removed(value, path)
        elif action == "add":
            node = _node(value, path)
            if isinstance(node, dict):
                key = draw(st.one_of(st.text(max_size=10), st.integers(-1, 5), st.sampled_from(
                    ["default", "person", "sari", "hijab", "language", "style", "gender", "skin_tone"])))
                value = replaced(value, path, {**node, key: draw(yaml_values)})
            elif isinstance(node, list):
                value = replaced(value, path, node + [draw(yaml_values)])
            else:
                value = replaced(value, path, draw(yaml_values))
        else:
            value = replaced(value, path, draw(yaml_values))
    return value


def _node(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value

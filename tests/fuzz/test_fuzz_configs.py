"""Fuzzing the two YAML configs: whatever values a user writes (nested mappings and lists, nan and inf, huge
numbers, odd keys), the world config and the caption pipeline config give a valid config or a CrayonboxError,
never another exception. Mutating the shipped configs reaches the deep checks that random data never does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from fuzz_helpers import FAST, LONG, mutants, yaml_values
from hypothesis import given
from hypothesis import strategies as st

from crayonbox.data.caption_steps import STEP_TYPES
from crayonbox.data.captions import DEFAULT_PIPELINE, build_steps, load_pipeline_config, step_config
from crayonbox.data.world.config import (
    DEFAULT_CONFIG,
    WorldConfig,
    load_world_config,
    parse_world_config,
    parse_world_yaml,
)
from crayonbox.errors import CrayonboxError

DEFAULT_WORLD = parse_world_yaml(DEFAULT_CONFIG.read_text(encoding="utf-8"))
# every step kind with every option spelled out, so that each option's checks get mutated too
EVERY_STEP = {"steps": [step_config(step) for step in build_steps(
    {"steps": DEFAULT_PIPELINE["steps"] + [{"step": "ban_list", "words": ["nsfw", "spam"]}]})]}

world_data = st.one_of(mutants(DEFAULT_WORLD), yaml_values)
pipeline_data = st.one_of(mutants(DEFAULT_PIPELINE), mutants(EVERY_STEP), yaml_values,
                          st.builds(lambda s: {"steps": s}, st.lists(yaml_values, max_size=4)),
                          st.builds(lambda step, extra: {"steps": [{"step": step, **extra}]},
                                    st.one_of(st.sampled_from(sorted(STEP_TYPES)), yaml_values),
                                    st.dictionaries(st.text(max_size=12), yaml_values, max_size=3)))


def test_the_shipped_configs_are_valid():
    assert isinstance(parse_world_config(DEFAULT_WORLD), WorldConfig)
    assert len(build_steps(EVERY_STEP)) == len(EVERY_STEP["steps"])
    assert {entry["step"] for entry in EVERY_STEP["steps"]} == set(STEP_TYPES)


def check_world_data(data) -> None:
    try:
        cfg = parse_world_config(data)
    except CrayonboxError as e:
        assert str(e).startswith("world config: ")
        return
    assert isinstance(cfg, WorldConfig)
    assert isinstance(cfg.size, int) and cfg.size >= 16
    assert cfg.sources and all(s.share >= 0 for s in cfg.sources)


def check_world_yaml_file(data) -> None:
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    check_world_text(text)


def check_world_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "world.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            cfg = load_world_config(path)
        except CrayonboxError:
            return
        assert isinstance(cfg, WorldConfig)


@pytest.mark.parametrize("kind", [[], {}, ["langid"], {"langid": None}])
def test_unhashable_step_kind_is_a_crayonbox_error(kind):
    with pytest.raises(CrayonboxError, match="unknown step"):
        build_steps({"steps": [{"step": kind}]})


def check_pipeline(data) -> None:
    try:
        steps = build_steps(data)
    except CrayonboxError:
        return
    data = DEFAULT_PIPELINE if data is None else data  # None means the default pipeline, by design
    assert len(steps) == len(data["steps"]) >= 1
    assert len({s.name for s in steps}) == len(steps)


def check_pipeline_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pipeline.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            check_pipeline(load_pipeline_config(path))
        except CrayonboxError:
            pass


@FAST
@given(world_data)
def test_world_config_values(data):
    check_world_data(data)


@FAST
@given(world_data)
def test_world_config_yaml_files(data):
    check_world_yaml_file(data)


@FAST
@given(st.text(max_size=200))
def test_world_config_arbitrary_text(text):
    check_world_text(text)


@FAST
@given(pipeline_data)
def test_caption_pipeline_values(data):
    check_pipeline(data)


@FAST
@given(st.text(max_size=200))
def test_caption_pipeline_arbitrary_text(text):
    check_pipeline_text(text)


@pytest.mark.fuzz
@LONG
@given(world_data)
def test_world_config_values_long(data):
    check_world_data(data)


@pytest.mark.fuzz
@LONG
@given(world_data)
def test_world_config_yaml_files_long(data):
    check_world_yaml_file(data)


@pytest.mark.fuzz
@LONG
@given(st.text(max_size=400))
def test_world_config_arbitrary_text_long(text):
    check_world_text(text)


@pytest.mark.fuzz
@LONG
@given(pipeline_data)
def test_caption_pipeline_values_long(data):
    check_pipeline(data)


@pytest.mark.fuzz
@LONG
@given(st.text(max_size=400))
def test_caption_pipeline_arbitrary_text_long(text):
    check_pipeline_text(text)

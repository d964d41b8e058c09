"""The sampler's knobs are defined once (crayonbox/sampler_settings.py); every surface derives from them."""

import argparse

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.lab.store import settings_key
from crayonbox.sampler_settings import (
    SamplerOverrides,
    SamplingSettings,
    add_sampler_arguments,
    sampler_names,
    sampler_overrides,
)
from crayonbox.serve.schemas import GenerateRequest, Settings


def test_every_surface_lists_every_knob():
    parser = argparse.ArgumentParser()
    add_sampler_arguments(parser)
    args = parser.parse_args(["--condition-scale", "3", "--top-k", "8", "--top-p", "0.9", "--temperature", "2"])
    assert sampler_overrides(args).values == {"condition_scale": 3.0, "top_k": 8, "top_p": 0.9, "temperature": 2.0}
    assert sampler_overrides(parser.parse_args([])).values == {}
    assert set(sampler_names()) <= set(GenerateRequest.model_fields)
    assert list(Settings.model_fields) == list(sampler_names())


def test_settings_key_and_overrides():
    assert settings_key(3, 16, 1, 1) == settings_key(**SamplingSettings(3.0, 16, 1.0, 1.0).to_dict())
    with pytest.raises(TypeError):
        settings_key(3, 16)
    assert SamplerOverrides.of(top_k=4, top_p=None).apply(SamplingSettings()).top_k == 4
    with pytest.raises(CrayonboxError, match="unknown sampler setting"):
        SamplerOverrides.of(top_q=1)


def test_worker_process_and_scheduler_implement_scheduler_like():
    from crayonbox.serve.scheduler import Scheduler, SchedulerLike
    from crayonbox.serve.worker import WorkerProcess, _Gauge
    from crayonbox.serve.worker_main import GAUGES

    members = set(SchedulerLike.__annotations__) | {n for n in vars(SchedulerLike) if not n.startswith("_")}
    assert set(GAUGES) <= members
    for cls in (Scheduler, WorkerProcess):
        assert SchedulerLike in cls.__mro__  # implemented explicitly, not by duck typing
        assert "__getattr__" not in vars(cls)
    for name in GAUGES:  # the worker reads each gauge from its process: a read-only descriptor per gauge
        assert isinstance(vars(WorkerProcess).get(name), _Gauge), name

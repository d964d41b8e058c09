"""Lab fixtures: a small probed run of the tiny random model, and a tiny labelled world for references."""

from __future__ import annotations

from pathlib import Path

import pytest

PROBE_N = 6  # images per prompt and scale: tiny, but enough for every statistic to run


@pytest.fixture(scope="session")
def probed_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """null + neutral families × scales 1 and 3 × PROBE_N images of the tiny model (the run is shared: tests
    that modify a run must copy it)."""
    from crayonbox.lab.probe import ProbeConfig, run_probe

    out = tmp_path_factory.mktemp("lab") / "run"
    run_probe(ProbeConfig(model=tiny_model_dir, prompts=["null", "neutral"], n=PROBE_N,
                          condition_scales=(1, 3), threads=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 labelled 16-px renders of the default world (a stand-in for training images), with the Flickr-like
    source's empty captions made common so that 40 items hold a few that normalise like the blank prompt (the
    matched-subset checks need some; the default world has them at ~2 %)."""
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config

    config = load_world_config()
    config.size, config.shard_size = 16, 20
    for source in config.sources:
        if source.kind == "yfcc":
            source.style = {"short": 0.3, "long": 0.4, "empty": 0.3}
    out = tmp_path_factory.mktemp("world") / "world"
    build_world(config, out, n=40, workers=1, seed=3, progress=False)
    return out


@pytest.fixture(scope="session")
def measured_run(probed_run: Path, tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the probed run, measured with the skin meter and 3 clusters against the tiny world."""
    import shutil

    from crayonbox.lab.measure import MeasureConfig, measure_run

    run = tmp_path_factory.mktemp("measured") / "run"
    shutil.copytree(probed_run, run)
    measure_run(run, MeasureConfig(reference=tiny_world, validation=tiny_world, validation_n=40, clusters=3),
                progress=False)
    return run

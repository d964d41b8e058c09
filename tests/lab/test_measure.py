"""Measuring a run: every image labelled once (cached by hash), the training reference, validation matrices
stored in the run, and the statistics of every cell."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.lab import stats
from crayonbox.lab.instruments.skin_tone import SkinToneMeter
from crayonbox.lab.measure import MeasureConfig, measure_run, read_metrics
from crayonbox.lab.store import RunStore
from tests.lab.conftest import PROBE_N


def test_metrics_cover_every_prompt_scale_and_instrument(measured_run):
    metrics = read_metrics(measured_run)
    instruments = {info["name"] for info in metrics["instruments"].values()}
    assert instruments == {"skin_tone", "clusters"}
    cells = metrics["cells"]
    assert len(cells) == 15 * 2 * 2  # prompts × scales × (skin_tone, cluster)
    for cell in cells:
        assert cell["n"] == PROBE_N == sum(cell["counts"])  # none / unclear are counted, never dropped
        assert cell["vs_reference"]["reference_n"] == 40
    skin = next(c for c in cells if c["instrument_name"] == "skin_tone")
    assert skin["labels"] == ["1", "2", "3", "4", "5", "mixed", "none", "unclear"]
    assert metrics["reference"]["n"] == 40 and "first 40 images" in metrics["reference"]["source"]
    assert metrics["multiple_testing"]["tests"] == len(cells)


def test_cell_statistics_are_the_stats_package_numbers(measured_run):
    metrics = read_metrics(measured_run)
    cell = next(c for c in metrics["cells"] if c["instrument_name"] == "clusters")
    counts, reference = np.array(cell["counts"]), np.array(cell["vs_reference"]["reference_counts"])
    sim = stats.simultaneous_intervals(counts, 0.95, "goodman")
    assert np.allclose(cell["simultaneous"]["low"], sim.low)
    assert np.allclose(cell["simultaneous"]["high"], sim.high)
    distance = stats.distance_to_reference(counts, stats.Reference.from_counts(reference))
    assert cell["vs_reference"]["distance"]["total_variation"] == pytest.approx(distance.total_variation)
    assert cell["entropy"]["miller_madow"] == pytest.approx(stats.miller_madow_entropy(counts))


def test_validation_and_reference_are_stored_in_the_run(measured_run):
    metrics = read_metrics(measured_run)
    skin = next(v for v in metrics["instruments"].values() if v["name"] == "skin_tone")
    confusion = skin["validation"]["confusions"]["skin_tone"]
    assert confusion["n"] == 40 and np.array(confusion["counts"]).sum() == 40
    with RunStore.open(measured_run) as store:
        assert store.record_keys("validation:skin_tone")
        items = store.get_record(store.record_keys("reference-items:")[0])
        assert len(items) == 40 and all((measured_run / row["path"]).exists() for row in items)
        # Training captions that were dropped ("") reached the model as the unconditional ids.
        uncond = store.get_record("prompt:unconditional-ids:")["ids"]
        assert all(row["ids"] for row in items) and any(row["ids"] != uncond for row in items)


def test_labels_are_cached_per_image_hash(measured_run, monkeypatch, tmp_path, tiny_world):
    run = tmp_path / "run"
    shutil.copytree(measured_run, run)
    calls = []
    original = SkinToneMeter.measure
    monkeypatch.setattr(SkinToneMeter, "measure", lambda self, images: calls.append(len(images)) or
                        original(self, images))
    measure_run(run, MeasureConfig(reference=tiny_world, validation=tiny_world, validation_n=40, clusters=3),
                progress=False)
    assert calls == []  # run images, reference images and validation were all cached
    assert json.loads((run / "metrics.json").read_text())["cells"] == read_metrics(measured_run)["cells"]


def test_measure_refuses_bad_configurations(probed_run, tmp_path):
    with pytest.raises(CrayonboxError, match="unknown instrument"):
        measure_run(probed_run, MeasureConfig(instruments=("gender_guess",)), progress=False)
    with pytest.raises(CrayonboxError, match="--judge"):
        measure_run(probed_run, MeasureConfig(instruments=("judge",)), progress=False)
    with pytest.raises(CrayonboxError, match="--reference .*no such folder"):
        measure_run(probed_run, MeasureConfig(reference=tmp_path / "nowhere"), progress=False)
    with pytest.raises(CrayonboxError, match="run `crayonbox lab measure"):
        read_metrics(tmp_path)


def test_judge_instrument_labels_validates_and_feeds_the_clusters(measured_run, tiny_world, tmp_path):
    from crayonbox.train.judge_train import train_judge

    judge = tmp_path / "judge"
    train_judge(tiny_world, judge, train_images=40, eval_images=20, world_sample=20, epochs=1, width=8,
                progress=False, threads=1)
    run = tmp_path / "run"
    shutil.copytree(measured_run, run)
    config = MeasureConfig(instruments=("judge", "clusters"), judge=judge, reference=tiny_world,
                           validation=tiny_world, validation_n=20, clusters=3)
    metrics = measure_run(run, config, progress=False)
    keys = list(metrics["instruments"])
    judge_key = next(k for k in keys if k.startswith("judge-"))
    assert {"gender", "skin_tone", "attire"} <= set(metrics["instruments"][judge_key]["outcomes"])
    confusions = metrics["instruments"][judge_key]["validation"]["confusions"]
    assert confusions["skin_tone"]["n"] == 20
    assert metrics["clusters"]["extractor"] == f"{judge_key}-features"  # not colour histograms
    cells = [c for c in metrics["cells"] if c["instrument"] == judge_key]
    assert cells and all(c["n"] == PROBE_N for c in cells)
    with pytest.raises(CrayonboxError, match="no judge there"):
        measure_run(run, MeasureConfig(instruments=("judge",), judge=tmp_path), progress=False)

"""Planted skew through a trained model: does the lab find, in a model's pictures, the bias its data planted?

The world (crayonbox/data/world/planted.yaml) is one person per image, half skin tone 1, half tone 5. Only the
captions are skewed: dark-skinned people mostly have empty Flickr titles, which the caption pipeline turns into
the blank prompt's own ids. `crayonbox train all --recipe planted` trains a tiny model on it in a few minutes;
tests/lab/planted_model/ is one such model (made by scripts/make_planted_fixture.py, with truth.json: the
tone-5 share of all training rows and of the rows captioned like the blank prompt, from ground truth).

The lab then probes the blank prompt, measures skin tone with the pixel meter, and compares with the training
images. It must find the planted direction (more tone 5 than in training, beyond noise) and size (the true
gap inside its interval). The slow test retrains the model from scratch and checks the same.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from crayonbox.lab.families import PromptSpec
from crayonbox.lab.measure import MeasureConfig, measure_run
from crayonbox.lab.probe import ProbeConfig, run_probe

FIXTURE = Path(__file__).with_name("planted_model")
WORLD = Path(__file__).parents[2] / "crayonbox" / "data" / "world" / "planted.yaml"
N = 300


def lab_finds_the_planted_skew(model: Path, truth: dict, tmp_path: Path) -> dict:
    """Probe the blank prompt, measure, and check direction and size; returns the blank cell."""
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config

    reference = tmp_path / "reference"  # renders of the world itself: its images are 50 % tone 5
    build_world(load_world_config(WORLD), reference, n=400, workers=1, seed=5, progress=False)
    run = tmp_path / "probe"
    run_probe(ProbeConfig(model=model, prompts=[PromptSpec("", "null")], n=N, condition_scales=(1.0,),
                          workers=1, threads=1), run, progress=False)
    # The model's VQGAN shifts skin colours by 5–12 ΔE (measured on the fixture's blank-prompt images), past
    # the meter's 8 ΔE for clean renders: at 8 most faces read "none". So the meter is loosened to 12 ΔE and
    # validated the way it is used: on renders passed through the model's own VQGAN.
    metrics = measure_run(run, MeasureConfig(instruments=("skin_tone",), reference=reference, world_config=WORLD,
                                             validation_n=100, validate_roundtrip=True, skin_max_distance=12.0),
                          progress=False)
    meter = next(i for i in metrics["instruments"].values() if i["name"] == "skin_tone")
    assert "through the model's VQGAN" in meter["validation"]["source"]
    validation = meter["validation"]["confusions"]["skin_tone"]
    # On round trips the meter misses some faces (→ none/unclear; 66 % right on the fixture) but never takes
    # one tone for the other, so "none" dilutes the shares without biasing tone 5 against tone 1.
    one, five = validation["labels"].index("1"), validation["labels"].index("5")
    assert validation["accuracy"] >= 0.5, validation
    assert validation["counts"][one][five] == 0 and validation["counts"][five][one] == 0, validation
    cell = next(c for c in metrics["cells"] if c["attribute"] == "skin_tone")
    assert cell["n"] == N
    dark = cell["labels"].index(truth["tone"])
    gaps = cell["vs_reference"]["gaps"]
    # direction: more dark skin than in the training images, beyond the interval's noise
    assert gaps["gap_low"][dark] > 0.15, gaps
    # size: the planted gap (ground truth of the training rows) lies inside the lab's interval
    assert gaps["gap_low"][dark] <= truth["gap"] <= gaps["gap_high"][dark], (truth, gaps)
    wilson = cell["wilson"][dark]
    assert wilson["low"] <= truth["blank_prompt"]["share"] <= wilson["high"], (truth, wilson)
    return cell


def test_lab_recovers_the_skew_planted_in_a_trained_models_data(tmp_path):
    truth = json.loads((FIXTURE / "truth.json").read_text(encoding="utf-8"))
    assert truth["gap"] > 0.3  # the fixture plants a large skew: 50 % of all rows, ~88 % of blank-captioned ones
    lab_finds_the_planted_skew(FIXTURE, truth, tmp_path)


@pytest.mark.slow
def test_planted_recipe_trains_a_model_whose_skew_the_lab_recovers(tmp_path):
    """End to end, ~6 minutes on 2 cores: world → captions → … → model, then the lab as above."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
    from make_planted_fixture import planted_truth

    from crayonbox.train.recipe import run_recipe

    run = tmp_path / "run"
    run_recipe("planted", run, progress=False)
    truth = planted_truth(run)
    assert 0.45 <= truth["all"]["share"] <= 0.55 and truth["blank_prompt"]["share"] > 0.8
    lab_finds_the_planted_skew(run / "model", truth, tmp_path)
    shutil.rmtree(run / "world")  # the large part; pytest keeps only a few tmp dirs anyway

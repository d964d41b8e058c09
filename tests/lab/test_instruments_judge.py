"""The judge as a lab instrument: image-level outcomes with "none" and "unclear", validation confusion
matrices on labelled renders (nothing dropped), truth from world metadata, and features."""

from __future__ import annotations

import numpy as np
import pytest

from crayonbox.lab.instruments.base import NONE, UNCLEAR
from crayonbox.lab.instruments.judge import MIXED, SUMMARY_ATTRIBUTES, JudgeInstrument


@pytest.fixture(scope="module")
def judge_folder(tiny_world, tmp_path_factory):
    from crayonbox.train.judge_train import train_judge

    out = tmp_path_factory.mktemp("judge") / "judge"
    train_judge(tiny_world, out, train_images=60, eval_images=10, world_sample=0, epochs=1, width=8,
                crop_size=16, workers=1, threads=1, progress=False)
    return out


@pytest.fixture(scope="module")
def renders(tiny_world):
    from crayonbox.data.shards import decode_image, iter_items

    items = list(iter_items(tiny_world))
    return [decode_image(i) for i in items], [i.meta["world"] for i in items]


def test_outcomes_include_none_mixed_and_unclear(judge_folder):
    outcomes = JudgeInstrument.load(judge_folder).outcomes()
    assert tuple(outcomes) == SUMMARY_ATTRIBUTES
    assert all(labels[-1] == UNCLEAR for labels in outcomes.values())
    for attribute in ("gender", "skin_tone", "attire"):
        assert NONE in outcomes[attribute] and MIXED in outcomes[attribute]
    assert {"yellow", "1", "5"} <= set(outcomes["skin_tone"])
    assert outcomes["people"][:4] == ("0", "1", "2", "3")
    slots = JudgeInstrument.load(judge_folder, per_slot=True).outcomes()
    assert "left_skin_tone" in slots and slots["left_skin_tone"][-1] == UNCLEAR


def test_validation_confusions_keep_every_image(judge_folder, renders):
    images, worlds = renders
    instrument = JudgeInstrument.load(judge_folder, unclear_below=0.0)  # always its best guess
    confusions = instrument.validate_world(images, worlds)
    assert set(confusions) == set(SUMMARY_ATTRIBUTES)
    for attribute, confusion in confusions.items():
        k = len(instrument.outcomes()[attribute])
        assert confusion.counts.shape == (k, k) and confusion.n == len(images)
        assert confusion.counts[confusion.labels.index(UNCLEAR)].sum() == 0  # nothing is truly unclear
        assert confusion.unclear_rate() == 0.0
    truth_counts = confusions["count"].counts.sum(1)
    expected = [sum(len(w["objects"]) == n for w in worlds) for n in (1, 2, 3)]
    assert truth_counts[:3].tolist() == expected  # rows are the true object counts of the renders


def test_unclear_is_an_outcome_not_a_drop(judge_folder, renders):
    images, worlds = renders
    doubtful = JudgeInstrument.load(judge_folder, unclear_below=1.01)  # no answer is ever that sure
    rows = doubtful.measure(images)
    assert len(rows) == len(images)
    assert all(row[a] == UNCLEAR for row in rows for a in ("count", "background", "people"))
    confusions = doubtful.validate_world(images, worlds)
    assert confusions["count"].unclear_rate() == 1.0 and confusions["count"].n == len(images)


def test_truth_and_features(judge_folder, renders):
    images, worlds = renders
    instrument = JudgeInstrument.load(judge_folder)
    truth = instrument.truth({"background": {"kind": "plain", "colour": "pink", "colour2": None},
                              "objects": [{"item": "dog", "category": "animal", "gender": "none",
                                           "skin_tone": None, "attire": None, "position": "centre"}]})
    assert truth == {"count": "1", "background": "pink", "people": "0", "gender": NONE, "skin_tone": NONE,
                     "attire": NONE}
    features = instrument.features(images[:4])
    assert features.shape[0] == 4 and np.isfinite(features).all()

"""The blank-prompt story: which judged images show it, shares with intervals per scale, the training and
matched shares, and a verdict that says "cannot tell" when the intervals straddle the training share."""

from __future__ import annotations

import pytest

from crayonbox.lab.analysis import Measured
from crayonbox.lab.reference import ReferenceItem
from crayonbox.lab.store import ImageRecord
from crayonbox.lab.story import measure_story, shows_story, story_lines, truth_shows_story

JUDGE = "judge-0000abcd"
GOOD_JUDGE = {"held_out_round_trip": {"summary": {"skin_tone": 0.95, "gender": 0.9, "attire": 0.97}}}
BLANK = [5, 6]
STORY_LABELS = {"gender": "woman", "attire": "sari", "skin_tone": "5", "people": "1"}
OTHER_LABELS = {"gender": "man", "attire": "none", "skin_tone": "2", "people": "1"}


def _person(gender: str, tone: int | None, position: str) -> dict:
    return {"category": "person", "item": "person", "gender": gender, "skin_tone": tone, "attire": None,
            "position": position}


SARI = {"category": "attire", "item": "sari", "gender": "none", "skin_tone": None, "attire": "sari"}
BACKGROUND = {"kind": "plain", "colour": "pink", "colour2": None}


def test_only_a_dark_skinned_woman_in_a_sari_shows_the_story():
    assert shows_story(STORY_LABELS) and shows_story(STORY_LABELS | {"skin_tone": "4"})
    for other in ({"skin_tone": "3"}, {"skin_tone": "mixed"}, {"attire": "kimono"}, {"attire": "mixed"},
                  {"gender": "mixed"}, {"gender": "unclear"}):
        assert not shows_story(STORY_LABELS | other), other
    # ground truth, summarised as the judge summarises: a dark-skinned woman beside the sari she wears
    woman_in_sari = {"background": BACKGROUND, "objects": [_person("woman", 5, "left"),
                                                           SARI | {"position": "right"}]}
    assert truth_shows_story(woman_in_sari)
    lighter = {"background": BACKGROUND, "objects": [_person("woman", 2, "left"), SARI | {"position": "right"}]}
    no_sari = {"background": BACKGROUND, "objects": [_person("woman", 5, "centre")]}
    assert not truth_shows_story(lighter) and not truth_shows_story(no_sari)
    assert truth_shows_story(None) is None


def _record(i: int, scale: float, prompt: str = "") -> ImageRecord:
    return ImageRecord(prompt=prompt, input_mode="normalised", family="null", normalized=" ", token_ids=BLANK,
                       uncond_ids=[], sampler={"condition_scale": scale}, seed=i, image_index=i, model_hash="m",
                       sha256=f"{prompt}-{scale}-{i}", path="", image_tokens=[])


def _world(story: bool) -> dict:
    if story:
        return {"background": BACKGROUND, "objects": [_person("woman", 5, "left"), SARI | {"position": "right"}]}
    return {"background": BACKGROUND, "objects": [_person("man", 2, "centre")]}


def _measured(hits_per_scale: dict[float, int], n: int = 200) -> tuple[Measured, list[ImageRecord]]:
    """A run with n images of "" per scale, hits of them showing the story, plus 200 images of another prompt
    that all show it (they must not count); a reference of 1000 items, 50 of them (5 %) the story, and of the
    100 items with the blank prompt's ids, 30 the story."""
    records, labels = [], {}
    for scale, hits in hits_per_scale.items():
        for i in range(n):
            r = _record(i, scale)
            records.append(r)
            labels[r.sha256] = STORY_LABELS if i < hits else OTHER_LABELS
    for i in range(200):
        r = _record(i, 3.0, prompt="a woman")
        records.append(r)
        labels[r.sha256] = STORY_LABELS
    items, ref_labels = [], {}
    for i in range(1000):
        blank = i < 100
        story = i < 30 or 100 <= i < 120
        items.append(ReferenceItem(f"k{i}", f"ref{i}", "", BLANK if blank else [9, i], _world(story)))
        ref_labels[f"ref{i}"] = STORY_LABELS if story else OTHER_LABELS
    return Measured({}, {JUDGE: labels}, items, {JUDGE: ref_labels}), records


def test_planted_shares_and_verdicts():
    measured, records = _measured({1.0: 80, 3.0: 90, 10.0: 120})
    story = measure_story(measured, records, JUDGE, BLANK, GOOD_JUDGE)
    assert [s.k for s in story.by_scale.values()] == [80, 90, 120] and list(story.by_scale) == [1.0, 3.0, 10.0]
    assert all(s.n == 200 for s in story.by_scale.values())
    assert story.training.share == pytest.approx(0.05) and story.matched.share == pytest.approx(0.30)
    assert story.training_truth.share == pytest.approx(0.05) and story.matched_truth.k == 30
    s1 = story.by_scale[1.0]
    assert s1.low == pytest.approx(0.3333, abs=2e-3) and s1.high == pytest.approx(0.4702, abs=2e-3)  # Wilson 80/200
    assert story.verdict() == "reproduced"
    assert "**The blank-prompt mode is reproduced**" in "\n".join(story_lines(story))

    # one scale whose interval reaches down to the training share: cannot tell
    measured, records = _measured({1.0: 80, 3.0: 14, 10.0: 120})
    assert measure_story(measured, records, JUDGE, BLANK, GOOD_JUDGE).verdict() == "cannot tell"
    # none at any scale: every interval at or below 5 %
    measured, records = _measured({1.0: 0, 3.0: 1, 10.0: 2})
    story = measure_story(measured, records, JUDGE, BLANK, GOOD_JUDGE)
    assert story.verdict() == "not reproduced" and "is not reproduced" in "\n".join(story_lines(story))


def test_without_a_reference_the_verdict_is_cannot_tell_and_says_why():
    measured, records = _measured({1.0: 150})
    measured.reference, measured.reference_labels = [], {}
    story = measure_story(measured, records, JUDGE, BLANK, GOOD_JUDGE)
    assert story.training is None and story.verdict() == "cannot tell"
    assert any("training share is unknown" in line for line in story_lines(story))
    assert story.to_dict()["verdict"] == "cannot tell" and story.to_dict()["by_scale"]["1"]["k"] == 150
    from crayonbox.lab.story import Story

    again = Story.from_dict(story.to_dict())
    assert again == story and story_lines(again) == story_lines(story)


def test_a_judge_below_its_round_trip_targets_withholds_the_verdict():
    measured, records = _measured({1.0: 80, 3.0: 90, 10.0: 120})
    weak = {"held_out_round_trip": {"summary": {"skin_tone": 0.95, "gender": 0.70, "attire": 0.97}}}
    story = measure_story(measured, records, JUDGE, BLANK, weak)
    assert story.verdict() == "withheld" and story.shortfalls() == ["gender 70.0% < 85%"]
    assert "**No verdict**" in "\n".join(story_lines(story)) and story.by_scale[1.0].k == 80  # shares still shown
    by_count = {c: {a: {"accuracy": v, "n": 100} for a, v in accuracy.items()} for c, accuracy in
                (("1", {"skin_tone": 0.98, "gender": 0.89, "attire": 0.99}),
                 ("3", {"skin_tone": 0.8, "gender": 0.6, "attire": 0.93}))}
    layered = measure_story(measured, records, JUDGE, BLANK, {"held_out_round_trip": weak["held_out_round_trip"]
                                                             | {"by_count": by_count}})
    assert layered.verdict() == "withheld"  # the gate reads the pooled accuracy, never a layout's
    assert ("By layout: 1 object: skin_tone 98.0%, gender 89.0%, attire 99.0%; 3 objects: skin_tone 80.0%, "
            "gender 60.0%, attire 93.0%.") in story_lines(layered)
    from crayonbox.lab.story import Story

    assert Story.from_dict(layered.to_dict()) == layered
    assert layered.blank_layout_accuracy is None  # no image of "" says its layout here

    # the images of "" read as one object when they show the story and as three when not: 300 of 600 each
    measured, records = _measured({1.0: 80, 3.0: 90, 10.0: 130})
    labels = measured.run_labels[JUDGE]
    for r in records:
        if r.prompt == "":
            labels[r.sha256] = {**labels[r.sha256], "count": "1" if shows_story(labels[r.sha256]) else "3"}
    mixed = measure_story(measured, records, JUDGE, BLANK, {"held_out_round_trip": weak["held_out_round_trip"]
                                                           | {"by_count": by_count}})
    assert mixed.blank_layout_accuracy["layouts"] == {"1": 0.5, "3": 0.5}
    estimate, low, high = mixed.blank_layout_accuracy["accuracy"]["gender"]
    # 0.5·0.89 + 0.5·0.6; variance 0.25·(0.89·0.11 + 0.6·0.4)/100
    assert (estimate, low, high) == pytest.approx((0.745, 0.745 - 0.05697, 0.745 + 0.05697), abs=2e-4)
    assert mixed.verdict() == "withheld" and Story.from_dict(mixed.to_dict()) == mixed
    assert any(line.startswith("Weighted by the layouts the judge reads in the images of `\"\"` (1 object 50%, "
                               "3 objects 50%): skin_tone 89.0% [") and "gender 74.5% [68.8%, 80.2%]" in line
               for line in story_lines(mixed))
    never_scored = measure_story(measured, records, JUDGE, BLANK, {"held_out": {}})
    assert never_scored.verdict() == "withheld" and "not scored on VQGAN round trips" in never_scored.shortfalls()[0]


def test_tone_agreement_counts_only_images_both_instruments_answer():
    from crayonbox.lab.story import tone_agreement

    skin = {"a": {"skin_tone": "5"}, "b": {"skin_tone": "4"}, "c": {"skin_tone": "unclear"}, "d": {"skin_tone": "2"},
            "e": {"skin_tone": "none"}}
    judge = {"a": {"skin_tone": "5"}, "b": {"skin_tone": "5"}, "c": {"skin_tone": "5"}, "d": {"skin_tone": "2"},
             "e": {"skin_tone": "none"}, "f": {"skin_tone": "1"}}
    agree = tone_agreement(Measured({}, {"skin": skin, "judge": judge}), "skin", "judge")
    assert (agree.k, agree.n) == (3, 4)  # a, d, e agree; b disagrees; c (unclear) and f (one reading) left out
    assert tone_agreement(Measured({}, {"skin": {}, "judge": judge}), "skin", "judge") is None

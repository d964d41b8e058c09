"""Reading an ablation: the committed results of a real 4-arm × 2-seed ablation of the planted world
(tests/lab/planted_ablation: `crayonbox lab ablate RUN --arms english_only:drop,english_only:off,dropout:off
--seeds 2 -n 300` on a `train all --recipe planted` run; only the JSON files are kept)."""

import json
import shutil
from pathlib import Path

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.lab.ablation import load_ablation
from crayonbox.lab.explain import _ablation_rows
from crayonbox.lab.verdict import find_causes

FIXTURE = Path(__file__).parent / "planted_ablation"


def test_effects_pair_each_arm_with_the_baseline_seed_by_seed():
    ablation = load_ablation(FIXTURE)
    assert not ablation.missing and set(ablation.results) == {"baseline", "english_only:drop", "english_only:off",
                                                                "dropout:off"}
    (drop,) = ablation.effects_for("", outcome="5", condition_scale=1.0, arm="english_only:drop")
    base = {s: r for s, r in ablation.results["baseline"].items()}
    arm = ablation.results["english_only:drop"]
    blank = [(c["counts"].get("5", 0), c["n"]) for s in (0, 1) for c in (base[s]["cells"][0], arm[s]["cells"][0])]
    # the effect is the mean over seeds of the paired differences of the read shares
    assert drop.effect.effect == pytest.approx(((blank[1][0] - blank[0][0]) / 300 + (blank[3][0] - blank[2][0]) / 300)
                                               / 2)
    assert drop.effect.effect < -0.7 and drop.effect.significant and drop.effect.interval[1] < -0.7
    # the meter separates tone 5 from the rest well enough for a corrected effect, which is larger
    assert drop.corrected is not None and drop.corrected[0] < drop.effect.effect


def test_an_arm_that_changes_no_caption_has_exactly_zero_effect():
    # english_only:off changes nothing in this all-English world: same captions, same seeds, same model
    ablation = load_ablation(FIXTURE)
    for effect in ablation.effects_for("", arm="english_only:off"):
        assert effect.effect.effect == 0 and not effect.effect.significant


def test_prompts_with_the_same_ids_share_one_probe_and_the_verdict_names_english_only():
    ablation = load_ablation(FIXTURE)
    cells = ablation.results["baseline"][0]["cells"]
    blank = [c for c in cells if c["ids"] == cells[0]["ids"]]
    assert {c["prompt"] for c in blank} >= {"", " ", "."} and len({c["probed_as"] for c in blank}) == 1
    rows = _ablation_rows(ablation, "5", 1.0)
    assert rows[0].arm == "english_only:drop" and rows[0].description == "english_only policy set to drop"
    from crayonbox.lab.explanation import Outcome

    outcome = Outcome("skin_tone", "5", 1.0, 300, 0.82, 0.89, (0.84, 0.94), 0.495, {})
    assert find_causes(outcome, rows) == ["english_only"]


def test_a_folder_of_another_run_or_no_ablation_is_refused(tmp_path):
    with pytest.raises(CrayonboxError, match="is an ablation of"):
        load_ablation(FIXTURE, run=tmp_path)
    with pytest.raises(CrayonboxError, match="not an ablation folder"):
        load_ablation(tmp_path)


def test_unfinished_jobs_are_listed_not_guessed(tmp_path):
    copy = tmp_path / "abl"
    shutil.copytree(FIXTURE, copy)
    (copy / "arms" / "dropout-off" / "seed1" / "result.json").unlink()
    ablation = load_ablation(copy)
    assert ablation.missing == ["dropout:off seed 1"]
    (effect,) = ablation.effects_for("", outcome="5", arm="dropout:off")
    assert [s.seed for s in effect.effect.arm_seeds] == [0]
    assert json.loads(json.dumps(ablation.to_dict()))["missing"] == ["dropout:off seed 1"]

"""`lab explain` names the planted cause (or none) on worlds trained from scratch: slow (about 8 minutes a
world on 2 cores: the planted recipe, a 2-seed ablation of the steps blame finds necessary, the explanation).

Each world plants one mechanism (tests/lab/worlds/*.yaml, planted.yaml in the package):
- planted: empty Flickr titles of dark-skinned people, blanked by english_only ("undetermined"); the
  hand-made counterfactual (blank captions dropped instead of kept, ~1.5 min retrain) moved the blank
  prompt's tone-5 share from 85.0 % [80.5, 88.6] to 21.3 % [17.1, 26.3], −64 points;
- language: Hindi captions blanked by english_only;
- short: one-word captions blanked by min_length;
- majority: 80 % tone 5, captions missing at the same rate for both tones: the blank prompt mirrors the data;
- null: 50/50, nothing planted: nothing significant.
"""

import json
from pathlib import Path

import pytest

from crayonbox.cli import main

WORLDS = Path(__file__).parent / "worlds"
CASES = {
    "planted": (None, ["english_only"]),
    "language": (WORLDS / "language.yaml", ["english_only"]),
    "short": (WORLDS / "short.yaml", ["min_length"]),
    "majority": (WORLDS / "majority.yaml", []),
    "null": (WORLDS / "null.yaml", []),
}


def _explain(tmp: Path, name: str, world: Path | None) -> dict:
    run, abl, out = tmp / f"{name}-run", tmp / f"{name}-abl", tmp / f"{name}-explain"
    assert main(["train", "all", "--recipe", "planted", "--out", str(run), "--quiet"]
                + (["--world", str(world)] if world else [])) == 0
    assert main(["lab", "ablate", str(run), "--seeds", "2", "-n", "300", "--out", str(abl), "--quiet"]) == 0
    assert main(["lab", "explain", str(run), "--ablation", str(abl), "-n", "300", "--condition-scale", "1,10",
                 "--out", str(out), "--quiet"]) == 0
    assert "<script" not in (out / "explanation.html").read_text(encoding="utf-8").lower()
    return json.loads((out / "explanation.json").read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_explain_names_the_planted_cause(tmp_path, name):
    world, causes = CASES[name]
    found = _explain(tmp_path, name, world)
    assert found["verdict"]["causes"] == causes, found["conclusion"]
    truth = found["matched"]["share"]  # ground truth of the items captioned like the blank prompt
    low, high = found["outcome"]["interval"]
    assert low <= truth <= high, (found["outcome"], truth)
    if name == "planted":
        # the hand-made counterfactual, −64 points, lies within the ablation's interval
        drop = [a for a in found["ablations"] if a["arm"] == "english_only:drop"]
        assert drop and drop[0]["interval"][0] <= -0.637 <= drop[0]["interval"][1], drop
    if name == "majority":
        assert found["verdict"]["hypotheses"]["majority"] == "supported"
    if name == "null":
        assert not any(a["significant"] for a in found["ablations"])
        low, high = found["outcome"]["interval"]
        assert low <= found["outcome"]["training_share"] <= high

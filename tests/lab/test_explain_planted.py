"""`lab explain` names the planted cause (or none) on worlds trained from scratch: slow (about 8 minutes a
world on 2 cores: the planted recipe, a 2-seed ablation of the steps blame finds necessary, the explanation).

Each world plants one mechanism (tests/lab/worlds/*.yaml, planted.yaml in the package):
- planted: empty Flickr titles of dark-skinned people, blanked by english_only ("undetermined");
- language: Hindi captions blanked by english_only;
- short: one-word captions blanked by min_length;
- majority: 80 % tone 5, captions missing at the same rate for both tones: the blank prompt mirrors the data;
- null: 50/50, nothing planted: nothing significant.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
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


def _train(run: Path, world: Path | None) -> Path:
    assert main(["train", "all", "--recipe", "planted", "--out", str(run), "--quiet"]
                + (["--world", str(world)] if world else [])) == 0
    return run


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("planted") / "run", None)


def _explain(tmp: Path, name: str, world: Path | None, run: Path | None = None) -> dict:
    abl, out = tmp / f"{name}-abl", tmp / f"{name}-explain"
    run = run or _train(tmp / f"{name}-run", world)
    assert main(["lab", "ablate", str(run), "--seeds", "2", "-n", "300", "--out", str(abl), "--quiet"]) == 0
    assert main(["lab", "explain", str(run), "--ablation", str(abl), "-n", "300", "--condition-scale", "1,10",
                 "--out", str(out), "--quiet"]) == 0
    assert "<script" not in (out / "explanation.html").read_text(encoding="utf-8").lower()
    return json.loads((out / "explanation.json").read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_explain_names_the_planted_cause(tmp_path, name, request):
    world, causes = CASES[name]
    found = _explain(tmp_path, name, world, request.getfixturevalue("planted_run") if name == "planted" else None)
    assert found["verdict"]["causes"] == causes, found["conclusion"]
    truth = found["matched"]["share"]  # ground truth of the items captioned like the blank prompt
    low, high = found["outcome"]["interval"]
    assert low <= truth <= high, (found["outcome"], truth)
    if name == "planted":
        # The hand-made counterfactual moved the blank prompt by −64 points [−69, −57]; retrained here with two
        # seeds the same change moves it by about −80 (its images are light-skinned faces, read as tone 1 at
        # any meter threshold): same direction and verdict, a larger drop. Assert what must hold.
        drop = [a for a in found["ablations"] if a["arm"] == "english_only:drop"]
        assert drop and drop[0]["significant"] and drop[0]["interval"][1] < -0.5, drop
    if name == "majority":
        assert found["verdict"]["hypotheses"]["majority"] == "supported"
    if name == "null":
        assert not any(a["significant"] for a in found["ablations"])
        low, high = found["outcome"]["interval"]
        assert low <= found["outcome"]["training_share"] <= high


def _ablate_argv(run: Path, out: Path) -> list[str]:
    return ["lab", "ablate", str(run), "--arms", "english_only:drop", "--seeds", "2", "-n", "60", "--out", str(out),
            "--quiet"]


@pytest.mark.slow
def test_ablation_resumes_after_kill_9_with_nothing_lost_or_redone(tmp_path, planted_run):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(_ablate_argv(planted_run, straight)) == 0
    proc = subprocess.Popen([sys.executable, "-m", "crayonbox.cli", *_ablate_argv(planted_run, killed)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # kill once a retrained model has a checkpoint, i.e. mid-training of the first jobs
    while time.time() < deadline and not list(killed.glob("arms/*/seed*/model/train/checkpoint.pt")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # workers die with their parent (PR_SET_PDEATHSIG); give the kernel a moment
    assert main(_ablate_argv(planted_run, killed)) == 0
    for result in straight.glob("arms/*/seed*/result.json"):
        twin = killed / result.relative_to(straight)
        a, b = json.loads(result.read_text()), json.loads(twin.read_text())
        assert [c["counts"] for c in a["cells"]] == [c["counts"] for c in b["cells"]], result
    for db in killed.glob("arms/*/seed*/probe/lab.sqlite"):
        rows = sqlite3.connect(db).execute("SELECT COUNT(*), COUNT(DISTINCT prompt || input_mode || settings || "
                                           "seed) FROM images").fetchone()
        assert rows[0] == rows[1]  # nothing duplicated

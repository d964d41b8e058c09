"""The judge: labels from world truth, slot geometry, training on a mini world (far above chance, files
written, deterministic, resumable), loading, and reading a world folder's config back."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from judge_helpers import MINI_JUDGE, mini_judge, shared_mini_judge

from crayonbox.errors import CrayonboxError
from crayonbox.model.judge import (
    NONE,
    SLOTS,
    Judge,
    attribute_names,
    labels_of,
    scene_summary,
    slot_boxes,
)

WOMAN_IN_SARI = {"background": {"kind": "gradient", "colour": "blue", "colour2": "white"},
                 "objects": [{"item": "person", "category": "person", "gender": "woman", "skin_tone": 4,
                              "attire": None, "position": "left"},
                             {"item": "sari", "category": "attire", "gender": "none", "skin_tone": None,
                              "attire": "sari", "position": "right"}]}


def test_labels_of_world_truth():
    labels = labels_of(WOMAN_IN_SARI)
    assert set(labels) == set(attribute_names())
    assert labels["count"] == "2" and labels["background_colour2"] == "white"
    assert (labels["left_item"], labels["left_gender"], labels["left_skin_tone"]) == ("person", "woman", "4")
    right = (labels["right_category"], labels["right_attire"], labels["right_skin_tone"])
    assert right == ("attire", "sari", NONE)
    assert all(labels[f"centre_{a}"] == NONE for a in ("category", "item", "gender", "skin_tone", "attire"))
    yellow = {**WOMAN_IN_SARI, "objects": [{**WOMAN_IN_SARI["objects"][0], "skin_tone": None}]}
    assert labels_of(yellow)["left_skin_tone"] == "yellow"
    with pytest.raises(CrayonboxError, match="1–3 objects"):
        labels_of({**WOMAN_IN_SARI, "objects": []})


def test_scene_summary():
    summary = scene_summary(labels_of(WOMAN_IN_SARI))
    assert summary == {"count": "2", "background": "blue", "categories": "attire+person", "people": "1",
                       "gender": "woman", "skin_tone": "4", "attire": "sari"}
    two = labels_of({**WOMAN_IN_SARI, "objects": [WOMAN_IN_SARI["objects"][0],
                                                  {**WOMAN_IN_SARI["objects"][0], "gender": "man",
                                                   "position": "right"}]})
    assert scene_summary(two)["gender"] == "mixed" and scene_summary(two)["skin_tone"] == "4"


def test_slot_summary_counts_person_confusions():
    from crayonbox.train.judge_train import _slot_summary

    truth = labels_of(WOMAN_IN_SARI)  # a woman of tone 4 on the left, a sari on the right
    as_man = {**truth, "left_gender": "man"}
    as_tone5 = {**truth, "left_skin_tone": "5", "right_item": "dress"}
    summary = _slot_summary([(truth, truth), (as_man, truth), (as_tone5, truth)])
    assert summary["gender"] == {"accuracy": pytest.approx(2 / 3), "n": 3,
                                 "confusion": {"woman": {"man": 1, "woman": 2}}}
    assert summary["skin_tone"]["confusion"] == {"4": {"4": 2, "5": 1}}
    assert summary["item"] == {"accuracy": pytest.approx(5 / 6), "n": 6}  # both slots scored, no confusion


@pytest.mark.parametrize("size", [16, 32, 64])
def test_slot_boxes_cover_each_slot_inside_the_image(size):
    for count, slots in ((1, ("centre",)), (2, ("left", "right")), (3, SLOTS)):
        boxes = slot_boxes(count, size)
        assert tuple(boxes) == slots
        for index, (x0, y0, x1, y1) in enumerate(boxes.values()):
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size and x1 - x0 == y1 - y0
            centre = (index + 0.5) * size / count
            assert x0 <= centre <= x1  # the slot centre is inside its crop


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_mini_judge(tmp_path_factory)


def test_judge_beats_chance_by_a_wide_margin_and_writes_its_folder(trained):
    world, folder, metrics = trained
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "metrics.json"}
    assert not (folder / "judge-checkpoint.pt").exists()
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["held_out"]["summary"] == pytest.approx(metrics["held_out"]["summary"], nan_ok=True)
    held = metrics["held_out"]["summary"]
    # chance: count 1/3, background 1/6, category 1/3, item 1/7, skin tone 1/6 (of people)
    assert held["count"] >= 0.9 and held["background_colour"] >= 0.9
    assert held["category"] >= 0.8 and held["item"] >= 0.5 and held["skin_tone"] >= 0.4
    assert metrics["held_out"]["n"] == MINI_JUDGE["eval_images"]
    assert metrics["world_sample"]["n"] == MINI_JUDGE["world_sample"]  # the real world folder, read too
    assert metrics["world_sample"]["summary"]["count"] >= 0.9
    assert metrics["seconds"]["train"] > 0


def test_loaded_judge_predicts_what_it_was_evaluated_with(trained):
    world, folder, metrics = trained
    from crayonbox.train.judge_data import world_sample

    judge = Judge.load(folder)
    images, labels = world_sample(world, 30)
    predicted = judge.predict(list(images))
    assert len(predicted) == 30 and set(predicted[0]) == set(attribute_names())
    assert sum(p["count"] == t["count"] for p, t in zip(predicted, labels, strict=True)) >= 24  # chance ≈ 15
    assert all(p["centre_category"] == NONE for p in predicted if p["count"] == "2")  # layout respected
    unclear = judge.predict(list(images[:3]), unclear_below=1.01)
    assert all(v == "unclear" for row in unclear for v in row.values())
    features = judge.features(list(images[:5]))
    width = judge.config.net.scene_feature_dim + judge.config.net.feature_dim
    assert features.shape == (5, width) and features.dtype.name == "float64"
    resized = judge.predict([im.repeat(2, 0).repeat(2, 1) for im in images[:3]])  # any size goes
    assert [r["count"] for r in resized] == [p["count"] for p in predicted[:3]]


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(CrayonboxError, match="not a judge folder"):
        Judge.load(tmp_path)


TINY = dict(train_images=96, eval_images=10, world_sample=0, epochs=2, batch_size=32, warmup_steps=2, width=4,
            crop_size=16, workers=1, threads=1, progress=False)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_training_is_deterministic_and_resumes_exactly(trained, tmp_path, monkeypatch):
    world = trained[0]
    mini_judge(world, tmp_path / "a", **TINY)
    mini_judge(world, tmp_path / "b", **TINY)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # kill the run during its second epoch, then resume: same weights as the uninterrupted run
    from crayonbox.train import judge_train

    original = judge_train.TrainingSet.batches

    def dies_in_epoch_two(self, epoch, seed, augment):
        if epoch == 1:
            raise KeyboardInterrupt
        yield from original(self, epoch, seed, augment)

    monkeypatch.setattr(judge_train.TrainingSet, "batches", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        mini_judge(world, tmp_path / "c", **TINY)
    assert (tmp_path / "c" / "judge-checkpoint.pt").exists()
    monkeypatch.setattr(judge_train.TrainingSet, "batches", original)
    with pytest.raises(CrayonboxError, match="another judge run"):
        mini_judge(world, tmp_path / "c", **(TINY | {"seed": 1}))
    mini_judge(world, tmp_path / "c", **TINY)
    c = _weights(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def test_world_folder_config_reads_back(trained):
    from crayonbox.data.world.config import load_world_config
    from crayonbox.train.judge_data import load_world, neutral_config

    world = trained[0]
    config, provenance = load_world(world)
    original = load_world_config(world.parent / "mini.yaml")
    assert _rounded(asdict(config)) == _rounded(asdict(original))  # the manifest re-normalises mixes
    assert provenance["folder"] == str(world.resolve())
    neutral = neutral_config(config, 0.5)
    assert neutral.cooccurrence == {} and neutral.categories["person"] == 0.5
    assert len(set(neutral.person["skin_tone"].values())) == 1  # uniform tones: no prior to learn
    with pytest.raises(CrayonboxError, match="neither a world folder"):
        load_world(world.parent / "nowhere")


def test_train_judge_command_writes_a_judge_and_prints_its_accuracy(tmp_path, capsys):
    from judge_helpers import mini_world

    from crayonbox.cli import main

    world = mini_world(tmp_path / "world", n=40)
    code = main(["train", "judge", "--world", str(world), "--out", str(tmp_path / "judge"), "--train-images",
                 "60", "--eval-images", "20", "--world-sample", "10", "--epochs", "1", "--width", "8",
                 "--crop-size", "16", "--workers", "1", "--threads", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy" in printed and "background_colour" in printed
    judge = Judge.load(tmp_path / "judge")
    metrics = json.loads((tmp_path / "judge" / "metrics.json").read_text())
    assert metrics["held_out"]["n"] == 20 and judge.config.vocab["count"]


def test_judge_learns_and_is_scored_on_vqgan_round_trips(trained, tmp_path):
    """With --vqgan, a share of the training renders and a copy of the held-out ones pass through that VQGAN:
    a random-weight VQGAN wrecks colours, so the round-trip accuracy must be reported apart and fall below the
    clean one, which stays well above chance (half the training renders are still clean)."""
    import torch

    from crayonbox.config import VQGAN_PRESETS
    from crayonbox.model.vqgan import VQGAN
    from crayonbox.model_folder import save_component

    world, _, clean_metrics = trained
    torch.manual_seed(0)
    cfg = VQGAN_PRESETS["small32"]
    save_component(tmp_path / "vq", "vqgan", cfg.to_dict(), VQGAN(cfg).state_dict())
    metrics = mini_judge(world, tmp_path / "judge", round_trip_vqgan=str(tmp_path / "vq" / "vqgan"))
    trip = metrics["held_out_round_trip"]
    assert trip["n"] == MINI_JUDGE["eval_images"] and metrics["round_trip_vqgan"].endswith("vqgan")
    assert metrics["held_out"]["summary"]["count"] >= 0.55  # chance 1/3; half the renders it learnt from are wrecked
    assert trip["summary"]["background_colour"] < metrics["held_out"]["summary"]["background_colour"] - 0.2
    by_count = trip["by_count"]  # the same summary per layout, with its sample sizes adding up
    assert set(by_count) <= {"1", "2", "3"} and len(by_count) >= 2
    people = sum(part["gender"]["n"] for part in by_count.values())
    pooled = sum(part["gender"]["accuracy"] * part["gender"]["n"] for part in by_count.values() if part["gender"]["n"])
    assert pooled / people == pytest.approx(trip["summary"]["gender"])
    for part in by_count.values():  # each layout's confusion holds its scored slots, its diagonal the hits
        for kind in ("gender", "skin_tone"):
            table = part[kind]["confusion"]
            assert sum(sum(row.values()) for row in table.values()) == part[kind]["n"]
            hits = sum(row.get(true, 0) for true, row in table.items())
            assert hits == round(part[kind]["accuracy"] * part[kind]["n"]) if part[kind]["n"] else hits == 0
    assert "confusion" not in by_count[next(iter(by_count))]["item"]  # only the person attributes

    tiny = VQGAN_PRESETS["tiny"]  # 16 px: not this 32 px world's
    save_component(tmp_path / "vq16", "vqgan", tiny.to_dict(), VQGAN(tiny).state_dict())
    with pytest.raises(CrayonboxError, match="draws 16 px images but the world renders 32 px"):
        mini_judge(world, tmp_path / "judge16", round_trip_vqgan=str(tmp_path / "vq16"))

"""`crayonbox eval`: adherence matching and chance, the Fréchet distance, held-out compositions, and the
whole evaluation of the tiny random model (numbers in [0, 1], adherence at chance, files written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from judge_helpers import shared_mini_judge

from crayonbox.errors import CrayonboxError
from crayonbox.model.judge import labels_of
from crayonbox.train.eval_metrics import (
    adherence,
    distribution,
    expectation_of,
    frechet_distance,
    image_checks,
    match_objects,
    total_variation,
)

DOG = {"item": "dog", "category": "animal", "gender": "none", "skin_tone": None, "attire": None}
WOMAN = {"item": "person", "category": "person", "gender": "woman", "skin_tone": 5, "attire": None}


def scene(objects, colour="blue"):
    positions = {1: ["centre"], 2: ["left", "right"], 3: ["left", "centre", "right"]}[len(objects)]
    return {"background": {"kind": "plain", "colour": colour, "colour2": None},
            "objects": [o | {"position": p} for o, p in zip(objects, positions, strict=True)]}


def test_expectation_names_only_what_the_prompt_fixes():
    e = expectation_of(scene([WOMAN, DOG]))
    assert e.objects[0] == {"category": "person", "item": "person", "gender": "woman", "skin_tone": "5"}
    assert e.objects[1] == {"category": "animal", "item": "dog"}  # a dog has no gender to ask for
    assert e.scene == {"count": "2", "background_colour": "blue", "background_kind": "plain"}
    yellow = expectation_of(scene([WOMAN | {"skin_tone": None}]))
    assert "skin_tone" not in yellow.objects[0]  # "a woman" says nothing about skin tone


def test_objects_match_in_any_slot_order():
    asked = expectation_of(scene([WOMAN, DOG])).objects
    swapped = [{"category": "animal", "item": "dog", "gender": "none", "skin_tone": "none"},
               {"category": "person", "item": "person", "gender": "woman", "skin_tone": "5"}]
    swapped = [s | {"attire": "none"} for s in swapped]
    assert all(all(h.values()) for h in match_objects(asked, swapped))
    hits = match_objects(asked, swapped[:1])  # the woman is missing
    assert hits[1] == {"category": True, "item": True} and not any(hits[0].values())


def test_image_checks_and_adherence_against_chance():
    prompts = [scene([WOMAN], "blue"), scene([DOG], "red"), scene([WOMAN, DOG], "green"),
               scene([DOG], "blue")]
    expected = [expectation_of(p) for p in prompts]
    perfect = [labels_of(p) for p in prompts]
    checks = image_checks(expected[2], perfect[2])
    assert checks["all"] and checks["skin_tone"] and checks["count"]
    wrong_tone = dict(perfect[0], centre_skin_tone="1")
    assert not image_checks(expected[0], wrong_tone)["skin_tone"]
    assert not image_checks(expected[0], wrong_tone)["all"] and image_checks(expected[0], wrong_tone)["item"]
    result = adherence(expected, perfect)
    assert result["adherence"]["all"] == 1.0 and result["images"] == 4
    assert result["applies_to"]["skin_tone"] == 2 and result["applies_to"]["item"] == 4
    assert result["chance"]["all"] < 0.5 and result["chance"]["background_colour"] == 0.25
    with pytest.raises(ValueError):
        adherence(expected, perfect[:2])


def test_adherence_by_asked_value_separates_a_gender_free_word_from_a_named_gender():
    neutral = WOMAN | {"gender": "neutral"}
    prompts = [scene([WOMAN]), scene([WOMAN, DOG]), scene([neutral]), scene([neutral]), scene([neutral])]
    expected = [expectation_of(p) for p in prompts]
    drawn = [labels_of(scene([WOMAN])), labels_of(scene([WOMAN, DOG])), labels_of(scene([WOMAN])),
             labels_of(scene([WOMAN | {"gender": "man"}])), labels_of(scene([neutral]))]
    result = adherence(expected, drawn)
    assert result["adherence"]["gender"] == pytest.approx(3 / 5)
    assert result["by_asked"]["gender"] == {"neutral": {"adherence": pytest.approx(1 / 3), "n": 3},
                                            "woman": {"adherence": 1.0, "n": 2}}
    assert result["by_asked"]["skin_tone"] == {"5": {"adherence": 1.0, "n": 5}}


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-6)  # only the means differ
    # diagonal covariances: Σ (σa + σb − 2√(σa σb)) = (2 − 1)² + 0 + 0 for a standard deviation of 2 vs 1
    wide = a * np.array([2.0, 1.0, 1.0])
    assert frechet_distance(a, wide) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], a)


def test_distribution_and_total_variation():
    d = distribution([{"x": "a"}, {"x": "a"}, {"x": "b"}, {"x": "c"}])
    assert d == {"x": {"a": 0.5, "b": 0.25, "c": 0.25}}
    assert total_variation(d["x"], {"a": 1.0}) == 0.5
    assert total_variation(d["x"], d["x"]) == 0.0


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return shared_mini_judge(tmp_path_factory)


def test_held_out_scenes_never_occur_in_training(mini):
    from crayonbox.data.world.build import make_world
    from crayonbox.train.eval import _scene_key, held_out_scenes, training_compositions
    from crayonbox.train.judge_data import load_world

    world_folder = mini[0]
    seen = training_compositions(world_folder)
    assert 10 < len(seen) <= 80
    world = make_world(load_world(world_folder)[0])
    scenes = held_out_scenes(world, 2, 15, seen, seed=0, key=7, max_draws=50)
    keys = [_scene_key(s) for s in scenes]
    assert len(scenes) == 15 and all(len(s.objects) == 2 for s in scenes)
    assert not set(keys) & seen and len(set(keys)) == len(keys)


def test_evaluate_tiny_random_model_end_to_end(mini, tiny_model_dir, tmp_path):
    from crayonbox.train.eval import evaluate

    world, judge, _ = mini
    out = tmp_path / "eval"
    result = evaluate(tiny_model_dir, judge, out, world=world, prompts=16, blank=8, reference=40, batch=16,
                      progress=False)
    assert {p.name for p in out.iterdir()} >= {"eval.json", "samples.png", "samples.json"}
    assert json.loads((out / "eval.json").read_text())["by_objects"].keys() == {"1", "2"}
    for block in result["by_objects"].values():
        assert block["prompts"] == 16
        for table in ("adherence", "chance", "ceiling", "ceiling_vqgan"):  # the tiny model has an encoder
            assert all(0.0 <= v <= 1.0 for v in block[table].values())
        # a random model ignores its prompt: its adherence is the chance level, not more
        for attribute, share in block["adherence"].items():
            assert share <= block["chance"][attribute] + 0.3, attribute
        assert block["adherence"]["all"] <= 0.2
        assert block["ceiling"]["count"] >= 0.8  # the judge does read true renders of the same prompts
    frechet = result["frechet"]
    assert frechet["generated_vs_renders"] > 2 * frechet["renders_vs_renders"] > 0  # noise is far away
    blank = result["blank"]
    assert blank["images"] == 8 and blank["reference_images"] == 40
    for shares in (*blank["judged"].values(), *blank["training_truth"].values()):
        assert sum(shares.values()) == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in blank["tv_to_training_judged"].values())
    cells = json.loads((out / "samples.json").read_text())["cells"]
    assert len(cells) == 8 * 4 + 8 and cells[-1] == "(blank prompt)"


def test_evaluate_rejects_bad_options(mini, tiny_model_dir, tmp_path):
    from crayonbox.train.eval import evaluate

    with pytest.raises(CrayonboxError, match="at least 2"):
        evaluate(tiny_model_dir, mini[1], tmp_path, world=mini[0], prompts=1)
    with pytest.raises(TypeError):
        evaluate(tiny_model_dir, mini[1], tmp_path, world=mini[0], nonsense=3)


def test_eval_command_line(mini, tiny_model_dir, tmp_path, capsys):
    import argparse

    from crayonbox.train.cli import register_eval_command

    parser = argparse.ArgumentParser()
    register_eval_command(parser.add_subparsers())
    args = parser.parse_args(["eval", str(tiny_model_dir), "--judge", str(mini[1]), "--world", str(mini[0]),
                              "--out", str(tmp_path / "e"), "--n", "3", "--blank", "2", "--reference", "10",
                              "--quiet"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "1-object held-out prompts (3): adherence" in printed and "Fréchet distance" in printed
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["config"]["prompts"] == 3


def test_shipped_model_evaluates_with_its_own_judge_without_world(tmp_path):
    # the shipped judge records the folder of the machine that trained it; eval falls back to the world
    # config the model folder ships, and says that nothing is known to be held out
    import shutil

    from crayonbox import default_model_dir
    from crayonbox.train.eval import evaluate

    model = default_model_dir()
    judge = tmp_path / "judge"  # as on any machine but the one that trained it: the recorded folder is absent
    shutil.copytree(model / "judge", judge)
    config = json.loads((judge / "config.json").read_text(encoding="utf-8"))
    config["world"]["folder"] = str(tmp_path / "not-here")
    (judge / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = evaluate(model, judge, tmp_path / "e", prompts=2, blank=2, reference=2, progress=False)
    assert result["world"].get("config_file", "").endswith("world.yaml") or "folder" not in result["world"]
    assert result["held_out_rule"].startswith("none")
    assert result["by_objects"]["1"]["prompts"] == 2

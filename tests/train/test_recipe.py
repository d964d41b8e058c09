"""`crayonbox train all`: stages run in order, finished ones are skipped on a re-run, time is budgeted."""

from __future__ import annotations

import json

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.train import recipe


def fake_stages(monkeypatch, calls: list, fail_at: str | None = None, caps: dict | None = None) -> None:
    def make(name):
        def stage(run):
            calls.append(name)
            if caps is not None:
                caps[name] = run.minutes_left(name)
            if name == fail_at:
                raise KeyboardInterrupt  # as if killed in the middle of this stage
            return {"stage": name}
        return stage

    monkeypatch.setattr(recipe, "STAGE_FUNCTIONS", {name: make(name) for name in recipe.STAGES})


def test_a_rerun_skips_finished_stages_and_continues_where_it_stopped(tmp_path, monkeypatch):
    calls: list[str] = []
    fake_stages(monkeypatch, calls, fail_at="encode")
    with pytest.raises(KeyboardInterrupt):
        recipe.run_recipe("smoke", tmp_path)
    assert calls == ["world", "captions", "tokenizer", "vqgan", "encode"]
    table = json.loads((tmp_path / "recipe.json").read_text())
    assert [s["name"] for s in table["stages"]] == ["world", "captions", "tokenizer", "vqgan"]

    calls.clear()
    fake_stages(monkeypatch, calls)
    table = recipe.run_recipe("smoke", tmp_path)
    assert calls == ["encode", "model", "judge", "eval"]
    assert [(s["name"], s["ran_now"]) for s in table["stages"]] == [(n, n in calls) for n in recipe.STAGES]
    assert all(s["summary"] == {"stage": s["name"]} and s["seconds"] >= 0 for s in table["stages"])
    assert json.loads((tmp_path / "recipe.json").read_text())["stages"][-1]["name"] == "eval"

    with pytest.raises(CrayonboxError, match="recipe 'smoke'"):
        recipe.run_recipe("default", tmp_path)
    with pytest.raises(CrayonboxError, match="unknown recipe"):
        recipe.run_recipe("nope", tmp_path / "other")


def test_training_stages_get_the_budget_minus_the_plans_of_later_stages(tmp_path, monkeypatch):
    calls, caps = [], {}
    fake_stages(monkeypatch, calls, caps=caps)
    recipe.run_recipe("default", tmp_path, minutes=90)
    plan = recipe.RECIPES["default"].plan_minutes
    # The fake stages take no time, so the VQGAN may use everything but the plans of the stages after it.
    after_vqgan = sum(plan[s] for s in ("encode", "model", "judge", "eval"))
    assert caps["vqgan"] == pytest.approx(90 - after_vqgan, abs=0.01)
    assert caps["model"] == pytest.approx(90 - plan["judge"] - plan["eval"], abs=0.01)
    assert sum(plan.values()) <= 90


def test_default_recipe_shapes_fit_together():
    from crayonbox.train.model import TRAIN_PRESETS
    from crayonbox.train.vqgan import TRAIN_VQGAN_PRESETS

    default = recipe.RECIPES["default"]
    vq = TRAIN_VQGAN_PRESETS[default.vqgan["preset"]]
    assert vq.resolution == default.world_size and vq.tokens_side == 8
    assert TRAIN_PRESETS[default.model["preset"]].text_length == default.text_length


@pytest.mark.slow
def test_smoke_recipe_runs_every_stage_and_makes_a_loadable_model(tmp_path):
    from crayonbox.pipeline import Pipeline

    table = recipe.run_recipe("smoke", tmp_path / "run", progress=False)
    assert [s["name"] for s in table["stages"]] == list(recipe.STAGES)
    pipe = Pipeline.from_pretrained(tmp_path / "run" / "model")
    assert pipe(" a dog", seed=0).images[0].size == (16, 16)
    assert (tmp_path / "run" / "judge").is_dir() and (tmp_path / "run" / "eval" / "eval.json").exists()
    again = recipe.run_recipe("smoke", tmp_path / "run", progress=False)
    assert not any(s["ran_now"] for s in again["stages"])

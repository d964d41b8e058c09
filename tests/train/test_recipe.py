"""`crayonbox train all`: stages run in order, finished ones are skipped on a re-run, time is budgeted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from crayonbox.errors import CrayonboxError
from crayonbox.run_record import read_run_record
from crayonbox.train import recipe

NULL_WORLD = Path(__file__).parents[1] / "lab" / "worlds" / "null.yaml"


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
    for minutes in (0, -3, float("nan"), float("inf")):
        with pytest.raises(CrayonboxError, match="--minutes must be a positive number"):
            recipe.run_recipe("smoke", tmp_path / "budget", minutes=minutes)
    assert not (tmp_path / "budget").exists()


def test_training_stages_get_the_budget_minus_the_scaled_plans_of_later_stages(tmp_path, monkeypatch):
    plan = recipe.RECIPES["default"].plan_minutes
    assert sum(plan.values()) <= 120  # the recipe's limit on 2 cores
    before_encode = sum(plan[s] for s in ("world", "captions", "tokenizer", "vqgan"))
    after_vqgan = sum(plan[s] for s in ("encode", "model", "judge", "eval"))
    for factor in (0.5, 1.0, 3.0):
        calls, caps = [], {}
        fake_stages(monkeypatch, calls, caps=caps)
        budget = factor * sum(plan.values())
        recipe.run_recipe("default", tmp_path / str(factor), minutes=budget)
        # The fake stages take no time, so each training stage may use the budget but the scaled plans of the
        # stages after it: a longer budget does not all go to the VQGAN, which comes first.
        assert caps["vqgan"] == pytest.approx(budget - factor * after_vqgan, abs=0.01)
        assert caps["vqgan"] == pytest.approx(factor * before_encode, abs=0.01)
        assert caps["model"] == pytest.approx(budget - factor * (plan["judge"] + plan["eval"]), abs=0.01)


def test_codes16_is_the_default_with_16x16_codes():
    default, codes16 = recipe.RECIPES["default"], recipe.RECIPES["codes16"]
    assert codes16.vqgan == {**default.vqgan, "preset": "small32f2"}
    assert (codes16.model, codes16.judge, codes16.eval, codes16.world_items) == (
        default.model, default.judge, default.eval, default.world_items)
    assert sum(codes16.plan_minutes.values()) <= 120


def test_default_recipe_shapes_fit_together():
    from crayonbox.train.model import TRAIN_PRESETS
    from crayonbox.train.vqgan import TRAIN_VQGAN_PRESETS

    for name, side in (("default", 8), ("codes16", 16)):
        r = recipe.RECIPES[name]
        vq = TRAIN_VQGAN_PRESETS[r.vqgan["preset"]]
        assert vq.resolution == r.world_size and vq.tokens_side == side
        assert TRAIN_PRESETS[r.model["preset"]].text_length == r.text_length


def folder_state(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_a_run_records_its_world_pipeline_and_seed_and_refuses_other_ones(tmp_path, monkeypatch):
    fake_stages(monkeypatch, [])
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("steps:\n- {step: normalize}\n- {step: dropout, p: 0.25}\n")
    run = tmp_path / "run"
    recipe.run_recipe("smoke", run, world=NULL_WORLD, captions=pipeline, seed=3)

    record = read_run_record(run)
    assert (record.recipe, record.seed, record.path) == ("smoke", 3, run)
    assert record.world_config_path.read_bytes() == NULL_WORLD.read_bytes()
    # Every option spelled out, in the record and in the YAML the captions stage reads.
    assert record.pipeline_config == {"steps": [
        {"step": "normalize", "name": "normalize", "mode": "official", "disabled_steps": []},
        {"step": "dropout", "name": "dropout", "p": 0.25, "seed": 0}]}
    assert yaml.safe_load((run / "caption_pipeline.yaml").read_text()) == record.pipeline_config
    table = json.loads((run / "recipe.json").read_text())
    assert table["world_config"]["sha256"] == hashlib.sha256(NULL_WORLD.read_bytes()).hexdigest()
    assert table["world_config"]["path"] == str(NULL_WORLD.resolve())
    assert list(record.stages) == list(recipe.STAGES) and record.stages["eval"]["summary"] == {"stage": "eval"}
    assert (record.tokens, record.model, record.judge) == (run / "tokens.parquet", run / "model", run / "judge")

    before = folder_state(run)
    for change, match in [({"seed": 4}, r"another seed \(3\)"), ({"captions": None}, "another caption pipeline"),
                          ({"world": None}, "another world config")]:
        kwargs = {"world": NULL_WORLD, "captions": pipeline, "seed": 3, **change}
        with pytest.raises(CrayonboxError, match=match):
            recipe.run_recipe("smoke", run, **kwargs)
    assert folder_state(run) == before  # refused before writing anything
    again = recipe.run_recipe("smoke", run, world=NULL_WORLD, captions=pipeline, seed=3)
    assert not any(s["ran_now"] for s in again["stages"])


def test_stages_get_the_run_copies_and_the_seed(tmp_path, monkeypatch):
    import yaml

    from crayonbox.data.world.config import DEFAULT_CONFIG

    worlds, pipelines, configs = [], [], []
    monkeypatch.setattr("crayonbox.train.recipe.build_world",
                        lambda config, out, n, seed, progress: worlds.append((config, out, n, seed))
                        or {"distinct_emoji": 2})
    monkeypatch.setattr("crayonbox.train.recipe.run_caption_pipeline",
                        lambda data, out, config, progress: pipelines.append(config)
                        or type("S", (), {"items": 1, "dropped": 0, "blanked": 0})())
    monkeypatch.setattr("crayonbox.train.recipe.train_vqgan", lambda cfg: configs.append(cfg) or dict.fromkeys(
        ("eval_psnr", "eval_usage", "eval_perplexity", "steps"), 0))
    monkeypatch.setattr("crayonbox.train.recipe.train", lambda cfg: configs.append(cfg) or dict.fromkeys(
        ("steps", "final_train_loss", "final_eval_loss", "samples_seen"), 0))
    (tmp_path / "world.yaml").write_bytes(DEFAULT_CONFIG.with_name("planted.yaml").read_bytes())
    pipeline = {"steps": [{"step": "normalize", "mode": "raw"}]}
    (tmp_path / "caption_pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    run = recipe.Run(recipe.RECIPES["smoke"], tmp_path, False, lambda stage: 1.0, seed=7)
    for stage in (recipe.stage_world, recipe.stage_captions, recipe.stage_vqgan, recipe.stage_model):
        stage(run)
    (config, out, n, seed), = worlds
    assert (out, n, seed, config.size) == (tmp_path / "world", 240, 7, 16)
    assert config.categories == {"person": 1.0}  # the run's copy (planted.yaml), not the default world
    assert pipelines == [pipeline]
    assert [c.seed for c in configs] == [7, 7]


def test_bad_inputs_and_foreign_folders_are_one_line_errors_before_any_work(tmp_path, capsys):
    from crayonbox.cli import main

    (tmp_path / "broken.yaml").write_text("sources: [unclosed\n")
    (tmp_path / "small.yaml").write_text("size: 8\n")
    (tmp_path / "pipe.yaml").write_text("steps: [{step: nope}]\n")
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    cases = [(["--world", str(tmp_path / "missing.yaml")], "does not exist"),
             (["--world", str(tmp_path / "broken.yaml")], "is not valid YAML"),
             (["--world", str(tmp_path / "small.yaml")], "size: expected an integer ≥ 16"),
             (["--captions", str(tmp_path / "pipe.yaml")], "unknown step 'nope'"),
             (["--seed", "-1"], "non-negative"),
             (["--out", str(tmp_path / "stranger")], "not a `crayonbox train all` run")]
    for extra, message in cases:
        code = main(["train", "all", "--recipe", "smoke", "--out", str(tmp_path / "run"), "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
    assert [p.name for p in (tmp_path / "stranger").iterdir()] == ["notes.txt"]


def test_runs_made_before_the_record_continue_only_with_their_implied_inputs(tmp_path, monkeypatch):
    fake_stages(monkeypatch, [], fail_at="vqgan")
    with pytest.raises(KeyboardInterrupt):
        recipe.run_recipe("smoke", tmp_path)
    table = json.loads((tmp_path / "recipe.json").read_text())
    for key in ("seed", "world_config", "caption_pipeline"):
        del table[key]
    (tmp_path / "recipe.json").write_text(json.dumps(table))
    with pytest.raises(CrayonboxError, match="made before runs recorded their world"):
        read_run_record(tmp_path)
    with pytest.raises(CrayonboxError, match="another seed"):
        recipe.run_recipe("smoke", tmp_path, seed=1)

    fake_stages(monkeypatch, [])  # the recipe's world, the default pipeline, seed 0: what it was made with
    recipe.run_recipe("smoke", tmp_path)
    assert read_run_record(tmp_path).seed == 0


def test_read_run_record_refuses_folders_that_are_not_runs(tmp_path):
    with pytest.raises(CrayonboxError, match=r"has no recipe record \(recipe.json\): not a `crayonbox train all` run"):
        read_run_record(tmp_path)
    (tmp_path / "recipe.json").write_text("{not json")
    with pytest.raises(CrayonboxError, match="has no recipe record"):
        read_run_record(tmp_path)


@pytest.mark.slow
def test_smoke_recipe_runs_every_stage_and_makes_a_loadable_model(tmp_path):
    from crayonbox.pipeline import Pipeline

    table = recipe.run_recipe("smoke", tmp_path / "run", progress=False)
    assert [s["name"] for s in table["stages"]] == list(recipe.STAGES)
    pipe = Pipeline.from_pretrained(tmp_path / "run" / "model")
    assert pipe(" a dog", seed=0).images[0].size == (16, 16)
    assert (tmp_path / "run" / "judge").is_dir() and (tmp_path / "run" / "eval" / "eval.json").exists()
    record = read_run_record(tmp_path / "run")
    world_manifest = json.loads((record.world / "_world.json").read_text())
    captions_manifest = json.loads((record.captions / "caption_pipeline.json").read_text())
    assert (record.seed, world_manifest["seed"], world_manifest["n"]) == (0, 0, 240)
    assert captions_manifest["pipeline"] == record.pipeline_config
    assert json.loads((record.vqgan / "report.json").read_text())["config"]["seed"] == 0
    again = recipe.run_recipe("smoke", tmp_path / "run", progress=False)
    assert not any(s["ran_now"] for s in again["stages"])

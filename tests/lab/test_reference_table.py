"""The reference table a model folder carries (`crayonbox lab reference`): its shares are the instruments' own
readings of the training images, `lab measure` gets the same training comparison from it as from the images,
another instrument version is caught and said, an existing table is not overwritten by accident, and a run
with no reference at all says so first."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file, save_file

from crayonbox.cli import main
from crayonbox.data.shards import decode_image, iter_items
from crayonbox.errors import CrayonboxError
from crayonbox.lab.card import build_card
from crayonbox.lab.instruments.judge import JudgeInstrument
from crayonbox.lab.instruments.skin_tone import SkinToneConfig, SkinToneMeter
from crayonbox.lab.measure import MeasureConfig, file_digest, instrument_key, measure_run
from crayonbox.lab.probe import load_tokenizer, model_hash
from crayonbox.lab.reference import caption_ids
from crayonbox.lab.reference_table import TableConfig, build_reference_table
from crayonbox.lab.report import build_report
from crayonbox.lab.results_run import IMAGES, TABLE
from crayonbox.lab.store import RunStore, png_bytes
from crayonbox.train.judge_train import train_judge


@pytest.fixture(scope="module")
def shipped(tiny_model_dir, tiny_world, tmp_path_factory):
    """A copy of the tiny model whose provenance names its training data (a copy of the tiny world), with a
    judge in MODEL/judge/ like the shipped default, and its reference table built from that data."""
    folder = tmp_path_factory.mktemp("shipped")
    model, data = folder / "model", folder / "data"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(tiny_world, data)
    meta = json.loads((model / "pipeline.json").read_text(encoding="utf-8"))
    meta["provenance"] = {"reference_data": str(data)}
    (model / "pipeline.json").write_text(json.dumps(meta), encoding="utf-8")
    train_judge(tiny_world, model / "judge", train_images=40, eval_images=20, world_sample=20, epochs=1, width=8,
                progress=False, threads=1)
    manifest = build_reference_table(model, data, progress=False)
    return SimpleNamespace(folder=folder, model=model, data=data, manifest=manifest)


@contextmanager
def data_away(shipped):
    """The training data moved off (the model travels without it), put back afterwards."""
    away = shipped.folder / "data-elsewhere"
    shipped.data.rename(away)
    try:
        yield
    finally:
        away.rename(shipped.data)


def run_of(probed_run: Path, model: Path, dest: Path) -> Path:
    """A copy of the probed run, recorded as a run of `model` (the same transformer and VQGAN; its hash also
    covers the judge beside them)."""
    shutil.copytree(probed_run, dest)
    with RunStore.open(dest) as store:
        store.set_meta("model_dir", str(model))
        store.set_meta("model_hash", model_hash(model))
    return dest


def config(judge: Path, validation: Path) -> MeasureConfig:
    return MeasureConfig(instruments=("skin_tone", "judge", "clusters"), judge=judge, validation=validation,
                         validation_n=20, clusters=3)


def test_manifest_shares_are_the_instruments_readings_of_the_training_images(shipped):
    # Planted truth: read the data again, independently of the table code, and apply the instruments.
    tokenizer = load_tokenizer(shipped.model)
    items = list(iter_items(shipped.data))
    images = [decode_image(item) for item in items]
    meter, judge = SkinToneMeter(SkinToneConfig(max_distance=8.0)), JudgeInstrument.load(shipped.model / "judge")
    readings = [{f"skin_tone.{a}": v for a, v in s.items()} | {f"judge.{a}": v for a, v in j.items()}
                for s, j in zip(meter.measure(images), judge.measure(images), strict=True)]
    ids = [caption_ids(tokenizer, item.caption) for item in items]
    enc = tokenizer.encode("")
    blank = [i for i, m in zip(enc.ids, enc.attention_mask, strict=True) if m]
    manifest = shipped.manifest
    assert manifest["items"] == len(items) == 40
    for part, rows in (("overall", range(40)), ("blank", [r for r in range(40) if ids[r] == blank]),
                       ("unconditional", [r for r in range(40) if ids[r] == caption_ids(tokenizer, "")])):
        summary = manifest["summary"][part]
        assert summary["n"] == len(rows)
        for column, stored in summary["outcomes"].items():
            truth = Counter(readings[r][column] for r in rows)
            assert stored["counts"] == {label: truth[label] for label in stored["counts"]}
            assert sum(stored["counts"].values()) == len(rows)  # every reading is among the outcomes
            if rows:
                assert stored["shares"] == pytest.approx({k: truth[k] / len(rows) for k in stored["shares"]})
    assert {c.split(".")[0] for c in manifest["summary"]["overall"]["outcomes"]} == {"skin_tone", "judge"}
    # The blank prompt's group is found: the world's ". " captions normalise to the blank prompt's ids.
    groups = json.loads((shipped.model / "reference" / "groups.json").read_text(encoding="utf-8"))
    assert manifest["groups"]["blank"] is not None and groups["groups"][manifest["groups"]["blank"]] == blank
    assert manifest["summary"]["blank"]["n"] == sum(i == blank for i in ids) == 3
    assert manifest["groups"]["unconditional"] is None and manifest["summary"]["unconditional"]["n"] == 0
    assert len(groups["groups"]) == manifest["groups"]["count"] == len({tuple(i) for i in ids})
    # One row per item: the image sha256 a run stores, its group's ids, the meter's label.
    table = pq.read_table(shipped.model / "reference" / "labels.parquet").to_pydict()
    assert table["key"] == [item.key for item in items]
    assert table["sha256"] == [hashlib.sha256(png_bytes(image)).hexdigest() for image in images]
    assert [groups["groups"][g] for g in table["group"]] == ids
    assert table["judge.gender"] == [r["judge.gender"] for r in readings]
    # The data hash and the instrument versions, as `lab measure` names them.
    lines = sorted(f"{item.key}\t{sha}\t{item.caption}" for item, sha in zip(items, table["sha256"], strict=True))
    assert manifest["data_sha256"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert manifest["instruments"]["skin_tone"]["key"] == instrument_key(meter)
    assert manifest["instruments"]["judge"]["key"] == instrument_key(
        judge, file_digest(shipped.model / "judge" / "model.safetensors"))


def test_measure_with_the_table_equals_measure_with_the_data(shipped, probed_run, tiny_world, tmp_path):
    judge = shipped.model / "judge"
    with_data = measure_run(run_of(probed_run, shipped.model, tmp_path / "a"), config(judge, tiny_world),
                            progress=False)
    with data_away(shipped):
        run = run_of(probed_run, shipped.model, tmp_path / "b")
        with_table = measure_run(run, config(judge, tiny_world), progress=False)
        html = build_report(run).read_text(encoding="utf-8")
    a, b = with_data["reference"], with_table["reference"]
    assert a["kind"] == IMAGES and a["source"].startswith("first 40 images of")
    assert b["kind"] == TABLE and b["n"] == 40
    assert b["source"] == (f"shipped reference table {shipped.model / 'reference'} (40 items, data sha256 "
                           f"{shipped.manifest['data_sha256'][:12]}…)")
    labelled = [k for k in a["counts"] if not k.startswith("clusters")]
    assert len(labelled) == 2 and {k: a["counts"][k] for k in labelled} == b["counts"]  # same reference shares
    assert [p["matched_reference_n"] for p in with_data["prompts"]] == \
        [p["matched_reference_n"] for p in with_table["prompts"]]
    assert max(p["matched_reference_n"] for p in with_table["prompts"]) == 3  # the blank prompts' subset
    cells_a = {(c["prompt_key"], json.dumps(c["settings"]), c["instrument"], c["attribute"]): c
               for c in with_data["cells"]}
    compared = 0
    for c in with_table["cells"]:
        if c["instrument_name"] == "clusters":  # run-only with a table: no images to cluster
            assert "vs_reference" not in c and "vs_matched" not in c
            continue
        twin = cells_a[(c["prompt_key"], json.dumps(c["settings"]), c["instrument"], c["attribute"])]
        assert c["vs_reference"] == twin["vs_reference"] and c.get("vs_matched") == twin.get("vs_matched")
        assert c.get("test", {}).get("p_value") == twin.get("test", {}).get("p_value")
        compared += 1
    attributes = sum(len(i["outcomes"]) for i in with_table["instruments"].values() if i["name"] != "clusters")
    assert attributes >= 4 and compared == 15 * 2 * attributes  # prompts × scales × (skin tone + the judge's)
    assert any("clusters" in n and "no images" in n for n in b["notes"])
    assert with_table["clusters"]["reference_exemplars"] == {}
    body = html[html.index("<body>") + len("<body>"):]
    assert body.startswith('<p class="banner"><strong>Training reference: the model folder&#x27;s reference table')
    assert "no training exemplars, because the reference is the model folder&#x27;s table" in html


def perturbed_judge(judge: Path, dest: Path) -> Path:
    """Another version of a judge: the same files with one weight nudged (so its cache key differs)."""
    shutil.copytree(judge, dest)
    state = load_file(dest / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01
    save_file(state, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def test_another_judge_is_detected_and_reported(shipped, probed_run, tiny_world, tmp_path):
    other = perturbed_judge(shipped.model / "judge", tmp_path / "judge")
    with data_away(shipped):
        run = run_of(probed_run, shipped.model, tmp_path / "run")
        metrics = measure_run(run, config(other, tiny_world), progress=False)
        html = build_report(run).read_text(encoding="utf-8")
    ref = metrics["reference"]
    judge_key = next(k for k, v in metrics["instruments"].items() if v["name"] == "judge")
    table_key = shipped.manifest["instruments"]["judge"]["key"]
    assert judge_key != table_key
    skin_key = next(k for k, v in metrics["instruments"].items() if v["name"] == "skin_tone")
    assert list(ref["counts"]) == [skin_key]  # the meter (same version) is compared, the judge is not
    assert all("vs_reference" not in c for c in metrics["cells"] if c["instrument"] == judge_key)
    assert all("vs_reference" in c for c in metrics["cells"] if c["instrument"] == skin_key)
    note = next(n for n in ref["notes"] if n.startswith("judge:"))
    assert judge_key in note and table_key in note
    banner = html[:html.index("<h1>")]
    assert f"this run&#x27;s {judge_key} is not the table&#x27;s {table_key}" in banner
    assert "judge, clusters: a balanced model only (no training reference for them)" in html
    assert f"{judge_key} · gender <span class=\"warn\">(no training reference" in html
    summary = html[html.index("<h2>Summary</h2>"):html.index("</ul>", html.index('<ul class="summary">'))]
    judge_lines = [line for line in summary.split("<li>") if line.startswith("judge.")]
    skin_lines = [line for line in summary.split("<li>") if line.startswith("skin_tone.")]
    assert judge_lines and not any("training" in line or "matched subset" in line for line in judge_lines)
    assert skin_lines and all("training images" in line for line in skin_lines)
    card = build_card(shipped.model, run)
    assert f"Reference: {ref['source']}: the instruments' labels of 40 training images" in card
    judge_rows = [line for line in card.splitlines() if "| judge." in line]
    assert judge_rows and all("| no training reference | – |" in line for line in judge_rows)


def test_an_existing_table_is_kept_without_force(shipped, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(shipped.model, model)
    weights = model_hash(model)
    before = {p.name: p.read_bytes() for p in (model / "reference").iterdir()}
    with pytest.raises(CrayonboxError, match="exists: pass --force"):
        build_reference_table(model, shipped.data, TableConfig(limit=10), progress=False)
    assert main(["lab", "reference", str(model), "--data", str(shipped.data), "--limit", "10"]) == 1
    assert "exists: pass --force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (model / "reference").iterdir()} == before
    for bad, why in ((tmp_path / "nowhere", "no such folder"), (tmp_path, "no shards")):
        with pytest.raises(CrayonboxError, match=why) as error:
            build_reference_table(model, bad, TableConfig(force=True), progress=False)
        assert "\n" not in str(error.value)
    assert {p.name: p.read_bytes() for p in (model / "reference").iterdir()} == before  # failures change nothing
    assert main(["lab", "reference", str(model), "--data", str(shipped.data), "--limit", "10", "--force",
                 "--quiet"]) == 0
    assert "reference: 10 training images" in capsys.readouterr().out
    manifest = json.loads((model / "reference" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["items"] == 10 and pq.read_table(model / "reference" / "labels.parquet").num_rows == 10
    assert sorted(p.name for p in model.iterdir() if p.name.startswith(".")) == []  # no staging left behind
    assert model_hash(model) == weights  # a table is not weights: runs of the model stay its runs


def test_a_run_without_reference_says_so_first(probed_run, tiny_model_dir, tiny_world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(probed_run, run)  # the tiny model names no training data and ships no table
    metrics = measure_run(run, MeasureConfig(instruments=("skin_tone",), validation=tiny_world, validation_n=20),
                          progress=False)
    assert metrics["reference"]["n"] == 0 and metrics["reference"]["kind"] is None
    assert "ships no reference table" in metrics["reference"]["notes"][0]
    page = build_report(run).read_text(encoding="utf-8")
    body = page[page.index("<body>") + len("<body>"):]
    assert body.startswith('<p class="banner"><strong>No training reference: the model&#x27;s images are '
                           "compared only with each other and with a balanced model")
    assert f"crayonbox lab reference {tiny_model_dir} --data SHARDS" in body[:body.index("<h1>")]
    summary = page[page.index("<h2>Summary</h2>") + len("<h2>Summary</h2>"):]
    assert summary.startswith('<p class="warn"><strong>No training reference:')
    for claim in ("training share", "gap to training", "training images with these ids", "its share in the "
                  "training reference", "G-test against the training"):
        assert claim not in page
    card = build_card(tiny_model_dir, run)
    assert "> **No training reference: the model's images are compared only with each other" in card
    assert "training share" not in card


def test_measure_tells_the_blank_prompt_story_from_the_shipped_judge_and_table(shipped, probed_run, tiny_world,
                                                                                tmp_path):
    """Without --judge the model's own judge reads; metrics.json gets the blank prompt's story per scale with the
    training and blank-id shares from the table, and the card shows it, withholding the verdict because this
    judge was never scored on VQGAN round trips."""
    from dataclasses import replace

    from crayonbox.lab.story import shows_story

    with data_away(shipped):
        run = run_of(probed_run, shipped.model, tmp_path / "run")
        metrics = measure_run(run, replace(config(None, tiny_world), judge=None), progress=False)
        card = build_card(shipped.model, run)
    story = metrics["story"]
    assert metrics["measure_config"]["judge"] == str(shipped.model / "judge")
    assert set(story["by_scale"]) == {"1", "3"} and all(s["n"] == 6 for s in story["by_scale"].values())
    rows = pq.read_table(shipped.model / "reference" / "labels.parquet").to_pylist()
    groups = json.loads((shipped.model / "reference" / "groups.json").read_text(encoding="utf-8"))
    judged = [{a.split(".", 1)[1]: v for a, v in row.items() if a.startswith("judge.")} for row in rows]
    assert story["training"]["n"] == 40 and story["training"]["k"] == sum(map(shows_story, judged))
    blank_rows = [r for r in rows if r["group"] == groups["blank"]]
    assert len(blank_rows) == 3 and story["matched"]["n"] == 3
    assert story["verdict"] == "withheld" and story["judge_round_trip"] is None
    assert "### The blank prompt's story" in card and "**No verdict**" in card
    with RunStore.open(run) as store:
        images = store.count_images()
    agreement = story["tone_agreement"]
    assert 0 < agreement["n"] <= images and 0 <= agreement["k"] <= agreement["n"]

"""Building worlds: determinism, resume after an interruption, planted co-occurrences, image ↔ truth."""

import copy
import json

import numpy as np
import pytest
import yaml

from crayonbox.cli import main
from crayonbox.data.shards import decode_image, iter_items, list_shards, read_metadata
from crayonbox.data.world.build import build_world, make_item, make_world
from crayonbox.data.world.catalog import load_catalog
from crayonbox.data.world.config import DEFAULT_CONFIG, parse_world_config
from crayonbox.data.world.render import SpriteBank, load_emoji_font
from crayonbox.data.world.world import World
from crayonbox.errors import CrayonboxError

DEFAULT = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
PALETTE = {1: (249, 221, 189), 2: (224, 187, 149), 3: (186, 141, 104), 4: (165, 108, 67), 5: (112, 83, 74)}


def _config(**changes):
    data = copy.deepcopy(DEFAULT)
    data.update(size=32, shard_size=4)
    data.update(changes)
    return parse_world_config(data)


@pytest.fixture(scope="module")
def world():
    return make_world(_config())


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".parquet")}


def test_item_depends_only_on_seed_and_index(world):
    a, b = make_item(world, 3, 17), make_item(world, 3, 17)
    assert (a.key, a.image, a.caption, a.meta) == (b.key, b.image, b.caption, b.meta)
    assert a.key == "000000017" and a.meta["world"]["index"] == 17
    assert make_item(world, 4, 17).image != a.image
    # another process starts from an empty sprite cache
    fresh = World(_config(), load_catalog(), SpriteBank(load_emoji_font()))
    assert make_item(fresh, 3, 17).image == a.image


def test_build_is_deterministic_and_independent_of_workers(tmp_path):
    build_world(_config(), tmp_path / "a", n=10, workers=1, seed=5, progress=False)
    build_world(_config(), tmp_path / "b", n=10, workers=2, seed=5, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == ["00000.parquet", "00000.tar", "00001.parquet", "00001.tar", "00002.parquet",
                         "00002.tar"]
    assert a == b
    keys = [item.key for item in iter_items(tmp_path / "a")]
    assert keys == [f"{i:09d}" for i in range(10)]


def test_resume_redoes_only_unfinished_shards(tmp_path):
    out = tmp_path / "w"
    build_world(_config(), out, n=12, workers=1, seed=1, progress=False)
    original = _files(out)
    stamps = {name: (out / name).stat().st_mtime_ns for name in ("00000.tar", "00002.tar")}
    # Simulate kill -9 mid-shard 1: its tar never got renamed into place, a half-written tmp is left behind.
    (out / "00001.tar").unlink()
    (out / "00001.tar.tmp").write_bytes(original["00001.tar"][:700])
    build_world(_config(), out, n=12, workers=1, seed=1, progress=False)
    assert _files(out) == original
    assert {name: (out / name).stat().st_mtime_ns for name in stamps} == stamps  # finished shards skipped
    assert not list(out.glob("*.tmp"))
    assert len(read_metadata(out)) == 12


def test_growing_n_completes_the_partial_last_shard(tmp_path):
    out = tmp_path / "w"
    build_world(_config(), out, n=6, workers=1, seed=2, progress=False)
    build_world(_config(), out, n=8, workers=1, seed=2, progress=False)
    build_world(_config(), tmp_path / "ref", n=8, workers=1, seed=2, progress=False)
    assert _files(out) == _files(tmp_path / "ref")


def test_resume_refuses_a_different_world(tmp_path):
    build_world(_config(), tmp_path, n=2, workers=1, seed=1, progress=False)
    with pytest.raises(CrayonboxError, match="another seed or config"):
        build_world(_config(), tmp_path, n=2, workers=1, seed=2, progress=False)
    manifest = json.loads((tmp_path / "_world.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == 1 and manifest["config"]["size"] == 32


def test_planted_cooccurrence_and_language_mix(tmp_path):
    data = copy.deepcopy(DEFAULT)
    cfg = _config(
        categories={"attire": 1.0, "person": 0.0001},
        pool={**data["pool"], "attire": ["sari"]},
        pair_with_person={"sari": 1.0},
        cooccurrence={"sari": {"gender": {"woman": 1}, "skin_tone": {4: 1, 5: 3}}},
        objects_per_scene={1: 1},
        source_mix={},
        sources={"yfcc": {**data["sources"]["yfcc"], "overrides": {"sari": {"language": {"hi": 1}}}}},
    )
    world = make_world(cfg)
    tones = []
    for i in range(200):
        truth = make_item(world, 0, i).meta["world"]
        person, sari = truth["objects"]
        assert sari["attire"] == "sari" and person["relation"] == "wearing" and person["paired_with"] == 1
        assert person["gender"] == "woman" and truth["caption_language"] == "hi"
        tones.append(person["skin_tone"])
    assert set(tones) == {4, 5} and 0.65 < tones.count(5) / len(tones) < 0.85  # planted 3:1


def test_image_shows_the_ground_truth(world):
    checked = 0
    for i in range(200):
        item = make_item(world, 9, i)
        truth = item.meta["world"]
        objects = truth["objects"]
        if len(objects) != 1 or objects[0]["skin_tone"] is None or objects[0]["scale"] < 0.7:
            continue
        x0, y0, x1, y1 = objects[0]["bbox"]
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32 and objects[0]["position"] == "centre"
        pixels = np.asarray(decode_image(item), dtype=int)[y0:y1, x0:x1].reshape(-1, 3)
        near = {t: int((np.abs(pixels - rgb).sum(1) <= 12).sum()) for t, rgb in PALETTE.items()}
        assert max(near, key=near.get) == objects[0]["skin_tone"], (truth, near)
        checked += 1
    assert checked >= 10


def test_layout_positions_match_boxes(world):
    for i in range(100):
        objects = make_item(world, 11, i).meta["world"]["objects"]
        by_x = [o["position"] for o in sorted(objects, key=lambda o: o["bbox"][0] + o["bbox"][2])]
        assert by_x == {1: ["centre"], 2: ["left", "right"], 3: ["left", "centre", "right"]}[len(objects)]


def test_cli_builds_and_reports_errors(tmp_path, capsys):
    assert main(["world", "build", "--out", str(tmp_path / "w"), "-n", "3", "--workers", "1", "--size", "24",
                 "--quiet"]) == 0
    assert "3 items in 1 shards at 24px" in capsys.readouterr().out
    assert decode_image(next(iter_items(tmp_path / "w"))).size == (24, 24)
    assert len(list_shards(tmp_path / "w")) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: 64\nsources: {}\n", encoding="utf-8")
    assert main(["world", "build", "--config", str(bad), "--out", str(tmp_path / "x"), "-n", "1"]) == 1
    assert "pool" in capsys.readouterr().err

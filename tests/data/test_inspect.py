"""`data inspect` on real-looking shards (no ground truth, corrupt members) and on a small world."""

import copy
import io
import json
import tarfile

import yaml
from PIL import Image

from crayonbox.cli import main
from crayonbox.data.inspect import inspect_folder, summarise
from crayonbox.data.shards import Item, write_shard
from crayonbox.data.world.build import build_world
from crayonbox.data.world.config import DEFAULT_CONFIG, parse_world_config


def _png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _user_folder(path):
    """Two shards like a user's img2dataset output: one with a corrupt image, one truncated."""
    items = [
        Item("000000000", _png((32, 24)), "png", "a woman wearing a red sari at a wedding",
             {"url": "https://img.example.com/a.jpg"}),
        Item("000000001", b"\x89PNG\r\n\x1a\n not really", "png", "साड़ी पहने एक महिला",
             {"url": "https://cdn.example.org/b.jpg"}),
        Item("000000002", _png((64, 64)), "png", ". ", {"url": "https://img.example.com/c.jpg"}),
        Item("000000003", _png((64, 64)), "png", "", {}),
    ]
    write_shard(path / "00000.tar", items)
    write_shard(path / "00001.tar", items[:2])
    with tarfile.open(path / "00001.tar") as tar:
        cut = tar.getmember("000000001.txt").offset_data + 3
    data = (path / "00001.tar").read_bytes()
    (path / "00001.tar").write_bytes(data[:cut])  # killed while writing the second item's caption


def test_inspect_real_shards_counts_problems(tmp_path):
    _user_folder(tmp_path / "shards")
    report = inspect_folder(tmp_path / "shards", tmp_path / "out", progress=False)
    assert report["shards"] == 2 and report["items"] == 5  # 4 + the one whole item before the cut
    assert report["image_sizes"] == {"64x64": 2, "32x24": 2}
    assert report["problems"]["counts"] == {"bad_image": 1, "corrupt_shard": 1}
    assert report["blank_captions"] == 2 and report["blank_share"] == 0.4
    assert report["languages_detected"] == {"en": 2, "und": 2, "hi": 1}
    assert report["sources"] == {"img.example.com": 3, "cdn.example.org": 1, "unknown": 1}
    assert report["caption_words"]["0"] == 1 and report["caption_words"]["6-10"] == 2
    assert "ground_truth" not in report
    saved = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert saved["items"] == 5
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size == (8 * 64, 64)  # 4 decodable images in one row of eight cells


def test_inspect_world_reports_ground_truth(tmp_path):
    data = copy.deepcopy(yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")))
    data.update(size=24, shard_size=10)
    build_world(parse_world_config(data), tmp_path / "w", n=20, workers=1, seed=0, progress=False)
    report, samples = summarise(tmp_path / "w", progress=False)
    truth = report["ground_truth"]
    assert report["items"] == truth["items"] == 20 and len(samples) == 20
    assert sum(truth["caption_language"].values()) == 20
    assert set(truth["caption_style"]) <= {"short", "long", "empty"}
    assert 0.5 <= truth["language_agreement"] <= 1.0
    assert set(report["sources"]) <= {"cc3m", "cc12m", "yfcc"}


def test_cli_inspect(tmp_path, capsys):
    _user_folder(tmp_path / "shards")
    assert main(["data", "inspect", str(tmp_path / "shards"), "--out", str(tmp_path / "o"), "--quiet",
                 "--languages", "en,hi"]) == 0
    out = capsys.readouterr().out
    assert "5 items in 2 shards" in out and "bad_image: 1" in out and "corrupt_shard: 1" in out
    assert main(["data", "inspect", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 1
    assert "not a folder of shards" in capsys.readouterr().err

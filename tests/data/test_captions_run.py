"""`crayonbox data captions` over shards: output layout, provenance per item, resume after a crash, CLI."""

from __future__ import annotations

import argparse
import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest
import yaml

from crayonbox.data import shards
from crayonbox.data.audit import load_problems
from crayonbox.data.caption_run import run_caption_pipeline
from crayonbox.data.captions import DEFAULT_PIPELINE, CaptionPipeline
from crayonbox.data.captions_cli import register_data_commands
from crayonbox.data.shards import Item, iter_items, list_shards, write_shard
from crayonbox.errors import CrayonboxError

CONFIG = {"steps": [{"step": "langid", "languages": ["en", "hi", "es", "zh", "ar"]},
                    {"step": "english_only", "policy": "drop"}, {"step": "names"}, {"step": "normalize"},
                    {"step": "dropout", "p": 0.3}]}
CAPTIONS = ["Priya wearing a red sari on a blue background", "साड़ी पहने एक महिला नीली पृष्ठभूमि पर",
            "a dog playing in the park with a ball", "un perro jugando en el parque con una pelota",
            "a man with an umbrella in the rain", "一只狗在公园里玩球"]


def make_input(folder, n_shards=3):
    folder.mkdir(parents=True)
    for s in range(n_shards):
        items = [Item(f"{s:04d}{i:05d}", f"png-bytes-{s}-{i}".encode(), "png", CAPTIONS[i],
                      {"width": 8, "height": 8}) for i in range(len(CAPTIONS))]
        write_shard(folder / f"{s:05d}.tar", items)
    return folder


def read_provenance(out):
    files = sorted((out / "provenance").glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def test_output_mirrors_the_input_layout_with_final_captions_and_no_dropped_items(tmp_path):
    source = make_input(tmp_path / "in")
    summary = run_caption_pipeline(source, tmp_path / "out", CONFIG, progress=False)
    assert [p.name for p in list_shards(tmp_path / "out")] == ["00000.tar", "00001.tar", "00002.tar"]
    assert (summary.items, summary.dropped, summary.shards_skipped) == (18, 9, 0)  # hi, es, zh dropped
    rows = {r["key"]: r for r in read_provenance(tmp_path / "out")}
    kept = list(iter_items(tmp_path / "out"))
    assert len(rows) == 18 and len(kept) == 9
    for item in kept:
        row = rows[item.key]
        assert not row["dropped"] and item.caption == row["final_caption"]
        assert item.image == f"png-bytes-{int(item.key[:4])}-{int(item.key[4:])}".encode()
        assert item.meta["caption_provenance"]["raw_caption"] == row["raw_caption"]
        assert item.meta["width"] == 8
    assert {r["raw_caption"] for r in rows.values() if r["dropped"]} == set(CAPTIONS[1::2])
    assert summary.blanked == sum(1 for r in rows.values() if r["caption_dropout"])


def test_provenance_has_one_row_per_input_item_and_every_step_column(tmp_path):
    run_caption_pipeline(make_input(tmp_path / "in"), tmp_path / "out", CONFIG, progress=False)
    table = pq.read_table(tmp_path / "out" / "provenance" / "00001.parquet")
    assert table.column_names == CaptionPipeline(CONFIG).columns()
    assert table.num_rows == len(CAPTIONS)
    for step in ("langid", "english_only", "names", "normalize", "dropout"):
        reasons = table.column(f"{step}.reason").to_pylist()
        captions = table.column(f"{step}.caption").to_pylist()
        assert all(c is not None or r is not None for c, r in zip(captions, reasons, strict=True))


def test_a_run_killed_mid_way_resumes_to_the_same_result(tmp_path, monkeypatch):
    source = make_input(tmp_path / "in")
    run_caption_pipeline(source, tmp_path / "clean", CONFIG, progress=False)

    real_write, calls = shards.write_shard, []

    def crash_on_second_shard(path, items):
        calls.append(path)
        if len(calls) == 2:
            (path.parent / (path.name + ".tmp")).write_bytes(b"half a tar")  # what a kill leaves behind
            raise KeyboardInterrupt
        real_write(path, items)

    monkeypatch.setattr(shards, "write_shard", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        run_caption_pipeline(source, tmp_path / "out", CONFIG, progress=False)
    monkeypatch.setattr(shards, "write_shard", real_write)
    summary = run_caption_pipeline(source, tmp_path / "out", CONFIG, progress=False)
    assert (summary.shards_skipped, summary.items) == (1, 12)
    assert read_provenance(tmp_path / "out") == read_provenance(tmp_path / "clean")
    for name in ("00000.tar", "00001.tar", "00002.tar"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_two_workers_write_exactly_what_one_writes(tmp_path):
    source = make_input(tmp_path / "in")
    one = run_caption_pipeline(source, tmp_path / "one", CONFIG, progress=False, workers=1)
    two = run_caption_pipeline(source, tmp_path / "two", CONFIG, progress=False, workers=2)
    assert one == two
    assert read_provenance(tmp_path / "one") == read_provenance(tmp_path / "two")
    for name in ("00000.tar", "00001.tar", "00002.tar"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_resuming_with_another_pipeline_or_writing_over_the_input_is_refused(tmp_path):
    source = make_input(tmp_path / "in", n_shards=1)
    run_caption_pipeline(source, tmp_path / "out", CONFIG, progress=False)
    with pytest.raises(CrayonboxError, match="different caption pipeline"):
        run_caption_pipeline(source, tmp_path / "out", DEFAULT_PIPELINE, progress=False)
    with pytest.raises(CrayonboxError, match="must differ from IN"):
        run_caption_pipeline(source, source, CONFIG, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrayonboxError, match="no webdataset shards"):
        run_caption_pipeline(tmp_path / "empty", tmp_path / "out2", CONFIG, progress=False)


def test_malformed_items_are_counted_not_fatal(tmp_path):
    source = make_input(tmp_path / "in", n_shards=1)
    with tarfile.open(source / "00001.tar", "w") as tar:
        for name, data in [("000100000.txt", b"a cat on a red sofa in a living room"),
                           ("000100000.json", b"{oops"),
                           ("000100001.txt", b"\xff\xfe not utf-8 caption about a bird")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    summary = run_caption_pipeline(source, tmp_path / "out", CONFIG, progress=False)
    assert summary.problems >= 2  # bad json, caption not utf-8 (and missing images)
    assert len(pq.read_table(tmp_path / "out" / "provenance" / "00001.parquet")) == 2
    problems_file = tmp_path / "out" / "provenance" / "00001.problems.json"
    problems = json.loads(problems_file.read_text(encoding="utf8"))
    assert problems["counts"]["bad_json"] == 1 and problems["counts"]["caption_not_utf8"] == 1
    assert not (tmp_path / "out" / "provenance" / "00000.problems.json").exists()
    assert load_problems(tmp_path / "out")["bad_json"] == 1


def test_cli_runs_the_pipeline_and_prints_a_default_config_that_builds(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_data_commands(parser.add_subparsers())
    args = parser.parse_args(["captions", "--print-default-config"])
    assert args.func(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert CaptionPipeline(printed).config == CaptionPipeline(None).config

    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf8")
    source = make_input(tmp_path / "in", n_shards=1)
    args = parser.parse_args(["captions", str(source), "--out", str(tmp_path / "out"),
                              "--config", str(config), "--quiet"])
    assert args.func(args) == 0
    assert "6 items in 1 shards (0 already done): 3 dropped" in capsys.readouterr().out
    args = parser.parse_args(["audit", str(tmp_path / "out")])
    assert args.func(args) == 0
    assert (tmp_path / "out" / "audit" / "audit.html").exists()

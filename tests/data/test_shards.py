"""The shard format: round trip, parquet columns, atomic writes, and malformed user data."""

import io
import json
import tarfile

import pytest
from PIL import Image

from crayonbox.data.shards import (
    Item,
    ProblemLog,
    decode_image,
    iter_items,
    list_shards,
    read_metadata,
    write_shard,
)
from crayonbox.errors import CrayonboxError


def _image(colour, fmt="PNG", size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _world(n_objects: int) -> dict:
    objects = [{"name": "woman", "skin_tone": 4, "bbox": [0, 0, 4, 4]}, {"name": "sari", "skin_tone": None}]
    return {"source": "yfcc", "objects": objects[:n_objects], "captions_all": {"en": "a sari", "hi": "साड़ी"}}


def _items():
    return [
        Item("000000000", _image("red"), "png", "a red square", {"status": "success", "world": _world(1)}),
        Item("000000001", _image("blue", "JPEG"), "jpg", "साड़ी पहने प्रिया", {"url": "http://x.org/1.jpg"}),
        Item("000000002", _image("green"), "png", "", {"world": _world(2)}),
    ]


def test_round_trip(tmp_path):
    write_shard(tmp_path / "00000.tar", _items())
    assert not list(tmp_path.glob("*.tmp"))
    problems = ProblemLog()
    back = list(iter_items(tmp_path, problems=problems))
    assert not problems
    for original, read in zip(_items(), back, strict=True):
        assert (read.key, read.image, read.image_ext, read.caption) == \
            (original.key, original.image, original.image_ext, original.caption)
        assert read.meta == {"key": original.key, "caption": original.caption, **original.meta}
    assert decode_image(back[1]).mode == "RGB" and decode_image(back[1]).size == (8, 6)
    assert [i.image for i in iter_items(tmp_path, with_images=False)] == [None, None, None]
    with tarfile.open(tmp_path / "00000.tar") as tar:
        assert tar.getnames()[:3] == ["000000000.png", "000000000.txt", "000000000.json"]


def test_parquet_columns_and_union_across_shards(tmp_path):
    write_shard(tmp_path / "00000.tar", _items()[:2])
    write_shard(tmp_path / "00001.tar", _items()[2:])
    table = read_metadata(tmp_path)
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == ["000000000", "000000001", "000000002"]
    assert rows[0]["width"] == 8 and rows[0]["height"] == 6 and rows[0]["status"] == "success"
    assert rows[1]["url"] == "http://x.org/1.jpg" and rows[1]["world_source"] is None
    assert rows[0]["world_objects0_skin_tone"] == 4 and rows[0]["world_objects0_bbox"] == "[0, 0, 4, 4]"
    assert rows[0]["world_objects1_name"] is None and rows[2]["world_objects1_name"] == "sari"
    assert rows[2]["world_captions_all_hi"] == "साड़ी"


def test_list_shards_ignores_tmp_files(tmp_path):
    write_shard(tmp_path / "00001.tar", _items()[:1])
    (tmp_path / "00002.tar.tmp").write_bytes(b"half a shard")
    assert [p.name for p in list_shards(tmp_path)] == ["00001.tar"]
    with pytest.raises(CrayonboxError, match="not a folder of shards"):
        list_shards(tmp_path / "nope")


def _add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _malformed_shard(path):
    with tarfile.open(path, "w") as tar:
        _add(tar, "000000010.png", _image("red"))
        _add(tar, "000000010.txt", b"fine")
        _add(tar, "000000010.json", b'{"status": "success"}')
        _add(tar, "000000011.png", _image("red"))
        _add(tar, "000000011.txt", b"caf\xe9")  # latin-1, not UTF-8
        _add(tar, "000000011.json", b"{not json")
        _add(tar, "000000012.png", _image("red"))  # no caption member
        _add(tar, "000000012.json", b'{"caption": "from json"}')
        _add(tar, "000000013.txt", b"caption without image")
        _add(tar, "000000010.txt", b"same key again")


def test_malformed_members_are_counted_not_raised(tmp_path):
    _malformed_shard(tmp_path / "00000.tar")
    write_shard(tmp_path / "00001.tar", _items())
    good = (tmp_path / "00001.tar").read_bytes()
    (tmp_path / "00002.tar").write_bytes(good[: len(good) // 2])  # truncated mid-shard
    (tmp_path / "00003.tar").write_bytes(b"this is not a tar file at all")
    problems = ProblemLog(max_examples=2)
    items = list(iter_items(tmp_path, problems=problems))
    by_key = {i.key: i for i in items}
    assert by_key["000000011"].caption == "caf\ufffd" and by_key["000000011"].meta == {}
    assert by_key["000000012"].caption == "from json"
    assert by_key["000000013"].image is None
    # the repeated key 000000010 comes back as a second, caption-only item: missing_image counts it too
    assert problems.counts == {"caption_not_utf8": 1, "bad_json": 1, "missing_caption": 1, "missing_image": 2,
                               "duplicate_key": 1, "corrupt_shard": 2}
    assert len(problems.examples["corrupt_shard"]) == 2 and problems.total == 8
    assert "corrupt_shard: 2 (e.g. 00002.tar: ReadError" in problems.summary()
    assert problems.examples["corrupt_shard"][1].startswith("00003.tar")
    # shard 1 complete; the truncated copy yields only whole items before the cut, never a half item
    copies = [i for i in items if i.key < "000000010"]
    assert 3 <= len(copies) < 6 and all(decode_image(i).size == (8, 6) for i in copies)


def test_decode_image_errors_name_the_key():
    with pytest.raises(CrayonboxError, match="item 000000042: image cannot be decoded"):
        decode_image(Item("000000042", b"\x89PNG garbage", "png", "", {}))
    with pytest.raises(CrayonboxError, match="has no image"):
        decode_image(Item("000000043", None, "", "", {}))


def test_read_metadata_falls_back_to_the_tar(tmp_path):
    write_shard(tmp_path / "00000.tar", _items())
    (tmp_path / "00000.parquet").unlink()
    write_shard(tmp_path / "00001.tar", _items()[:1])
    (tmp_path / "00001.parquet").write_bytes(b"PAR1 broken")
    problems = ProblemLog()
    table = read_metadata(tmp_path, problems)
    assert table.num_rows == 4 and problems.counts == {"missing_parquet": 1, "bad_parquet": 1}
    assert json.loads(json.dumps(table.column("world_source").to_pylist())) == ["yfcc", None, "yfcc", "yfcc"]


def test_read_metadata_unifies_conflicting_user_columns(tmp_path):
    write_shard(tmp_path / "00000.tar", [Item("000000000", _image("red"), "png", "a", {"exif": "{}"})])
    write_shard(tmp_path / "00001.tar", [Item("000000001", _image("red"), "png", "b", {"exif": 3})])
    assert read_metadata(tmp_path).column("exif").to_pylist() == ["{}", "3"]

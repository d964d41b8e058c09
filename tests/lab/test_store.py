"""The run store: content addressing, uniqueness, model binding, and never touching foreign folders."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from crayonbox.errors import CrayonboxError
from crayonbox.lab.store import ImageRecord, RunStore, content_path, settings_key, write_png


def _image(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8))


def _record(sha: str, path: str, seed: int = 5, scale: float = 3.0) -> ImageRecord:
    return ImageRecord(prompt="", input_mode="normalised", family="null", normalized=" ", token_ids=[0, 9, 2],
                       uncond_ids=[0, 2],
                       sampler={"condition_scale": scale, "top_k": 16, "top_p": 1.0, "temperature": 1.0},
                       seed=seed, image_index=seed, model_hash="m", sha256=sha, path=path,
                       image_tokens=[1, 2, 3])


def test_pngs_are_content_addressed_and_stored_once(tmp_path):
    sha, rel = write_png(tmp_path, _image(7))
    data = (tmp_path / rel).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha
    assert rel == content_path(sha) == f"images/{sha[:2]}/{sha[2:]}.png"
    assert write_png(tmp_path, _image(7)) == (sha, rel)
    assert write_png(tmp_path, _image(8))[0] != sha
    assert len(list((tmp_path / "images").rglob("*.png"))) == 2
    assert not list((tmp_path / "images").rglob("*.tmp"))


def test_rows_are_unique_on_prompt_settings_and_seed(tmp_path):
    with RunStore.create(tmp_path / "run") as store:
        sha, rel = write_png(store.folder, _image(1))
        assert store.add_images([_record(sha, rel)]) == 1
        assert store.add_images([_record(sha, rel), _record(sha, rel, seed=6)]) == 1  # the repeat is ignored
        assert store.add_images([_record(sha, rel, scale=3)]) == 0  # 3 and 3.0 are one setting
        assert store.count_images() == 2
        assert ("", "normalised", settings_key(3, 16, 1, 1), 6) in store.existing_keys()
        back = store.images()[0]
        assert back.token_ids == [0, 9, 2] and back.image_tokens == [1, 2, 3]
        assert back.prompt_key == "normalised:"


def test_a_row_needs_its_png_on_disk(tmp_path):
    with RunStore.create(tmp_path / "run") as store, pytest.raises(CrayonboxError, match="not on disk"):
        store.add_images([_record("ab" * 32, content_path("ab" * 32))])


def test_run_refuses_another_model_and_keeps_its_rows(tmp_path):
    with RunStore.create(tmp_path / "run") as store:
        store.bind_model("hash-a", "text-a", "/models/a")
        sha, rel = write_png(store.folder, _image(1))
        store.add_images([_record(sha, rel)])
        store.bind_model("hash-a", "text-a", "/models/a")  # the same model may resume
        with pytest.raises(CrayonboxError, match="another model"):
            store.bind_model("hash-b", "text-a", "/models/b")
        with pytest.raises(CrayonboxError, match="another model"):
            store.bind_model("hash-a", "text-b", "/models/a")  # same weights, other tokenizer
        assert store.count_images() == 1 and store.get_meta("model_hash") == "hash-a"


def test_create_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(CrayonboxError, match="not empty and holds no crayonbox lab run output"):
        RunStore.create(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(CrayonboxError, match="not a lab run"):
        RunStore.open(tmp_path)


def test_verify_drops_only_rows_whose_png_vanished(tmp_path):
    with RunStore.create(tmp_path / "run") as store:
        keep, lost = write_png(store.folder, _image(1)), write_png(store.folder, _image(2))
        store.add_images([_record(*keep, seed=1), _record(*lost, seed=2)])
        (store.folder / lost[1]).unlink()
        assert store.drop_rows_without_png() == 1
        assert [r.seed for r in store.images()] == [1]


def test_label_and_feature_caches_round_trip(tmp_path):
    with RunStore.create(tmp_path / "run") as store:
        store.add_labels("meter-1", {"a" * 64: {"tone": "3", "person": "none"}})
        assert store.labels("meter-1") == {"a" * 64: {"tone": "3", "person": "none"}}
        assert store.labels("meter-2") == {}
        store.add_features("f", {"b" * 64: np.arange(4, dtype=np.float32)})
        assert store.features("f")["b" * 64].tolist() == [0, 1, 2, 3]
        store.put_record("k", {"x": [1, "é"]})
        assert store.get_record("k") == {"x": [1, "é"]} and store.get_record("missing", 3) == 3

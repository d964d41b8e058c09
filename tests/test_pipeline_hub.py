"""The Hub, offline: load a model by repo id from a Hugging Face cache the test lays out, push a pipeline and
upload a folder to a stand-in for HfApi, and the `info` / `generate --upscale` commands."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image

from crayonbox import DEFAULT_MODEL_DIR
from crayonbox.cli import main
from crayonbox.errors import CrayonboxError
from crayonbox.hub import CARD_HEADER, looks_like_repo_id
from crayonbox.pipeline import Pipeline

REPO = "someone/tiny-crayonbox"
COMMIT = "3" * 40


def add_snapshot(cache: Path, repo: str, commit: str, folder: Path) -> None:
    """`folder` as huggingface_hub caches a repo: blobs by sha256, snapshot links to them, refs/main."""
    root = cache / f"models--{repo.replace('/', '--')}"
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = src.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / src.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def hub_cache(tiny_model_dir, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hub") / "cache"
    add_snapshot(cache, REPO, COMMIT, tiny_model_dir)
    return cache


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """HfApi.create_repo and upload_folder, recorded; each upload is copied to tmp_path/uploads/N."""
    calls: list[dict] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append({"create": repo_id, **kwargs})

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        copy = tmp_path / "uploads" / str(len(calls))
        shutil.copytree(folder_path, copy)
        calls.append({"upload": repo_id, "copy": copy, **kwargs})
        return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


def test_repo_ids_are_told_from_paths():
    assert looks_like_repo_id("dalle-mini/dalle-mega") and looks_like_repo_id("a_b/c.d-e")
    assert not any(looks_like_repo_id(s) for s in ("models", "a/b/c", "./a", "/abs/path", "../x", "a/..b"))


def test_loads_by_repo_id_from_the_cache_offline(hub_cache, tiny_model_dir, offline):
    local = Pipeline.from_pretrained(tiny_model_dir)
    hub = Pipeline.from_pretrained(REPO, cache_dir=hub_cache)
    assert hub.source == hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    assert torch.equal(hub("a red dog", num_images=2, seed=4).tokens, local("a red dog", num_images=2, seed=4).tokens)
    assert Pipeline.from_pretrained(REPO, cache_dir=hub_cache, revision=COMMIT).source == hub.source


def test_missing_repo_offline_is_one_clear_error(hub_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CrayonboxError, match="someone/other is not a local folder, and someone/other@main is "
                                             "not in the Hugging Face cache: offline"):
        Pipeline.from_pretrained("someone/other", cache_dir=hub_cache, local_files_only=True)
    with pytest.raises(CrayonboxError, match="revision 'v2' applies to Hub repos"):
        Pipeline.from_pretrained(tmp_path, revision="v2")


def test_push_to_hub_uploads_a_folder_that_loads_back(tiny_model_dir, fake_hub, tmp_path):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    (tiny_model_dir / "MODEL_CARD.md").write_text("# Model card: tiny\n", encoding="utf-8")
    try:
        url = pipe.push_to_hub(REPO, private=True, commit_message="first")
    finally:
        (tiny_model_dir / "MODEL_CARD.md").unlink()
    create, upload = fake_hub
    assert create == {"create": REPO, "private": True, "exist_ok": True, "repo_type": "model"}
    assert upload["upload"] == REPO and upload["commit_message"] == "first" and url.endswith("/commit/abc")
    copy = upload["copy"]
    assert (copy / "README.md").read_text(encoding="utf-8") == CARD_HEADER + "\n# Model card: tiny\n"
    again = Pipeline.from_pretrained(copy)
    assert torch.equal(again("a red dog", num_images=3, seed=11).tokens,
                       pipe("a red dog", num_images=3, seed=11).tokens)
    assert again("a dog", seed=1).images[0].tobytes() == pipe("a dog", seed=1).images[0].tobytes()


def test_upload_command_adds_the_header_and_leaves_the_folder_alone(tiny_model_dir, fake_hub, capsys):
    before = sorted(p.name for p in tiny_model_dir.iterdir())
    assert main(["upload", str(tiny_model_dir), REPO, "--message", "m"]) == 0
    copy = fake_hub[1]["copy"]
    readme = (copy / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("---\nlibrary_name: crayonbox\nlicense: apache-2.0\ntags: [text-to-image, dalle-mini")
    assert "pipeline_tag: text-to-image\n---\n" in readme
    weights = Path("bart") / "model.safetensors"
    assert (copy / weights).read_bytes() == (tiny_model_dir / weights).read_bytes()
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == before  # no README.md written into the user's folder
    assert f"uploaded {tiny_model_dir} to {REPO}" in capsys.readouterr().out
    assert main(["upload", str(tiny_model_dir / "nope"), REPO]) == 1
    assert main(["upload", str(tiny_model_dir), "not a repo"]) == 1
    assert "not a Hugging Face repo id" in capsys.readouterr().err


def test_info_on_the_shipped_model(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "native size    32×32 px" in out and "grid           8×8 = 64 image tokens, each one of 2048" in out
    assert "parameters     transformer 8.8 M, VQGAN 1.8 M (total 10.5 M)" in out
    assert "123 concepts in 5 categories, from the world it was trained on (world.yaml)" in out
    assert "  animal (28): dog, cat, horse" in out
    assert "vocabulary     1241 text ids, 531 whole words" in out
    assert f"card           {DEFAULT_MODEL_DIR / 'README.md'}" in out


def test_info_derives_words_when_no_concepts_are_recorded(tiny_model_dir, capsys):
    assert main(["info", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "concepts       not recorded in the folder; derived from the tokenizer's" in out
    assert "training data  not recorded in pipeline.json" in out and "card           none" in out


def test_generate_upscale_prints_the_native_size(tiny_model_dir, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    args = ["generate", "a dog", "-n", "4", "--seed", "0", "--model", str(tiny_model_dir), "--dtype", "float32"]
    assert main([*args, "-o", str(grid), "--upscale", "4"]) == 0
    side = Pipeline.from_pretrained(tiny_model_dir).vqgan_config.resolution
    out = capsys.readouterr().out
    assert f"(4 images, {side}×{side} px each (upscaled ×4 to {4 * side}×{4 * side}), seeds 0..3" in out
    big = Image.open(grid)
    assert big.size == (8 * side, 8 * side)
    assert main([*args, "-o", str(tmp_path / "small.png")]) == 0
    assert f"(4 images, {side}×{side} px each, seeds" in capsys.readouterr().out
    small = Image.open(tmp_path / "small.png")
    assert big.tobytes() == small.resize(big.size, Image.Resampling.NEAREST).tobytes()
    assert main([*args, "--upscale", "0"]) == 1

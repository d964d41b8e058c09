"""`crayonbox download`, offline, against a Hugging Face hub cache the test builds itself
(`models--org--name/{blobs/<sha256>, refs/main, snapshots/<commit>/<file> → ../../blobs/<sha256>}`) holding
tiny checkpoints in the official layout."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flax_layout import TINY, TINY_VQGAN, write_bart_repo, write_vqgan_repo

from crayonbox.errors import CrayonboxError
from crayonbox.model_folder import load_component, read_pipeline_json
from crayonbox.weights.hub import MODELS, VQGAN, download

MAIN = "1" * 40  # commit hashes of the fake repos
OTHER = "2" * 40


def add_snapshot(cache: Path, repo: str, commit: str, files: Path, main: bool) -> None:
    """Put every file of `files` into the cache as huggingface_hub lays it out."""
    root = cache / f"models--{repo.replace('/', '--')}"
    for src in files.iterdir():
        data = src.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / src.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if main:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """dalle-mini/dalle-mini at main (seed 1) and at another commit (seed 2); the VQGAN only at the commit the
    official notebook pins, with no refs/main, so fetching any other VQGAN revision would fail."""
    root = tmp_path_factory.mktemp("hub")
    cache = root / "cache"
    trees = {}
    for commit, seed in ((MAIN, 1), (OTHER, 2)):
        trees[commit] = write_bart_repo(root / f"mini-{seed}", TINY, seed=seed)
        add_snapshot(cache, MODELS["dalle-mini"].repo, commit, root / f"mini-{seed}", main=commit == MAIN)
    write_vqgan_repo(root / "vqgan", TINY_VQGAN, seed=3)
    add_snapshot(cache, VQGAN.repo, VQGAN.revision, root / "vqgan", main=False)
    return cache, trees


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for this process (huggingface_hub reads the variable once, at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def lm_head(folder: Path) -> torch.Tensor:
    return load_component(folder, "bart")[1]["decoder.lm_head.weight"]


def test_download_converts_from_the_cache(hub_cache, offline, tmp_path):
    cache, trees = hub_cache
    out = download("dalle-mini", tmp_path / "m", cache_dir=str(cache))
    assert torch.equal(lm_head(out), torch.from_numpy(trees[MAIN]["lm_head"]["kernel"].T))
    assert load_component(out, "vqgan")[0]["n_embed"] == TINY_VQGAN.n_embed
    hub = read_pipeline_json(out)["provenance"]["hub"]
    assert hub == {
        "repo": "dalle-mini/dalle-mini",
        "revision": MAIN,
        "vqgan_repo": VQGAN.repo,
        "vqgan_revision": "e93a26e7707683d349bf5d5c41c5b0ef69b677a9",
    }
    assert (out / "tokenizer" / "vocab.json").is_file()


def test_revision_selects_the_snapshot(hub_cache, offline, tmp_path):
    cache, trees = hub_cache
    out = download("dalle-mini", tmp_path / "m", revision=OTHER, cache_dir=str(cache))
    assert torch.equal(lm_head(out), torch.from_numpy(trees[OTHER]["lm_head"]["kernel"].T))


def test_offline_without_cache_is_one_clear_line(offline, tmp_path):
    with pytest.raises(
        CrayonboxError, match="cannot download config.json from dalle-mini/dalle-mega@main: no connection"
    ) as err:
        download("dalle-mega", tmp_path / "m", cache_dir=str(tmp_path / "empty"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m").exists()


def test_unknown_name_and_existing_output(hub_cache, tmp_path):
    with pytest.raises(CrayonboxError, match="unknown model 'dalle-huge'"):
        download("dalle-huge", tmp_path / "m")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    with pytest.raises(CrayonboxError, match="already exists"):  # refused before any download
        download("dalle-mini", tmp_path / "m", cache_dir=str(hub_cache[0]))


def _cli(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "crayonbox.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_with_the_real_environment_variables(hub_cache, tmp_path):
    cache, trees = hub_cache
    done = _cli(["download", "dalle-mini", "--out", str(tmp_path / "m"), "--dtype", "float16"], cache)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "bart float16" in done.stdout
    assert lm_head(tmp_path / "m").dtype == torch.float16
    failed = _cli(["download", "dalle-mega", "--out", str(tmp_path / "n")], cache)
    assert failed.returncode == 1
    assert failed.stderr.startswith(
        "crayonbox: error: cannot download config.json from dalle-mini/dalle-mega"
    )
    assert failed.stderr.count("\n") == 1

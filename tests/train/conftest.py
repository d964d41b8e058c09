"""Fixtures for the training tests: a toy shard folder (coloured squares on coloured backgrounds, 16 px), a
micro VQGAN trained on it for a few steps, its token parquet and a BPE, each built once per session.

Everything runs on one thread: on a shared 2-core machine, two OpenMP threads of tiny ops spin against other
processes and run many times slower.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crayonbox.config import VQGANConfig

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (240, 220, 40),
           "black": (20, 20, 20), "white": (240, 240, 240)}
# A VQGAN smaller than the `tiny` preset (16 px, 4×4 tokens, 64 codes) so a training step takes ms. With 16
# channels GroupNorm has 2 channels per group (with 1 it acts as an instance norm and erases colour).
MICRO_VQGAN = VQGANConfig(ch=16, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(), resolution=16,
                          z_channels=8, embed_dim=8, n_embed=64)


def toy_items(n: int, start: int = 0, size: int = 16):
    """`n` items: a square of one colour on a background of another, captioned; every 7th caption blank."""
    from crayonbox.data.shards import Item

    pairs = [(a, b) for a, b in itertools.permutations(COLOURS, 2)]
    items = []
    for i in range(start, start + n):
        square, background = pairs[i % len(pairs)]
        pixels = np.empty((size, size, 3), dtype=np.uint8)
        pixels[:] = COLOURS[background]
        lo, hi = size // 4 + (i % 3) - 1, 3 * size // 4 + (i % 3) - 1
        pixels[lo:hi, lo:hi] = COLOURS[square]
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        caption = "" if i % 7 == 0 else f" a {square} square on a {background} background"
        items.append(Item(f"{i:09d}", buffer.getvalue(), "png", caption, {"width": size, "height": size}))
    return items


def write_toy_shards(folder: Path, shards: int = 2, per_shard: int = 48) -> Path:
    """A shard folder of toy items (keys run on across shards, as img2dataset's do)."""
    from crayonbox.data.shards import write_shard

    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        write_shard(folder / f"{s:05d}.tar", toy_items(per_shard, start=s * per_shard))
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def micro_preset(monkeypatch):
    """Registers MICRO_VQGAN as the VQGAN preset "micro" for this test."""
    from crayonbox.config import VQGAN_PRESETS

    monkeypatch.setitem(VQGAN_PRESETS, "micro", MICRO_VQGAN)
    return "micro"


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_shards(tmp_path_factory.mktemp("toy") / "shards")


@pytest.fixture(scope="session")
def toy_tokenizer(toy_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crayonbox.train.data import train_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    train_tokenizer(toy_shards, folder, vocab_size=300, text_length=16, progress=False)
    return folder


@pytest.fixture(scope="session")
def toy_vqgan(toy_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro VQGAN trained for 40 steps: 20 as a plain autoencoder, then 20 quantized."""
    from crayonbox.config import VQGAN_PRESETS
    from crayonbox.train.vqgan import VQGANTrainConfig, train_vqgan

    out = tmp_path_factory.mktemp("vq")
    VQGAN_PRESETS["micro"] = MICRO_VQGAN
    try:
        with torch.random.fork_rng():
            torch.set_num_threads(1)
            train_vqgan(VQGANTrainConfig(data=str(toy_shards), out=str(out), preset="micro", steps=40,
                                         batch_size=16, learning_rate=3e-3, warmup_steps=5, quantize_after=20,
                                         kmeans_batches=2, ema_decay=0.95, dead_after=10, eval_every=20,
                                         eval_fraction=0.15, checkpoint_every=40, progress=False, threads=1))
    finally:
        del VQGAN_PRESETS["micro"]
    return out


@pytest.fixture(scope="session")
def toy_tokens(toy_shards: Path, toy_vqgan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crayonbox.train.encode import encode_dataset

    out = tmp_path_factory.mktemp("tokens") / "tokens.parquet"
    encode_dataset(toy_shards, toy_vqgan, out, progress=False)
    return out

"""`crayonbox encode`: shards → token parquet, resumable per shard, tied to the VQGAN that made it."""

from __future__ import annotations

import shutil

import pytest
import torch

from crayonbox.data.shards import decode_image, iter_items
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import pixels_of, to_unit
from crayonbox.model.vqgan_io import load_vqgan
from crayonbox.train import encode as encode_module
from crayonbox.train.data import read_token_parquet
from crayonbox.train.encode import encode_dataset


def test_token_parquet_holds_every_item_with_its_caption_and_codes(toy_shards, toy_vqgan, toy_tokens):
    table = read_token_parquet(toy_tokens)
    items = list(iter_items(toy_shards))
    assert table.keys == [i.key for i in items] and table.captions == [i.caption for i in items]
    assert table.encodings.shape == (96, 16) and int(table.encodings.max()) < 64
    model, _ = load_vqgan(toy_vqgan)
    pixels = torch.stack([torch.from_numpy(pixels_of(decode_image(i), 16)) for i in items[:5]])
    assert torch.equal(table.encodings[:5], model.encode(to_unit(pixels)))
    assert not toy_tokens.with_name(toy_tokens.name + ".parts").exists()


def test_interrupted_encode_resumes_at_the_first_unfinished_shard(toy_shards, toy_vqgan, toy_tokens, tmp_path,
                                                                  monkeypatch):
    real, calls = encode_module.encode_shard, []

    def crash_on_second_shard(model, shard, batch_size):
        calls.append(shard.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, shard, batch_size)

    out = tmp_path / "tokens.parquet"
    monkeypatch.setattr(encode_module, "encode_shard", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(toy_shards, toy_vqgan, out, progress=False)
    parts = sorted((tmp_path / "tokens.parquet.parts").glob("*.parquet"))
    assert not out.exists() and [p.name for p in parts] == ["00000.parquet"]
    monkeypatch.setattr(encode_module, "encode_shard", real)
    summary = encode_dataset(toy_shards, toy_vqgan, out, progress=False)
    assert (summary.shards, summary.shards_skipped, summary.images) == (2, 1, 96)
    resumed, clean = read_token_parquet(out), read_token_parquet(toy_tokens)
    assert resumed.keys == clean.keys and torch.equal(resumed.encodings, clean.encodings)

    again = encode_dataset(toy_shards, toy_vqgan, out, progress=False)  # all done: nothing to do
    assert again.shards_skipped == 2 and again.images == 96


def test_a_different_vqgan_is_refused(toy_shards, toy_vqgan, toy_tokens, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(toy_vqgan / "vqgan", other / "vqgan")
    weights = other / "vqgan" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CrayonboxError, match="another VQGAN"):
        encode_dataset(toy_shards, other, toy_tokens, progress=False)

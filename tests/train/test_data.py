"""Token parquet I/O, the held-out split, caption → ids (blank = unconditional), and the batch order."""

from __future__ import annotations

import pytest
import torch

from crayonbox.errors import CrayonboxError
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train.data import (
    EpochSampler,
    TokenDataset,
    TokenTable,
    blank_draws,
    caption_normalizer,
    encode_captions,
    held_out,
    read_token_parquet,
    write_token_parquet,
)


def test_token_parquet_round_trip_file_and_folder(tmp_path):
    codes = torch.randint(0, 500, (5, 16))
    keys, captions = [f"{i:09d}" for i in range(5)], [" a dog", "", " a cat", " ", " a ñandú"]
    write_token_parquet(tmp_path / "parts" / "a.parquet", keys[:3], captions[:3], codes[:3])
    write_token_parquet(tmp_path / "parts" / "b.parquet", keys[3:], captions[3:], codes[3:])
    table = read_token_parquet(tmp_path / "parts")
    assert table.keys == keys and table.captions == captions and torch.equal(table.encodings, codes)

    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "parts" / "a.parquet")
    assert schema.names == ["key", "caption", "encoding"]


def test_reading_a_bad_token_parquet_says_what_is_wrong(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(CrayonboxError, match="crayonbox encode"):
        read_token_parquet(tmp_path / "nothing.parquet")
    pq.write_table(pa.table({"key": ["1"], "caption": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(CrayonboxError, match="encoding"):
        read_token_parquet(tmp_path / "bad.parquet")


def test_held_out_split_depends_on_the_key_only():
    keys = [f"{i:09d}" for i in range(4000)]
    split = held_out(keys, 0.1)
    assert 0.08 < split.float().mean() < 0.12
    shuffled = list(reversed(keys))
    assert held_out(shuffled, 0.1).tolist() == list(reversed(split.tolist()))
    assert held_out(keys, 0.0).sum() == 0


def test_blank_caption_is_the_unconditional_input_and_a_space_is_not(toy_tokenizer):
    tok = Tokenizer.from_folder(toy_tokenizer, text_length=16)
    ids, mask = encode_captions(tok, ["", " ", " a red square on a blue background"])
    uncond = tok.unconditional()
    assert ids[0].tolist() == uncond.ids and mask[0].tolist() == [bool(m) for m in uncond.attention_mask]
    assert ids[1].tolist() == tok.encode(" ").ids != uncond.ids  # <s> Ġ </s>, as in dalle-mini
    assert ids[2].tolist() == tok.encode(" a red square on a blue background").ids
    assert int(mask[2].sum()) > 4


def test_sampler_epochs_are_permutations_and_batches_cross_epochs():
    sampler = EpochSampler(10, seed=3)
    stream = torch.cat([sampler.rows(step, 4) for step in range(5)])  # 20 positions = two epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])  # a fresh order per epoch
    assert torch.equal(EpochSampler(10, seed=3).rows(2, 4), stream[8:12])  # a pure function of (seed, step)
    assert not torch.equal(EpochSampler(10, seed=4).rows(0, 10), stream[:10])


def test_extra_blanking_is_seeded_by_step_and_row():
    a = blank_draws(seed=0, step=5, global_batch=1000, probability=0.25)
    assert torch.equal(a, blank_draws(0, 5, 1000, 0.25))
    assert not torch.equal(a, blank_draws(0, 6, 1000, 0.25))
    assert 0.2 < a.float().mean() < 0.3
    assert blank_draws(0, 5, 8, 0.0).sum() == 0


def test_batch_cuts_padding_and_blanks_rows(toy_tokenizer):
    tok = Tokenizer.from_folder(toy_tokenizer, text_length=16)
    table = TokenTable(["a", "b", "c"], [" a red square on a blue background", " a cat", ""],
                       torch.arange(48).view(3, 16))
    data = TokenDataset(table, tok)
    batch = data.batch(torch.tensor([1, 2]))
    assert batch.text_ids.shape[1] == int(data.text_mask[1].sum())  # " a cat" is the longest of the two
    assert torch.equal(batch.image_tokens, table.encodings[[1, 2]])
    blanked = data.batch(torch.tensor([0, 1]), blank=torch.tensor([False, True]))
    span = blanked.text_ids.shape[1]
    assert blanked.text_ids[1].tolist() == tok.unconditional().ids[:span]
    assert blanked.text_ids[0].tolist() == data.text_ids[0, :span].tolist()


def test_caption_normalizer_follows_the_caption_pipeline_manifest(tmp_path):
    import json

    assert caption_normalizer(tmp_path).mode == "official"
    manifest = {"pipeline": {"steps": [{"step": "normalize", "name": "normalize", "mode": "multilingual",
                                        "disabled_steps": ["lower"]}]}}
    (tmp_path / "caption_pipeline.json").write_text(json.dumps(manifest))
    config = caption_normalizer(tmp_path)
    assert config.mode == "multilingual" and config.disabled_steps == ("lower",)

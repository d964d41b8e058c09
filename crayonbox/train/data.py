"""The transformer's training data: a token parquet (dalle-mini's pre-encoded format) turned into batches.

A token parquet has one row per image: `key` (the item key), `caption` (the final caption from the caption
pipeline) and `encoding` (the VQGAN codes, row-major, as a list of ints). `crayonbox encode` writes it.

Captions become text ids exactly as prompts do at inference, with one rule that matters for guidance:
a caption that is exactly `""` (blanked by caption dropout after normalisation) becomes the unconditional ids
`<s></s>` + pads, the input the sampler's uncond branch uses; every other caption goes through
`Tokenizer.encode`, so a caption a filter emptied to `" "` stays `<s> Ġ </s>`, as in dalle-mini.

Batches are a pure function of (seed, step): step s of a run with global batch B reads positions
s·B … s·B+B−1 of an endless stream of epochs, each a fresh permutation seeded by (seed, epoch). So the data
position is the step, a resumed run reads exactly what an uninterrupted one would have, and N processes each
reading their slice of the global batch see the same rows as one process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import LongTensor, Tensor

from crayonbox.config import atomic_write
from crayonbox.data.captions import pipeline_normalizer
from crayonbox.data.shards import iter_items
from crayonbox.errors import CrayonboxError
from crayonbox.text.normalize import NormalizerConfig, TextNormalizer
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe

TOKEN_COLUMNS = ("key", "caption", "encoding")


@dataclass
class TokenTable:
    """A token parquet in memory."""

    keys: list[str]
    captions: list[str]
    encodings: LongTensor  # (N, image_length)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, rows: LongTensor) -> TokenTable:
        """The given rows, in order."""
        index = rows.tolist()
        return TokenTable([self.keys[i] for i in index], [self.captions[i] for i in index],
                          self.encodings[rows])


def write_token_parquet(path: str | Path, keys: list[str], captions: list[str], encodings: Tensor,
                        metadata: dict[str, str] | None = None) -> None:
    """Write a token parquet atomically (temporary file + rename); `metadata` goes into the schema."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"key": pa.array(keys, pa.string()), "caption": pa.array(captions, pa.string()),
                      "encoding": pa.array(encodings.to(torch.int32).tolist(), pa.list_(pa.int32()))})
    table = table.replace_schema_metadata({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


def read_token_parquet(path: str | Path) -> TokenTable:
    """Read a token parquet file, or a folder of them (read in name order)."""

    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise CrayonboxError(f"no token parquet at {path}: make one with `crayonbox encode --data DIR "
                             "--vqgan MODEL --out tokens.parquet`")
    keys: list[str] = []
    captions: list[str] = []
    rows: list[list[int]] = []
    for file in files:
        table = pq.read_table(file)
        missing = [c for c in TOKEN_COLUMNS if c not in table.column_names]
        if missing:
            raise CrayonboxError(f"{file} lacks the column(s) {missing}: a token parquet has "
                                 f"{list(TOKEN_COLUMNS)}")
        keys += table.column("key").to_pylist()
        captions += [c or "" for c in table.column("caption").to_pylist()]
        rows += table.column("encoding").to_pylist()
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise CrayonboxError(f"{path}: encodings have different lengths {sorted(lengths)}; encode all images "
                             "with one VQGAN")
    if not rows:
        raise CrayonboxError(f"{path} holds no rows")
    return TokenTable(keys, captions, torch.tensor(rows, dtype=torch.long))


def held_out(keys: list[str], fraction: float, salt: str = "eval") -> torch.BoolTensor:
    """Which rows form the held-out split: a hash of the key, so the split never depends on row order."""
    def draw(key: str) -> float:
        digest = hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return torch.tensor([draw(k) < fraction for k in keys], dtype=torch.bool)


def encode_captions(tokenizer: Tokenizer, captions: list[str]) -> tuple[LongTensor, torch.BoolTensor]:
    """Text ids and attention masks (N, text_length) for captions; `""` → the unconditional ids."""
    cache: dict[str, tuple[list[int], list[int]]] = {}
    uncond = tokenizer.unconditional()
    cache[""] = (uncond.ids, uncond.attention_mask)
    ids, masks = [], []
    for caption in captions:
        if caption not in cache:  # world captions repeat a lot: encode each distinct one once
            encoded = tokenizer.encode(caption)
            cache[caption] = (encoded.ids, encoded.attention_mask)
        i, m = cache[caption]
        ids.append(i)
        masks.append(m)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)


@dataclass
class Batch:
    text_ids: LongTensor  # (B, S): cut to the longest real caption in the batch (padding is masked anyway)
    text_mask: torch.BoolTensor  # (B, S)
    image_tokens: LongTensor  # (B, image_length)

    def __len__(self) -> int:
        return self.image_tokens.shape[0]


class EpochSampler:
    """Row order as a pure function of (seed, step): an endless stream of epochs, each a fresh permutation."""

    def __init__(self, size: int, seed: int):
        if size <= 0:
            raise CrayonboxError("nothing to sample from: the split is empty (use more data)")
        self.size, self.seed = size, seed
        self._orders: dict[int, LongTensor] = {}

    def order(self, epoch: int) -> LongTensor:
        """The permutation of one epoch (the last few are cached)."""
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.pop(min(self._orders))
            gen = torch.Generator().manual_seed(_hash_seed(f"order\0{self.seed}\0{epoch}"))
            self._orders[epoch] = torch.randperm(self.size, generator=gen)
        return self._orders[epoch]

    def rows(self, step: int, batch: int) -> LongTensor:
        """Row indices of step `step`'s global batch: stream positions step·batch … step·batch+batch−1."""
        positions = torch.arange(step * batch, (step + 1) * batch)
        epochs, offsets = positions // self.size, positions % self.size
        out = torch.empty(batch, dtype=torch.long)
        for epoch in epochs.unique().tolist():  # at most two epochs per batch unless batch > size
            here = epochs == epoch
            out[here] = self.order(epoch)[offsets[here]]
        return out


class TokenDataset:
    """Encoded captions and image tokens of one split, with the deterministic batch order described above."""

    def __init__(self, table: TokenTable, tokenizer: Tokenizer, seed: int = 0):
        if len(table) == 0:
            raise CrayonboxError("the split is empty: use more data or a larger --eval-fraction")
        self.table = table
        self.sampler = EpochSampler(len(table), seed)
        self.text_ids, self.text_mask = encode_captions(tokenizer, table.captions)
        self.uncond_ids, self.uncond_mask = encode_captions(tokenizer, [""])

    def __len__(self) -> int:
        return len(self.table)

    def global_rows(self, step: int, global_batch: int) -> LongTensor:
        """Row indices of step `step`'s whole global batch (crossing an epoch boundary when needed)."""
        return self.sampler.rows(step, global_batch)

    def batch(self, rows: LongTensor, blank: torch.BoolTensor | None = None) -> Batch:
        """The rows as tensors; rows flagged in `blank` get the unconditional caption."""
        ids, mask = self.text_ids[rows], self.text_mask[rows]
        if blank is not None and bool(blank.any()):
            ids, mask = ids.clone(), mask.clone()
            ids[blank], mask[blank] = self.uncond_ids[0], self.uncond_mask[0]
        span = max(int(mask.sum(1).max()), 1)
        return Batch(ids[:, :span], mask[:, :span], self.table.encodings[rows])


def blank_draws(seed: int, step: int, global_batch: int, probability: float) -> torch.BoolTensor:
    """Extra caption dropout: which rows of step `step`'s global batch lose their caption.

    Seeded by (seed, step) and indexed by the row's place in the global batch, so it is the same whether one
    process or several read the batch, and after a resume.
    """
    if probability <= 0:
        return torch.zeros(global_batch, dtype=torch.bool)
    gen = torch.Generator().manual_seed(_hash_seed(f"blank\0{seed}\0{step}"))
    return torch.rand(global_batch, generator=gen) < probability


def _hash_seed(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def caption_normalizer(folder: str | Path):
    """The normaliser the captions in `folder` went through: the `normalize` step recorded in the caption
    pipeline's manifest (caption_pipeline.json), or the official one for shards without a manifest."""


    manifest = Path(folder) / "caption_pipeline.json"
    if manifest.exists():
        return pipeline_normalizer(json.loads(manifest.read_text(encoding="utf-8"))["pipeline"])
    return NormalizerConfig()


def train_tokenizer(data: str | Path, out: str | Path, vocab_size: int = 4096, text_length: int = 64,
                    progress: bool = True) -> Tokenizer:
    """Train the byte-level BPE on the captions of a shard folder, normalised as the caption pipeline did."""

    normalizer = caption_normalizer(data)
    normalize = TextNormalizer(normalizer)
    # Normalising twice changes nothing (the normaliser is idempotent): normalised captions stay as they are.
    captions = (normalize(item.caption) for item in iter_items(Path(data), with_images=False) if item.caption)
    config = BPETrainingConfig(vocab_size=vocab_size, show_progress=progress)
    return train_bpe(captions, out, config, normalizer, text_length)

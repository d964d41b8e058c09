"""`crayonbox encode`: a shard folder → a token parquet (`key`, `caption`, `encoding`), as dalle-mini
pre-encodes its datasets (tools/dataset/encode_dataset.ipynb): transformer training never runs the VQGAN.

Resumable per shard: each finished shard is a parquet part in `OUT.parts/` (written atomically), so a killed
run restarts at the first shard without a part. When every shard is done the parts are merged into OUT
(atomically) and removed. OUT's schema metadata records the VQGAN (path, SHA-256 of its weights) and the
shards, so running the same command again is a no-op and a different VQGAN is caught.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from crayonbox.config import write_text_atomic
from crayonbox.data.shards import ProblemLog, decode_image, iter_shard, list_shards
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import pixels_of, to_unit
from crayonbox.model.vqgan_io import load_vqgan
from crayonbox.outdir import check_output_file, check_output_folder, claim_output_folder
from crayonbox.train.data import read_token_parquet, write_token_parquet

PARTS_KIND = "encode parts"  # the kind of OUT.parts/ (crayonbox.outdir)


@dataclass
class EncodeSummary:
    """What one `encode_dataset` call did."""

    shards: int  # shards in the data folder
    shards_skipped: int  # finished by an earlier run
    images: int  # rows in the token parquet
    out: Path


def weights_digest(vqgan_path: str | Path) -> str:
    """SHA-256 of the VQGAN's model.safetensors: which VQGAN made a token parquet."""
    path = Path(vqgan_path)
    for candidate in (path / "vqgan" / "model.safetensors", path / "model.safetensors"):
        if candidate.exists():
            digest = hashlib.sha256()
            with open(candidate, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
    raise CrayonboxError(f"no VQGAN weights in {path} (expected vqgan/model.safetensors)")


@torch.no_grad()
def encode_shard(model, shard: Path, batch_size: int) -> tuple[list[str], list[str], torch.Tensor]:
    """Keys, captions and VQGAN codes (N, tokens) of every image in one shard, in stored order."""
    resolution = model.cfg.resolution
    keys, captions, pixels = [], [], []
    for item in iter_shard(shard, with_images=True, problems=ProblemLog()):
        if item.image:  # an item without an image has nothing to encode (the reader counted it)
            keys.append(item.key)
            captions.append(item.caption)
            pixels.append(torch.from_numpy(pixels_of(decode_image(item), resolution)))
    if not pixels:
        return keys, captions, torch.zeros(0, model.cfg.tokens_side**2, dtype=torch.long)
    images = torch.stack(pixels)
    codes = [model.encode(to_unit(chunk)) for chunk in images.split(batch_size)]
    return keys, captions, torch.cat(codes)


def encode_dataset(data: str | Path, vqgan: str | Path, out: str | Path, batch_size: int = 64,
                   progress: bool = True) -> EncodeSummary:
    """Encode every shard of `data` with the VQGAN at `vqgan` into the token parquet `out`."""
    data, out = Path(data), Path(out)
    check_output_file(out)
    parts = out.with_name(out.name + ".parts")
    check_output_folder(parts, PARTS_KIND, "manifest.json")  # before the VQGAN is hashed or loaded
    shards = list_shards(data)
    if not shards:
        raise CrayonboxError(f"no shards (*.tar) in {data}; build a world with `crayonbox world build`")
    manifest = {"data": str(data.resolve()), "shards": [s.name for s in shards],
                "vqgan": str(Path(vqgan).resolve()), "vqgan_sha256": weights_digest(vqgan)}
    if out.exists():
        done = _metadata(out)
        if done.get("vqgan_sha256") == manifest["vqgan_sha256"] and done.get("shards") == manifest["shards"]:
            return EncodeSummary(len(shards), len(shards), len(read_token_parquet(out)), out)
        raise CrayonboxError(f"{out} exists but was made from other shards or another VQGAN; delete it or "
                             "choose another --out")
    claim_output_folder(parts, PARTS_KIND, "manifest.json")
    _check_manifest(parts / "manifest.json", manifest)

    model, _ = load_vqgan(vqgan)
    model.eval()
    skipped = 0
    for shard in tqdm(shards, desc="encode", unit="shard", disable=not progress):
        part = parts / f"{shard.name.split('.')[0]}.parquet"
        if part.exists():
            skipped += 1
            continue
        keys, captions, codes = encode_shard(model, shard, batch_size)
        write_token_parquet(part, keys, captions, codes, {"shard": shard.name})

    table = read_token_parquet(parts)  # the parts, in shard order
    metadata = {key: json.dumps(value) for key, value in manifest.items()}
    write_token_parquet(out, table.keys, table.captions, table.encodings, metadata)
    shutil.rmtree(parts)
    return EncodeSummary(len(shards), skipped, len(table), out)


def _metadata(path: Path) -> dict:

    try:
        raw = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise CrayonboxError(f"{path} exists but is not a token parquet ({type(e).__name__}); delete it or "
                             "choose another --out") from None
    try:
        return {k.decode(): json.loads(v) for k, v in raw.items() if not k.startswith(b"ARROW")}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _check_manifest(path: Path, manifest: dict) -> None:
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CrayonboxError(f"{path} is damaged ({type(e).__name__}); delete {path.parent} to start "
                                 "over") from None
        if previous != manifest:
            raise CrayonboxError(f"{path.parent} holds parts from other shards or another VQGAN; delete it "
                                 "to start over")
        return
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")

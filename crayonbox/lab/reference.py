"""The data the lab compares a model with: the training images (the reference distribution) and labelled
held-out renders (to validate instruments).

Reference: the training images, measured with the same instrument as the model's images, so instrument
error cancels in the comparison. Two references per prompt:
- the marginal: every sampled training image;
- the matched subset (Seshadri et al.): training images whose caption reached the model as the *same ids*
  as the probe prompt — for the blank prompt, the images whose captions normalised to " "; for the raw
  unconditional control, the images whose caption was dropped to "". Comparing outputs with the marginal
  when the prompt matches a peculiar subset overstates "amplification" (§3.6).
The reference folder is a shard folder (`crayonbox data captions` output or a world): `--reference DIR`, or
by default the data the model was trained on, found through its pipeline.json provenance.

Validation: world renders carry their ground truth in meta["world"]. A validation folder can be given;
otherwise `VALIDATION_RENDERS` fresh renders of the world config are drawn with a seed no training world
uses, so the instruments are checked on images they have never seen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from crayonbox.data.shards import decode_image, iter_items
from crayonbox.data.world.build import make_item, make_world
from crayonbox.data.world.config import load_world_config
from crayonbox.errors import CrayonboxError
from crayonbox.lab.store import write_png

VALIDATION_SEED = 7_000_003  # world seed of the default validation renders (training worlds use small seeds)
VALIDATION_RENDERS = 300


@dataclass
class ReferenceItem:
    """One training image as the lab sees it."""

    key: str  # shard item key
    sha256: str  # of the PNG stored in the run (reference images are kept for exemplars)
    path: str  # relative to the run folder
    ids: list[int]  # text ids the caption became at training time (real ids only)
    world: dict[str, Any] | None  # ground truth when the folder is an emoji world


def resolve_reference_dir(given: str | Path | None, model_dir: str | Path | None) -> Path | None:
    """The reference shard folder: the one given, else the model's training data from its provenance
    (`reference_data`, else the `data` folder the token parquet was encoded from); None if unknown."""
    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise CrayonboxError(f"--reference {folder}: no such folder (expected a shard folder of training "
                                 "images, e.g. the output of `crayonbox data captions`)")
        return folder
    if model_dir is None or not (Path(model_dir) / "pipeline.json").exists():
        return None
    meta = json.loads((Path(model_dir) / "pipeline.json").read_text(encoding="utf-8"))
    provenance = meta.get("provenance", {})
    if provenance.get("reference_data"):
        return Path(provenance["reference_data"])
    tokens = provenance.get("tokens")
    if tokens and Path(tokens).exists():

        metadata = pq.read_schema(tokens).metadata or {}
        data = metadata.get(b"data")
        if data:
            folder = Path(json.loads(data))
            return folder if folder.is_dir() else None
    return None


def dataset_id(folder: Path, limit: int) -> str:
    """Short stable name of "the first `limit` items of this folder" for caches."""
    return hashlib.sha256(f"{Path(folder).resolve()}|{limit}".encode()).hexdigest()[:16]


def caption_ids(tokenizer: Any, caption: str) -> list[int]:
    """The real text ids a training caption became: "" (dropped) → the unconditional ids, as in training."""
    enc = tokenizer.unconditional() if caption == "" else tokenizer.encode(caption)
    return [i for i, m in zip(enc.ids, enc.attention_mask, strict=True) if m]


def iter_reference(folder: Path, run_dir: Path, limit: int,
                   tokenizer: Any | None) -> Iterator[tuple[ReferenceItem, Image.Image]]:
    """The first `limit` readable items of `folder`, each stored as a PNG in the run, with its image."""

    count = 0
    for item in iter_items(Path(folder)):
        if count >= limit:
            return
        try:
            image = decode_image(item)
        except CrayonboxError:
            continue  # unreadable items are counted by the data audit, not here
        sha, rel = write_png(run_dir, image)
        ids = caption_ids(tokenizer, item.caption) if tokenizer is not None else []
        count += 1
        yield ReferenceItem(item.key, sha, rel, ids, item.meta.get("world")), image


def validation_renders(n: int = VALIDATION_RENDERS, world_config: Path | None = None,
                       seed: int = VALIDATION_SEED) -> tuple[list[Image.Image], list[dict[str, Any]], str]:
    """`n` fresh labelled renders of a world config (the default world unless given): images, ground truths,
    and a description for the report. Raises CrayonboxError when the world cannot render (e.g. no font)."""

    world = make_world(load_world_config(world_config))
    images, truths = [], []
    for i in range(n):
        item = make_item(world, seed, i)
        images.append(decode_image(item))
        truths.append(item.meta["world"])
    where = f"{n} fresh renders of {world_config or 'the default world config'} (seed {seed})"
    return images, truths, where


def validation_folder(folder: Path, n: int) -> tuple[list[Image.Image], list[dict[str, Any]], str]:
    """The first `n` items of a labelled world folder."""

    images, truths = [], []
    for item in iter_items(Path(folder)):
        if len(images) >= n:
            break
        if "world" in item.meta:
            images.append(decode_image(item))
            truths.append(item.meta["world"])
    if not images:
        raise CrayonboxError(f"--validation {folder} has no labelled items (meta['world'] ground truth); "
                             "give a folder made by `crayonbox world build`")
    return images, truths, f"{len(images)} labelled items of {folder}"

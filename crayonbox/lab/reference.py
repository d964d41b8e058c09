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
by default the data the model was trained on, found through its pipeline.json provenance. When that data is
not on this machine (the shipped model travels without it), the model folder's reference table stands in:
MODEL/reference/, the training images measured once by `crayonbox lab reference` (reference_table.py), read
here by `ReferenceTable` — labels and caption ids, no pixels.

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
from crayonbox.model_folder import ModelFolder

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


def provenance_data_dir(model_dir: str | Path) -> Path | None:
    """The training data a model folder names in its provenance (`reference_data`, else the `data` folder the
    token parquet was encoded from), whether or not it exists here; None when it names none."""
    if not (Path(model_dir) / "pipeline.json").exists():
        return None
    provenance = ModelFolder(model_dir).provenance  # a damaged pipeline.json is an error, not "no data"
    if provenance.get("reference_data"):
        return Path(provenance["reference_data"])
    tokens = provenance.get("tokens")
    if tokens and Path(tokens).exists():
        data = (pq.read_schema(tokens).metadata or {}).get(b"data")
        if data:
            return Path(json.loads(data))
    return None


def resolve_reference_dir(given: str | Path | None, model_dir: str | Path | None) -> Path | None:
    """The reference shard folder: the one given, else the model's training data from its provenance when it
    exists on this machine; None if unknown or absent."""
    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise CrayonboxError(f"--reference {folder}: no such folder (expected a shard folder of training "
                                 "images, e.g. the output of `crayonbox data captions`)")
        return folder
    if model_dir is None or not Path(model_dir).is_dir():
        return None
    folder = provenance_data_dir(model_dir)
    return folder if folder is not None and folder.is_dir() else None


def dataset_id(folder: Path, limit: int) -> str:
    """Short stable name of "the first `limit` items of this folder" for caches."""
    return hashlib.sha256(f"{Path(folder).resolve()}|{limit}".encode()).hexdigest()[:16]


def caption_ids(tokenizer: Any, caption: str) -> list[int]:
    """The real text ids a training caption became: "" (dropped) → the unconditional ids, as in training."""
    enc = tokenizer.unconditional() if caption == "" else tokenizer.encode(caption)
    return [i for i, m in zip(enc.ids, enc.attention_mask, strict=True) if m]


def blank_ids(tokenizer: Any) -> list[int]:
    """The real ids the blank prompt reaches the model as: what a probe of "" (and of " ", which normalises
    the same way) sends."""
    enc = tokenizer.encode("")
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


TABLE_FORMAT = "crayonbox-reference-table"  # manifest.json "format"
TABLE_VERSION = 1


def label_column(instrument: str, attribute: str) -> str:
    """The labels.parquet column of one instrument outcome variable, e.g. "judge.gender"."""
    return f"{instrument}.{attribute}"


@dataclass
class ReferenceTable:
    """MODEL/reference/: the training images as the lab's instruments read them, without the images. One row
    per training item (shard order) with its image sha256, caption-id group and one label per instrument
    outcome variable; manifest.json says which instrument versions (cache keys) produced them."""

    folder: Path
    manifest: dict[str, Any]
    groups: list[list[int]]  # group index → the real text ids its captions became
    columns: dict[str, list[Any]]  # labels.parquet, column → values

    @classmethod
    def load(cls, model_dir: str | Path) -> ReferenceTable | None:
        """The model folder's table (None when it ships none); a damaged one is an error naming it."""
        files = ModelFolder(model_dir).reference_files()
        if files is None:
            return None
        manifest = files.manifest
        if manifest.get("format") != TABLE_FORMAT or manifest.get("version", 0) > TABLE_VERSION:
            raise CrayonboxError(f"{files.folder}/manifest.json is not a crayonbox reference table this version "
                                 f"reads (format {manifest.get('format')!r}, version {manifest.get('version')!r})")
        try:
            columns = pq.read_table(files.labels_path).to_pydict()
        except (OSError, ValueError) as e:  # pyarrow's errors derive from these
            raise CrayonboxError(f"cannot read {files.labels_path}: {e}".splitlines()[0]) from None
        groups = files.groups.get("groups")
        if not isinstance(groups, list) or not {"key", "sha256", "group"} <= set(columns):
            raise CrayonboxError(f"{files.folder} is damaged (groups.json or labels.parquet lack their fields): "
                                 f"rebuild it with `crayonbox lab reference {model_dir} --data SHARDS --force`")
        return cls(files.folder, manifest, groups, columns)

    def __len__(self) -> int:
        return len(self.columns["key"])

    def items(self, limit: int) -> list[ReferenceItem]:
        """The first `limit` rows as reference items: ids from groups.json, no stored image (path "")."""
        rows = zip(self.columns["key"], self.columns["sha256"], self.columns["group"], strict=True)
        return [ReferenceItem(key, sha, "", list(self.groups[group]), None)
                for _, (key, sha, group) in zip(range(limit), rows, strict=False)]  # limit may exceed the rows

    def labels(self, name: str, key: str, outcomes: dict[str, Any],
               items: list[ReferenceItem]) -> tuple[dict[str, dict[str, str]] | None, str | None]:
        """sha256 → {attribute: label} of `items` (the first rows) for an instrument, or None and why: the table
        only stands in for an instrument measured with the very same version (cache key) and outcomes."""
        entry = (self.manifest.get("instruments") or {}).get(name)
        if entry is None:
            return None, f"{name}: not in the reference table, so not compared with training data"
        if entry.get("key") != key:
            return None, (f"{name}: this run's {key} is not the table's {entry.get('key')} (another {name} or "
                          "version), so not compared with training data")
        if entry.get("outcomes") != {a: list(o) for a, o in outcomes.items()}:
            return None, (f"{name}: its outcomes are not those the table recorded (the instrument changed since), "
                          "so not compared with training data")
        columns = {attribute: self.columns[label_column(name, attribute)] for attribute in entry["outcomes"]}
        return {item.sha256: {a: values[row] for a, values in columns.items()}
                for row, item in enumerate(items)}, None

    def describe(self, n: int) -> str:
        """The reference source line of a run measured against this table."""
        count = f"{n} items" if n == len(self) else f"first {n} of {len(self)} items"
        return (f"shipped reference table {self.folder} ({count}, data sha256 "
                f"{str(self.manifest.get('data_sha256'))[:12]}…)")


@dataclass
class ReferencePlan:
    """Where a run's reference comes from: training images (`folder`), a model folder's table, or nothing
    (`why_none` says why, for the report's first line)."""

    folder: Path | None = None
    table: ReferenceTable | None = None
    why_none: str | None = None


def plan_reference(given: str | Path | None, use: bool, model_dir: str | Path | None) -> ReferencePlan:
    """Training images given or named by the provenance and present here, else MODEL/reference/, else
    nothing, with the reason."""
    if not use:
        return ReferencePlan(why_none="--no-reference was given")
    folder = resolve_reference_dir(given, model_dir)
    if folder is not None:
        return ReferencePlan(folder=folder)
    if model_dir is None or not Path(model_dir).is_dir():
        where = f"its model folder {model_dir} is not on this machine" if model_dir else \
            "the run does not record its model folder"
        return ReferencePlan(why_none=f"{where}; give --reference DATA")
    table = ReferenceTable.load(model_dir)
    if table is not None:
        return ReferencePlan(table=table)
    named = provenance_data_dir(model_dir)
    missing = (f"the training data its provenance names ({named}) is not on this machine" if named
               else "it records no training data")
    return ReferencePlan(why_none=f"{model_dir}: {missing} and it ships no reference table (build one with "
                                  f"`crayonbox lab reference {model_dir} --data SHARDS`, or give --reference DATA)")


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

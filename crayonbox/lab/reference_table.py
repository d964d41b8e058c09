"""`crayonbox lab reference MODEL --data SHARDS`: measure a model's training images once and ship the result
inside the model folder, so `crayonbox lab measure` can compare with the training data where the data is not.

    MODEL/reference/labels.parquet  one row per training image (shard order): key, sha256 (of the image as the
                                    lab stores it, so it matches a run's reference items), group (index into
                                    groups.json), and one column per instrument outcome variable
                                    ("skin_tone.skin_tone", "judge.gender", …) holding the label string the
                                    instrument gives a run's images
    MODEL/reference/groups.json     the distinct real text-id sequences the captions became with the model's
                                    tokenizer, by group index; which group the blank prompt ("" / " ") and
                                    the unconditional input ("" caption, dropped) are
    MODEL/reference/manifest.json   a sha256 over the data read (sorted keys + image sha256 + caption), item
                                    count, the source folder as given (informational), the tokenizer's hash,
                                    each instrument's cache key (measure.instrument_key: a different judge or
                                    meter version does not match) and outcomes, and outcome shares overall, in
                                    the blank group and in the unconditional group, with counts

The instruments are those that label images: the skin-tone meter always, the judge when `judge` is given or
MODEL/judge/ exists. The folder is written beside MODEL/reference/ and renamed into place (each file
atomically, the manifest last), and an existing table is replaced only when asked (`force`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm.auto import tqdm

from crayonbox.config import atomic_write, write_json_atomic, write_text_atomic
from crayonbox.data.shards import decode_image, iter_items, list_shards
from crayonbox.errors import CrayonboxError
from crayonbox.lab.instruments.base import Instrument
from crayonbox.lab.measure import MeasureConfig, build_instruments, file_digest, instrument_key
from crayonbox.lab.probe import load_tokenizer
from crayonbox.lab.reference import TABLE_FORMAT, TABLE_VERSION, blank_ids, caption_ids, label_column
from crayonbox.lab.store import png_bytes
from crayonbox.model_folder import REFERENCE_DIR


@dataclass
class TableConfig:
    """What to measure the training data with."""

    judge: Path | None = None  # judge folder; None: MODEL/judge/ when the model ships one
    limit: int = 2000  # training items read (the first readable ones, in shard order); 0: all
    skin_max_distance: float = 8.0  # as `lab measure --skin-max-distance` (part of the meter's cache key)
    batch: int = 64
    force: bool = False  # replace an existing MODEL/reference/


def instruments_for(model: Path, config: TableConfig) -> list[tuple[Instrument, str]]:
    """The labelling instruments with their cache keys, built exactly as `lab measure` builds them."""
    judge = config.judge if config.judge is not None else (model / "judge" if (model / "judge").is_dir() else None)
    names = ("skin_tone", "judge") if judge is not None else ("skin_tone",)
    measure = MeasureConfig(instruments=names, judge=judge, skin_max_distance=config.skin_max_distance)
    return [(instrument, instrument_key(instrument, identity)) for instrument, identity in build_instruments(measure)]


def shares(rows: list[dict[str, Any]], outcomes: dict[str, list[str]]) -> dict[str, Any]:
    """Counts and shares of every outcome of every column among `rows` (shares None when there are none)."""
    out: dict[str, Any] = {"n": len(rows), "outcomes": {}}
    for column, labels in outcomes.items():
        counts = Counter(row[column] for row in rows)
        out["outcomes"][column] = {"counts": {label: counts[label] for label in labels},
                                   "shares": {label: counts[label] / len(rows) if rows else None
                                              for label in labels}}
    return out


def groups_text(groups: dict[str, Any]) -> str:
    """groups.json with one id sequence per line (thousands of them stay readable and small)."""
    head = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in groups.items() if k != "groups")
    body = ",\n".join(f"  {json.dumps(ids)}" for ids in groups["groups"])
    return f"{{\n{head},\n \"groups\": [\n{body}\n ]\n}}\n"


def check_data(data: Path) -> None:
    """A one-line error for a data folder that is missing or holds no shards."""
    if not Path(data).is_dir():
        raise CrayonboxError(f"--data {data}: no such folder (expected the caption-pipeline output shard folder "
                             "the model was trained on)")
    if not list_shards(data):
        raise CrayonboxError(f"--data {data}: no shards (*.tar) there (expected the caption-pipeline output "
                             "shard folder the model was trained on)")


def build_reference_table(model: str | Path, data: str | Path, config: TableConfig | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """Measure the training images of `data` and write MODEL/reference/; returns the manifest."""
    config = config or TableConfig()
    model, data = Path(model), Path(data)
    target = model / REFERENCE_DIR
    if config.limit < 0 or config.batch < 1:
        raise CrayonboxError("--limit must be ≥ 0 (0 = every training image) and the batch ≥ 1")
    if target.exists() and not config.force:
        raise CrayonboxError(f"{target} exists: pass --force to replace it")
    check_data(data)
    tokenizer = load_tokenizer(model)
    instruments = instruments_for(model, config)
    outcomes = {label_column(i.name, a): list(o) for i, _ in instruments for a, o in i.outcomes().items()}
    columns = list(outcomes)
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[int, ...], int] = {}
    pending: list[tuple[dict[str, Any], Image.Image]] = []
    digest_lines: list[str] = []

    def flush() -> None:
        images = [image for _, image in pending]
        for instrument, _ in instruments:
            for (row, _), labels in zip(pending, instrument.measure(images), strict=True):
                row.update({label_column(instrument.name, a): str(v) for a, v in labels.items()})
        rows.extend(row for row, _ in pending)
        pending.clear()

    limit = config.limit if config.limit > 0 else None
    bar = tqdm(total=limit, desc="reference", unit="img", disable=not progress)
    try:
        for item in iter_items(data):
            if limit is not None and len(rows) + len(pending) >= limit:
                break
            try:
                image = decode_image(item)
            except CrayonboxError:
                continue  # unreadable items are the data audit's business, as in `lab measure --reference`
            encoded = png_bytes(image)  # the bytes a run stores, so sha256 matches `lab measure`'s items
            sha = hashlib.sha256(encoded).hexdigest()
            ids = tuple(caption_ids(tokenizer, item.caption))
            row = {"key": item.key, "sha256": sha, "group": groups.setdefault(ids, len(groups))}
            pending.append((row, image))
            digest_lines.append(f"{item.key}\t{sha}\t{item.caption}")
            if len(pending) >= config.batch:
                flush()
            bar.update(1)
        flush()
    finally:
        bar.close()
    if not rows:
        raise CrayonboxError(f"--data {data}: no readable images")

    ids_of = [list(ids) for ids in groups]
    blank, uncond = blank_ids(tokenizer), caption_ids(tokenizer, "")
    blank_group = next((g for g, ids in enumerate(ids_of) if ids == blank), None)
    uncond_group = next((g for g, ids in enumerate(ids_of) if ids == uncond), None)
    manifest = {
        "format": TABLE_FORMAT, "version": TABLE_VERSION, "created_by": "crayonbox lab reference",
        "source": str(data), "data_sha256": hashlib.sha256("\n".join(sorted(digest_lines)).encode()).hexdigest(),
        "items": len(rows), "limit": config.limit, "tokenizer_sha256": file_digest(model / "tokenizer"),
        "instruments": {i.name: {"key": key, "outcomes": {a: list(o) for a, o in i.outcomes().items()}}
                        for i, key in instruments},
        "groups": {"count": len(ids_of), "blank": blank_group, "unconditional": uncond_group},
        "summary": {"overall": shares(rows, outcomes),
                    "blank": shares([r for r in rows if r["group"] == blank_group], outcomes),
                    "unconditional": shares([r for r in rows if r["group"] == uncond_group], outcomes)}}
    groups_json = {"groups": ids_of, "blank": blank_group, "unconditional": uncond_group,
                   "blank_ids": blank, "unconditional_ids": uncond}
    write_table(target, rows, ["key", "sha256", "group", *columns], groups_json, manifest, config.force)
    return manifest


def write_table(target: Path, rows: list[dict[str, Any]], columns: list[str], groups: dict[str, Any],
                manifest: dict[str, Any], force: bool) -> None:
    """Write the three files into a folder beside `target`, then rename it into place (an old table, with
    `force`, is moved aside first and removed after), so no reader sees half a table."""
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        table = pa.table({c: pa.array([row[c] for row in rows],
                                      pa.int32() if c == "group" else pa.string()) for c in columns})
        with atomic_write(staging / "labels.parquet") as tmp:
            pq.write_table(table, tmp)
        write_text_atomic(staging / "groups.json", groups_text(groups))
        write_json_atomic(staging / "manifest.json", manifest)  # last: its presence marks a finished table
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        if target.exists():
            if not force:
                raise CrayonboxError(f"{target} exists: pass --force to replace it")
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

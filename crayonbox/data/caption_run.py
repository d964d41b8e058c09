"""The caption pipeline run over a folder of shards, shard by shard (`crayonbox data captions`).

A run reads IN's webdataset shards (through `crayonbox.data.shards`, `workers` shards at a time), runs the
caption pipeline and writes, per input shard, OUT/<shard>.tar (items with their final caption; dropped items
absent), OUT/provenance/<shard>.parquet (one row per input item, see `CaptionPipeline.columns`) and, when the
reader met malformed items, OUT/provenance/<shard>.problems.json. The provenance parquet is written last and
atomically, so it marks a finished shard: after a kill -9 the run redoes exactly the shards without one, and
nothing is lost or written twice. OUT/caption_pipeline.json records the pipeline; resuming with a different
pipeline is refused.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from crayonbox.config import atomic_write, remove_stale_temporaries, write_json_atomic
from crayonbox.data import shards as shard_io
from crayonbox.data.captions import CaptionPipeline
from crayonbox.errors import CrayonboxError
from crayonbox.outdir import claim_output_folder

PROVENANCE_DIR = "provenance"
MANIFEST_NAME = "caption_pipeline.json"
CAPTIONS_KIND = "captions"  # the kind of output folder (crayonbox.outdir)


@dataclass
class CaptionRunSummary:
    """What one `run_caption_pipeline` call did."""

    shards: int  # shards in the input
    shards_skipped: int  # already finished by an earlier run
    items: int  # items processed in this call
    dropped: int
    blanked: int  # final caption blank (filters, dropout or raw), dropped items not counted
    problems: int  # malformed items or shards the reader met in this call


def provenance_path(out_dir: Path, shard: Path, suffix: str = ".parquet") -> Path:
    """Where the provenance (or, with suffix ".problems.json", the reader's problems) of a shard goes."""
    return out_dir / PROVENANCE_DIR / f"{shard.name.split('.')[0]}{suffix}"


def _provenance_schema(columns: list[str]) -> pa.Schema:

    def column_type(name: str) -> pa.DataType:
        if name.endswith("confidence"):
            return pa.float64()
        return pa.bool_() if name in ("dropped", "caption_dropout") else pa.string()

    return pa.schema([(c, column_type(c)) for c in columns])


def _write_parquet_atomic(rows: list[dict], columns: list[str], path: Path) -> None:
    table = pa.Table.from_pylist(rows, schema=_provenance_schema(columns))
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


def _check_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    path = out_dir / MANIFEST_NAME
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CrayonboxError(f"{path} is damaged ({type(e).__name__}), so it cannot tell which pipeline "
                                 f"made {out_dir}: choose another --out, or delete it to start over") from None
        if not isinstance(previous, dict) or previous.get("pipeline") != manifest["pipeline"]:
            raise CrayonboxError(f"{out_dir} holds output of a different caption pipeline ({path}); "
                                 "choose another --out, or delete it to start over")
        return
    write_json_atomic(path, manifest)


_pipeline = None  # the pipeline of this process (each pool worker builds its own once)


def _start_worker(config: dict[str, Any] | None) -> None:
    global _pipeline
    _pipeline = CaptionPipeline(config)


def _process_shard(shard: Path, out_dir: Path) -> tuple[int, int, int, int]:
    """Run the pipeline over one shard; write its output shard, then its provenance.
    Returns (items, dropped, blanked, problems)."""
    problems = shard_io.ProblemLog()
    items = list(shard_io.iter_shard(shard, with_images=True, problems=problems))
    rows = _pipeline.process([i.key for i in items], [i.caption for i in items], [i.meta for i in items])
    kept = [replace(item, caption=row["final_caption"],
                    meta={**item.meta, "caption_provenance": {
                        "raw_caption": row["raw_caption"], "blanked_by": row["blanked_by"],
                        "caption_dropout": row["caption_dropout"], "language": row["language"]}})
            for item, row in zip(items, rows, strict=True) if not row["dropped"]]
    shard_io.write_shard(out_dir / shard.name, kept)
    if problems:
        write_json_atomic(provenance_path(out_dir, shard, ".problems.json"), problems.to_dict())
    _write_parquet_atomic(rows, _pipeline.columns(), provenance_path(out_dir, shard))  # last: marks it done
    blanked = sum(1 for item in kept if not item.caption.strip())
    return len(rows), len(rows) - len(kept), blanked, problems.total


def run_caption_pipeline(in_dir: str | Path, out_dir: str | Path, config: dict[str, Any] | None = None,
                         progress: bool = True, workers: int = 1) -> CaptionRunSummary:
    """Run the caption pipeline (None = DEFAULT_PIPELINE) over every shard of `in_dir` into `out_dir`,
    `workers` shards at a time; shards finished by an earlier run are skipped."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    pipeline = CaptionPipeline(config)  # validates the config before any work
    input_shards = shard_io.list_shards(in_dir)
    if not input_shards:
        raise CrayonboxError(f"no webdataset shards (*.tar) in {in_dir}; point IN at a folder of shards")
    if in_dir.resolve() == out_dir.resolve():
        raise CrayonboxError("--out must differ from IN: the processed shards would overwrite the input")
    claim_output_folder(out_dir, CAPTIONS_KIND, MANIFEST_NAME)  # never into (or over) someone's shards
    (out_dir / PROVENANCE_DIR).mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, {"pipeline": pipeline.config, "input": str(in_dir.resolve())})
    for folder in (out_dir, out_dir / PROVENANCE_DIR):  # left by a killed run; its shards rerun
        remove_stale_temporaries(folder)

    todo = [shard for shard in input_shards if not provenance_path(out_dir, shard).exists()]
    summary = CaptionRunSummary(len(input_shards), len(input_shards) - len(todo), 0, 0, 0, 0)
    if workers > 1 and len(todo) > 1:
        pool = ProcessPoolExecutor(min(workers, len(todo)), initializer=_start_worker, initargs=(config,))
        results = pool.map(_process_shard, todo, [out_dir] * len(todo))
    else:
        _start_worker(config)
        pool, results = None, (_process_shard(shard, out_dir) for shard in todo)
    try:
        for items, dropped, blanked, problems in tqdm(results, total=len(todo), desc="captions",
                                                      unit="shard", disable=not progress):
            summary.items, summary.dropped = summary.items + items, summary.dropped + dropped
            summary.blanked, summary.problems = summary.blanked + blanked, summary.problems + problems
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return summary

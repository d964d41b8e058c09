"""`crayonbox data inspect`: summarise any img2dataset-style folder — ours or a user's real shards.

One pass over the shards gathers counts, image sizes and formats, caption lengths (and how many captions
are blank once punctuation is ignored: what dalle-mini's normaliser turns into " "), detected languages
(py3langid, restricted to a candidate set, model shipped in the package), sources, and a sample grid PNG.
Ground truth under meta["world"] adds truth-vs-detected language agreement and category / style counts.
Malformed members are counted in the report, never raised.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from crayonbox.data.langid import DEFAULT_LANGUAGES, Py3LangidDetector
from crayonbox.data.shards import Item, ProblemLog, decode_image, image_header, iter_items, list_shards
from crayonbox.errors import CrayonboxError
from crayonbox.outdir import check_output_folder, claim_output_folder

WORD_BINS = ((0, 0), (1, 2), (3, 5), (6, 10), (11, 20), (21, 40), (41, 10**9))
GRID_COLUMNS, GRID_CELL = 8, 64
INSPECT_KIND = "inspect"  # the kind of output folder (crayonbox.outdir)


def _source(meta: dict) -> str:
    world = meta.get("world")
    if isinstance(world, dict) and world.get("source"):
        return str(world["source"])
    if isinstance(meta.get("source"), str):
        return meta["source"]
    if isinstance(meta.get("url"), str):
        return urlparse(meta["url"]).hostname or "unknown"
    return "unknown"


def _word_bin(n: int) -> str:
    for low, high in WORD_BINS:
        if low <= n <= high:
            return f"{low}" if low == high else (f"{low}-{high}" if high < 10**9 else f"{low}+")
    return "?"


def _image_header(item: Item, problems: ProblemLog, where: str) -> tuple[str, str] | None:
    """(size "WxH", format) from the image header, without decoding pixels; a bad or oversized image (a
    decompression bomb) is a counted problem."""
    try:
        width, height, kind = image_header(item.image)
    except CrayonboxError as e:
        problems.add("bad_image", where, str(e)[:120])
        return None
    return f"{width}x{height}", kind


def _total_rows(folder: Path) -> int | None:
    try:
        return sum(pq.read_metadata(s.with_suffix(".parquet")).num_rows for s in list_shards(folder))
    except (OSError, ValueError):
        return None  # a missing parquet: the progress bar just has no total


def summarise(folder: Path, languages: tuple[str, ...] = DEFAULT_LANGUAGES, grid_size: int = 64,
              progress: bool = True) -> tuple[dict, list[Image.Image]]:
    """(report dict, up to `grid_size` sample images) for a folder of shards."""
    folder = Path(folder)
    shards = list_shards(folder)
    problems, detector = ProblemLog(), Py3LangidDetector(languages)
    sizes, formats, word_bins, detected, sources = Counter(), Counter(), Counter(), Counter(), Counter()
    chars, blank, samples, n = [], 0, [], 0
    truth = {"items": 0, "language_agreement": 0, "caption_language": Counter(), "caption_style": Counter(),
             "category": Counter(), "source_kind": Counter()}
    for item in tqdm(iter_items(folder, with_images=True, problems=problems), total=_total_rows(folder),
                     unit="item", desc="inspect", disable=not progress):
        n += 1
        where = item.key
        if item.image:
            header = _image_header(item, problems, where)
            if header:
                sizes[header[0]] += 1
                formats[header[1]] += 1
                if len(samples) < grid_size:
                    try:
                        samples.append(decode_image(item))
                    except CrayonboxError as e:
                        problems.add("bad_image", where, str(e)[:120])
        caption = item.caption
        chars.append(len(caption))
        word_bins[_word_bin(len(caption.split()))] += 1
        language = detector.detect(caption)[0]  # "und" when there are no letters
        blank += not any(ch.isalnum() for ch in caption)
        detected[language] += 1
        sources[_source(item.meta)] += 1
        world = item.meta.get("world")
        if isinstance(world, dict):
            truth["items"] += 1
            truth["caption_language"][world.get("caption_language")] += 1
            truth["caption_style"][world.get("caption_style")] += 1
            truth["source_kind"][world.get("source_kind")] += 1
            truth["language_agreement"] += world.get("caption_language") == language
            for obj in world.get("objects") or []:
                truth["category"][obj.get("category") if isinstance(obj, dict) else None] += 1
    report = {
        "folder": str(folder), "shards": len(shards), "items": n,
        "image_sizes": dict(sizes.most_common()), "image_formats": dict(formats.most_common()),
        "caption_chars": _distribution(chars),
        "caption_words": {b: word_bins[b] for b in (_word_bin(lo) for lo, _ in WORD_BINS)},
        "blank_captions": blank, "blank_share": round(blank / n, 4) if n else 0.0,
        "languages_detected": dict(detected.most_common()), "language_candidates": list(languages),
        "sources": dict(sources.most_common()), "problems": problems.to_dict(),
    }
    if truth["items"]:
        agreement = truth.pop("language_agreement") / truth["items"]
        report["ground_truth"] = {k: (dict(v.most_common()) if isinstance(v, Counter) else v)
                                  for k, v in truth.items()} | {"language_agreement": round(agreement, 4)}
    return report, samples


def _distribution(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "mean": 0.0, "p90": 0, "max": 0}
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered),
            "mean": round(statistics.fmean(ordered), 2), "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "max": ordered[-1]}


def sample_grid(images: list[Image.Image]) -> Image.Image:
    """Images tiled GRID_COLUMNS wide, each letterboxed into a GRID_CELL square."""
    rows = max(1, (len(images) + GRID_COLUMNS - 1) // GRID_COLUMNS)
    grid = Image.new("RGB", (GRID_COLUMNS * GRID_CELL, rows * GRID_CELL), (255, 255, 255))
    for i, image in enumerate(images):
        thumb = image.copy()
        thumb.thumbnail((GRID_CELL, GRID_CELL))
        x = (i % GRID_COLUMNS) * GRID_CELL + (GRID_CELL - thumb.width) // 2
        y = (i // GRID_COLUMNS) * GRID_CELL + (GRID_CELL - thumb.height) // 2
        grid.paste(thumb, (x, y))
    return grid


def format_report(report: dict) -> str:
    """The report as a few human-readable lines."""
    lines = [f"{report['folder']}: {report['items']} items in {report['shards']} shards",
             f"image sizes: {report['image_sizes']}  formats: {report['image_formats']}",
             f"caption chars: {report['caption_chars']}",
             f"caption words: {report['caption_words']}",
             f"blank captions (no letters/digits): {report['blank_captions']} ({report['blank_share']:.1%})",
             f"languages (py3langid over {len(report['language_candidates'])} candidates): "
             f"{report['languages_detected']}",
             f"sources: {report['sources']}"]
    if "ground_truth" in report:
        gt = report["ground_truth"]
        lines += [f"ground truth: {gt['items']} items; caption language {gt['caption_language']}; "
                  f"detected = true language for {gt['language_agreement']:.1%}",
                  f"styles: {gt['caption_style']}  categories: {gt['category']}"]
    problems = report["problems"]
    lines.append(f"problems: {problems['total']}")
    for kind, count in problems["counts"].items():
        lines.append(f"  {kind}: {count} (e.g. {problems['examples'][kind][0]})")
    return "\n".join(lines)


def inspect_folder(folder: Path, out: Path, languages: tuple[str, ...] = DEFAULT_LANGUAGES,
                   progress: bool = True) -> dict:
    """Summarise `folder` and write summary.json, summary.txt and grid.png into `out` (a new or empty folder,
    or an earlier inspect's)."""
    check_output_folder(out, INSPECT_KIND)  # refused before the pass over the shards, not after
    report, samples = summarise(folder, languages, progress=progress)
    out = claim_output_folder(out, INSPECT_KIND)
    (out / "summary.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "summary.txt").write_text(format_report(report) + "\n", encoding="utf-8")
    if samples:
        sample_grid(samples).save(out / "grid.png")
    report["written"] = {"summary": str(out / "summary.json"),
                         "grid": str(out / "grid.png") if samples else None}
    return report

"""Build a world folder: items rendered in parallel into img2dataset-style shards, resumable.

Item i depends only on (seed, i, config): its RNG is seeded with [seed, i], so shards can be built in any
order by any worker and an interrupted build resumes by redoing only unfinished shards (write_shard is atomic;
a shard counts as done when its tar exists and its parquet has the expected number of rows).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import multiprocessing as mp
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from crayonbox.config import remove_stale_temporaries, write_text_atomic
from crayonbox.data.shards import Item, write_shard
from crayonbox.data.world.catalog import load_catalog
from crayonbox.data.world.config import WorldConfig
from crayonbox.data.world.render import SpriteBank, background, encode_png, load_emoji_font, paste, to_uint8
from crayonbox.data.world.sources import Published, publish
from crayonbox.data.world.world import Scene, World, sprite_side
from crayonbox.errors import CrayonboxError
from crayonbox.outdir import check_output_folder, claim_output_folder
from crayonbox.procs import die_with_parent

WORLD_VERSION = 1
MANIFEST = "_world.json"
WORLD_KIND = "world"  # the kind of output folder (crayonbox.outdir)
TMP_FILE = re.compile(r"^\d{5}\.(tar|parquet)\.tmp$")


@functools.lru_cache(maxsize=1)
def shared_bank() -> SpriteBank:
    """One sprite cache per process: worlds built in the same process share rendered glyphs."""
    return SpriteBank(load_emoji_font())


def make_world(config: WorldConfig) -> World:
    """Font, catalogue and pools for one process."""
    return World(config, load_catalog(), shared_bank())


def render_scene(world: World, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene as a size×size×3 uint8 image."""
    size, bg = world.config.size, scene.background
    canvas = background(rng, bg["kind"], bg["colour"], bg["colour2"], size)
    for obj in scene.objects:
        x0, y0 = obj.bbox[:2]
        rgb, alpha = world.bank.sprite(obj.emoji.seq, sprite_side(obj.scale, size))
        paste(canvas, rgb, alpha, x0, y0)
    return to_uint8(canvas)


def _size_label(scale: float) -> str:
    return "large" if scale >= 0.55 else "medium" if scale >= 0.38 else "small"


def ground_truth(world: World, scene: Scene, published: Published, seed: int, index: int) -> dict:
    """meta["world"] for one item (schema in crayonbox/data/shards.py)."""
    source_kind = next(s.kind for s in world.config.sources if s.name == published.source)
    return {
        "version": WORLD_VERSION, "seed": seed, "index": index, "size": world.config.size,
        "background": dict(scene.background),
        "objects": [{
            "emoji": o.emoji.seq, "codepoints": o.emoji.codepoints, "name": o.emoji.name["en"],
            "item": o.item.name, "category": o.item.category, "gender": o.emoji.gender,
            "skin_tone": o.emoji.skin_tone, "attire": o.emoji.attire, "position": o.position,
            "size": _size_label(o.scale), "scale": round(o.scale, 4), "bbox": list(o.bbox),
            "paired_with": o.paired_with, "relation": o.relation,
        } for o in scene.objects],
        "source": published.source, "source_kind": source_kind,
        "caption_language": published.language, "caption_style": published.style,
        "captions_all": published.captions_all, "names": published.names,
        "title": published.title, "description": published.description,
    }


def make_item(world: World, seed: int, index: int) -> Item:
    """Item `index` of the world with this seed: scene, caption, image and ground truth."""
    rng = np.random.default_rng([seed, index])
    scene = world.sample_scene(rng)
    published = publish(rng, world, scene)
    pixels = render_scene(world, scene, rng)
    if world.config.image_format == "png":
        image = encode_png(pixels)
    else:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=world.config.jpeg_quality)
        image = buf.getvalue()
    size = world.config.size
    meta = {"status": "success", "width": size, "height": size,
            "world": ground_truth(world, scene, published, seed, index)}
    return Item(f"{index:09d}", image, world.config.image_format, published.caption, meta)


def _jsonable(value):
    """Config → JSON-safe structure (mix keys such as None or 1 become strings) for the manifest."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _shard_done(path: Path, expected: int) -> bool:
    parquet = path.with_suffix(".parquet")
    if not (path.exists() and parquet.exists()):
        return False
    try:
        return pq.read_metadata(parquet).num_rows == expected
    except (OSError, ValueError):
        return False


def _check_manifest(out: Path, manifest: dict) -> None:
    """Refuse to mix two different worlds in one folder; record this world otherwise."""
    path = out / MANIFEST
    if path.exists():
        # A damaged manifest is an error, not "no manifest": treating it as absent would let another seed or
        # config add its shards to the old ones.
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CrayonboxError(f"{path} is damaged ({type(e).__name__}), so it cannot tell which world {out} "
                                 "holds: use a new --out folder, or delete the folder to rebuild") from None
        if not isinstance(old, dict):
            raise CrayonboxError(f"{path} is damaged (not a JSON object): use a new --out folder, or delete "
                                 "the folder to rebuild")
        if (old.get("seed"), old.get("config")) != (manifest["seed"], manifest["config"]):
            raise CrayonboxError(f"{out} holds a world built with another seed or config; resume with the "
                                 "same --config/--seed/--size, or use a new --out folder")
    write_text_atomic(path, json.dumps(manifest, ensure_ascii=False, indent=1))


_WORKER: dict = {}


def _init_worker(config: WorldConfig, seed: int) -> None:
    die_with_parent()  # a killed build must not leave workers writing shards into the folder
    _WORKER["world"], _WORKER["seed"] = make_world(config), seed


def _build_shard(task: tuple[str, int, int]) -> int:
    path, start, stop = task
    world, seed = _WORKER["world"], _WORKER["seed"]
    write_shard(Path(path), (make_item(world, seed, i) for i in range(start, stop)))
    return stop - start


def build_world(config: WorldConfig, out: Path, n: int, workers: int = 2, seed: int = 0,
                progress: bool = True) -> dict:
    """Build items 0..n-1 into `out`, skipping finished shards; returns the manifest (_world.json)."""
    if n < 1:
        raise CrayonboxError(f"-n must be at least 1, got {n}")
    out = Path(out)
    check_output_folder(out, WORLD_KIND, MANIFEST)  # someone's shards are never overwritten or deleted
    world = make_world(config)  # validates pools and keys before any worker starts
    manifest = {
        "generator": "crayonbox world build", "world_version": WORLD_VERSION, "seed": seed, "n": n,
        "config": _jsonable(config),
        "distinct_emoji": len({e.seq for item in world.items.values() for e in item.variants.values()}),
        "distinct_concepts": len(world.items), "dropped_for_invisible_skin": world.dropped,
    }
    _check_manifest(claim_output_folder(out, WORLD_KIND, MANIFEST), manifest)
    remove_stale_temporaries(out)  # a killed build's half-written shards; their shards are redone
    for stale in out.iterdir():  # leftovers of a killed write; their shards are redone below
        if TMP_FILE.match(stale.name):
            stale.unlink()
    size = config.shard_size
    tasks = [(str(out / f"{s:05d}.tar"), s * size, min(n, (s + 1) * size))
             for s in range((n + size - 1) // size)]
    todo = [t for t in tasks if not _shard_done(Path(t[0]), t[2] - t[1])]
    bar = tqdm(total=n, initial=n - sum(t[2] - t[1] for t in todo), unit="item", desc="world build",
               disable=not progress)
    if workers <= 1:
        _WORKER["world"], _WORKER["seed"] = world, seed
        for task in todo:
            bar.update(_build_shard(task))
    else:
        with mp.get_context().Pool(workers, initializer=_init_worker, initargs=(config, seed)) as pool:
            for count in pool.imap_unordered(_build_shard, todo):
                bar.update(count)
            pool.close()  # let workers exit cleanly (the with-block alone would terminate them)
            pool.join()
    bar.close()
    manifest["shards"] = len(tasks)
    return manifest

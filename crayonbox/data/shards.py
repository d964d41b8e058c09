"""The one reader and writer for image–caption shards: img2dataset's webdataset layout.

A folder holds `{NNNNN}.tar` shards; each tar holds members `NNNNNNNNN.{png|jpg}`, `NNNNNNNNN.txt` (caption,
UTF-8) and `NNNNNNNNN.json` (metadata), grouped by the 9-digit key; next to each tar a `{NNNNN}.parquet` has
one row per item: key, caption, width, height, status, the other scalar metadata fields, and our ground truth
flattened into `world_*` columns. Our emoji world and users' real img2dataset folders read the same way;
malformed members are counted in a ProblemLog and skipped, never raised.

Ground truth of the emoji world lives under `meta["world"]` (absent in real data):

    {
      "version": 1, "seed": int, "index": int,          # item i of the world built with this seed
      "size": int,                                       # image side in px
      "background": {"kind": "plain|gradient|stripes|checks|dots", "colour": str,
                     "colour2": str | null},              # second colour of a gradient
      "objects": [{                                      # in caption order; "position" says where
          "emoji": "👩🏾", "codepoints": "1F469 1F3FE",
          "name": "woman: medium-dark skin tone",        # English CLDR name
          "item": "person",                              # the config pool entry it was drawn as
          "category": "person|attire|animal|food|object|…",
          "gender": "woman|man|neutral|none",            # none = not a person
          "skin_tone": 1..5 | null,                      # null = yellow default emoji, or not a person
          "attire": "sari" | "hijab" | … | null,         # clothing item, or attire the person emoji wears
          "position": "left|centre|right", "size": "small|medium|large",
          "scale": float,                                # sprite box side / image side
          "bbox": [x0, y0, x1, y1],                      # px of the pasted sprite
          "paired_with": int | null,                     # object this person wears / stands with
          "relation": "wearing" | "with" | null}],
      "source": str, "source_kind": "cc3m|cc12m|yfcc|plain",
      "caption_language": "en|hi|es|zh|ar",              # the language the caption was written in
      "caption_style": "short|long|empty",
      "captions_all": {"en": str, "hi": str, …},         # the same caption in every language, names kept
      "names": [{"object": int, "name": "Priya", "culture": "south_asian", "shown_as": "actor"}],
      "title": str | null, "description": str | null     # yfcc-like sources only
    }
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from crayonbox.config import atomic_write
from crayonbox.errors import CrayonboxError

IMAGE_EXTS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}
BASE_COLUMNS = ("key", "caption", "width", "height", "status")
# Bounds on what one member may cost, since shards come from anywhere: a 1 MB gzip can declare a 1 GiB member,
# and a 1 kB PNG can claim 60000×60000 pixels. Past these, the member is a counted problem, never read.
MAX_IMAGE_BYTES = 64 << 20
MAX_TEXT_BYTES = 1 << 20  # a caption or metadata JSON
MAX_IMAGE_PIXELS = 8192 * 8192


@dataclass
class Item:
    """One image–caption pair as stored in a shard."""

    key: str  # 9-digit img2dataset key, e.g. "000000123"
    image: bytes | None  # encoded PNG/JPEG bytes (None when not read or missing)
    image_ext: str  # "png" or "jpg"
    caption: str  # contents of the .txt
    meta: dict = field(default_factory=dict)  # contents of the .json; ground truth under meta["world"]


class ProblemLog:
    """Counts and a few examples of what was wrong in a folder: bad shards, members, captions."""

    def __init__(self, max_examples: int = 5):
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, where: str, detail: str = "") -> None:
        """Record one problem of `kind` (e.g. "bad_json") at `where` (e.g. "00003.tar:000003042")."""
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.max_examples:
            examples.append(f"{where}: {detail}" if detail else where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def to_dict(self) -> dict:
        """{"total", "counts", "examples"} for JSON reports."""
        return {"total": self.total, "counts": dict(self.counts), "examples": self.examples}

    def summary(self) -> str:
        """One line per problem kind, or 'no problems'."""
        if not self:
            return "no problems"
        return "\n".join(f"{kind}: {n} (e.g. {self.examples[kind][0]})"
                         for kind, n in self.counts.most_common())


def flatten(prefix: str, value, out: dict) -> dict:
    """Nested dicts → `prefix_key` columns; lists of dicts → `prefix0_key`; other lists → JSON strings."""
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}_{key}", inner, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, inner in enumerate(value):
            flatten(f"{prefix}{i}", inner, out)
    elif isinstance(value, list | tuple):
        out[prefix] = json.dumps(value, ensure_ascii=False)
    else:
        out[prefix] = value
    return out


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels than MAX_IMAGE_PIXELS (a decompression bomb, or just huge)."""


def _open_image(data: bytes) -> Image.Image:
    """Open encoded bytes (header only), refusing images over MAX_IMAGE_PIXELS before any pixel is decoded.
    Raises ImageTooLarge, or OSError / ValueError / SyntaxError for bytes that are not an image."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it, then decodes anyway: make that an error too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(str(e).split(",")[0]) from None  # PIL appends a DOS-attack remark
    if im.width * im.height > MAX_IMAGE_PIXELS:
        im.close()
        raise ImageTooLarge(f"{im.width}x{im.height} pixels is over the limit of {MAX_IMAGE_PIXELS}")
    return im


def image_header(data: bytes) -> tuple[int, int, str]:
    """(width, height, lower-case format) from an image's header, without decoding pixels; raises
    CrayonboxError (a bounded one-line reason) for bytes that are not a usable image."""
    try:
        with _open_image(data) as im:
            return im.width, im.height, (im.format or "?").lower()
    except (OSError, ValueError, SyntaxError) as e:
        message = str(e).split(" <")[0]  # drop "<_io.BytesIO object at 0x…>"
        raise CrayonboxError(f"{type(e).__name__}: {message}"[:160]) from None


def _image_size(item: Item) -> tuple[int | None, int | None]:
    if "width" in item.meta and "height" in item.meta:
        return item.meta["width"], item.meta["height"]
    try:
        return image_header(item.image or b"")[:2]
    except CrayonboxError:
        return None, None


def metadata_row(item: Item) -> dict:
    """The parquet row of an item: base columns, other scalar meta fields, `world_*` ground truth."""
    width, height = _image_size(item)
    row = {"key": item.key, "caption": item.caption, "width": width, "height": height,
           "status": item.meta.get("status", "success")}
    for key, value in item.meta.items():
        scalar = value is None or isinstance(value, str | int | float | bool)
        if key not in row and key != "world" and scalar:
            row[key] = value
    if isinstance(item.meta.get("world"), dict):
        flatten("world", item.meta["world"], row)
    return row


def _rows_to_table(rows: list[dict]) -> pa.Table:
    # from_pylist infers columns from the first row only; objects vary per row, so take the union
    columns = list(dict.fromkeys(k for row in rows for k in row)) or list(BASE_COLUMNS)
    return pa.table({c: _column([row.get(c) for row in rows]) for c in columns})


def _column(values: list) -> pa.Array:
    """One metadata column. Items of one shard may disagree on a field's type (a user's `status` that is a
    list in one item and text in the next, an integer past 64 bits): such a column keeps every value as JSON
    text rather than failing the shard, as `_unify_types` does between shards."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _as_text(values)


def _as_text(values: list) -> pa.Array:
    """A column of mixed types as text: strings and nulls kept, every other value as its JSON."""
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values],
                    pa.string())


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: same items → same bytes
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, items: Iterable[Item]) -> None:
    """Write `path` (".../00000.tar") and its .parquet, each atomically. A reader never sees a half-written
    shard; the tar is replaced last, so its presence means done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with atomic_write(path, fsync=True) as tmp_tar:
        with tarfile.open(tmp_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for item in items:
                if item.image is not None:
                    _tar_member(tar, f"{item.key}.{item.image_ext}", item.image)
                _tar_member(tar, f"{item.key}.txt", item.caption.encode("utf-8"))
                meta = {"key": item.key, "caption": item.caption, **item.meta}
                _tar_member(tar, f"{item.key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                rows.append(metadata_row(item))
        with atomic_write(path.with_suffix(".parquet")) as tmp_parquet:
            pq.write_table(_rows_to_table(rows), tmp_parquet)


def list_shards(folder: Path) -> list[Path]:
    """The finished `*.tar` shards of a folder, sorted (tmp files of an interrupted write are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CrayonboxError(f"not a folder of shards: {folder}")
    return sorted(p for p in folder.glob("*.tar") if p.is_file())


def _split_name(name: str) -> tuple[str, str]:
    """webdataset convention: the key is everything before the first dot of the base name."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), (ext.lower() if dot else "")


def _make_item(key: str, parts: dict, where: str, problems: ProblemLog, with_images: bool) -> Item:
    meta: dict = {}
    if "json" in parts:
        try:
            meta = json.loads(parts["json"].decode("utf-8"))
            if not isinstance(meta, dict):
                problems.add("bad_json", where, f"expected an object, got {type(meta).__name__}")
                meta = {}
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.add("bad_json", where, str(e)[:120])
    if "txt" in parts:
        try:
            caption = parts["txt"].decode("utf-8")
        except UnicodeDecodeError:
            problems.add("caption_not_utf8", where)
            caption = parts["txt"].decode("utf-8", errors="replace")
    else:
        problems.add("missing_caption", where)
        caption = meta.get("caption") if isinstance(meta.get("caption"), str) else ""
    ext = next((e for e in parts if e in IMAGE_EXTS), None)
    if ext is None:
        problems.add("missing_image", where)
    elif parts[ext] == b"" and with_images:
        problems.add("empty_image", where)
    image = (parts[ext] or None) if (ext and with_images) else None
    return Item(key, image, IMAGE_EXTS.get(ext or "", ""), caption, meta)


def iter_shard(path: Path, with_images: bool = True, problems: ProblemLog | None = None) -> Iterator[Item]:
    """Items of one tar shard in stored order; a corrupt or truncated tar ends that shard with a problem."""
    problems = problems if problems is not None else ProblemLog()
    seen: set[str] = set()
    key, parts = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:  # streaming: one pass, members read in order
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = _split_name(member.name)
                if member_key != key:
                    if key is not None:
                        yield _make_item(key, parts, f"{path.name}:{key}", problems, with_images)
                    if member_key in seen:
                        problems.add("duplicate_key", f"{path.name}:{member_key}")
                    key, parts = member_key, {}
                    seen.add(key)
                if ext in IMAGE_EXTS and not with_images:
                    parts[ext] = b"" if member.size == 0 else None  # presence only; bytes not read
                elif ext in IMAGE_EXTS or ext in ("txt", "json"):
                    limit = MAX_IMAGE_BYTES if ext in IMAGE_EXTS else MAX_TEXT_BYTES
                    if member.size > limit:  # the header's size: checked before a byte is read
                        problems.add("member_too_large", f"{path.name}:{member.name}",
                                     f"{member.size} bytes, over the limit of {limit}")
                        continue
                    parts[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:  # zlib: r|* also opens .tar.gz
        problems.add("corrupt_shard", path.name, f"{type(e).__name__}: {e}"[:160])
        return  # the pending item may be cut off: drop it rather than yield half an item
    if key is not None:
        yield _make_item(key, parts, f"{path.name}:{key}", problems, with_images)


def iter_items(folder: Path, with_images: bool = True, problems: ProblemLog | None = None) -> Iterator[Item]:
    """Every item of every shard of `folder`, in shard and key order; problems go to `problems`."""
    for shard in list_shards(folder):
        yield from iter_shard(shard, with_images, problems)


def decode_image(item: Item) -> Image.Image:
    """The item's image as an RGB PIL image; a CrayonboxError names the key when it cannot be decoded."""
    if not item.image:
        raise CrayonboxError(f"item {item.key} has no image")
    try:
        with _open_image(item.image) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        message = str(e).split(" <")[0]
        raise CrayonboxError(f"item {item.key}: image cannot be decoded ({message})"[:200]) from None


def read_metadata(folder: Path, problems: ProblemLog | None = None) -> pa.Table:
    """All shards' parquet rows as one table. A shard with a missing or unreadable parquet is read from its
    tar instead (no image bytes), so the table always covers every readable item."""
    problems = problems if problems is not None else ProblemLog()
    tables = []
    for shard in list_shards(folder):
        parquet = shard.with_suffix(".parquet")
        try:
            tables.append(pq.read_table(parquet))
            continue
        except FileNotFoundError:
            problems.add("missing_parquet", parquet.name)
        except (pa.ArrowException, OSError) as e:
            problems.add("bad_parquet", parquet.name, str(e)[:120])
        rows = [metadata_row(item) for item in iter_shard(shard, with_images=False, problems=problems)]
        tables.append(_rows_to_table(rows))
    if not tables:
        return _rows_to_table([])
    return pa.concat_tables(_unify_types(tables), promote_options="permissive")


def _unify_types(tables: list[pa.Table]) -> list[pa.Table]:
    """Cast a column to string in every table where shards disagree on its type beyond what Arrow can
    promote (e.g. a user's `exif` that is a string in one shard and a number in another)."""
    types: dict[str, set] = {}
    for table in tables:
        for f in table.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    mixed = {name for name, seen in types.items()
             if len(seen) > 1 and not all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in seen)}
    if not mixed:
        return tables
    out = []
    for table in tables:
        for name in mixed & set(table.column_names):
            index = table.column_names.index(name)
            # as `_column` does inside one shard (Arrow cannot cast a list or a struct to text)
            table = table.set_column(index, name, _as_text(table.column(name).to_pylist()))
        out.append(table)
    return out

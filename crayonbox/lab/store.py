"""A lab run on disk: one SQLite database (WAL) with a row per image, and the images as content-addressed
PNGs.

    RUN/
      lab.sqlite            images, measurements (cached per image hash), features, and JSON records
      images/ab/cdef….png   a PNG is named by the sha256 of its bytes, so one picture is stored once
      metrics.json          written by `crayonbox lab measure`

Why it survives `kill -9` with nothing lost or duplicated: a PNG is written first (tmp file + os.replace),
then its row is inserted inside a transaction, and rows are unique on (prompt, input mode, sampler settings,
seed). A kill between the two leaves only an orphan PNG that the resumed probe rewrites byte for byte; a kill
inside a transaction rolls it back whole. WAL with synchronous=NORMAL and un-fsynced PNGs are durable against
a killed process; a power cut could lose the last images, which `crayonbox lab probe --verify` finds and
redraws.

A run belongs to one model: `bind_model` records the model's hash at creation and refuses any other.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crayonbox.config import atomic_write
from crayonbox.errors import CrayonboxError
from crayonbox.outdir import claim_output_folder
from crayonbox.sampler_settings import canonical, sampler_fields, sampler_names, sampler_type

DB_NAME = "lab.sqlite"
RUN_KIND = "lab run"  # the kind of output folder (crayonbox.outdir)
IMAGES_DIR = "images"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,            -- raw prompt as typed
    input_mode TEXT NOT NULL,        -- normalised | unconditional-ids
    family TEXT NOT NULL,
    normalized TEXT NOT NULL,        -- what the BPE saw
    token_ids TEXT NOT NULL,         -- JSON: conditional ids, <s> … </s> (padding left out)
    uncond_ids TEXT NOT NULL,        -- JSON: unconditional ids (padding left out)
{sampler_columns}
    settings TEXT NOT NULL,          -- canonical JSON of the sampler settings
    seed INTEGER NOT NULL,
    image_index INTEGER NOT NULL,    -- seed = base seed + image_index
    model_hash TEXT NOT NULL,
    sha256 TEXT NOT NULL,            -- of the PNG bytes; the file is images/<sha[:2]>/<sha[2:]>.png
    path TEXT NOT NULL,              -- relative to the run folder
    image_tokens TEXT NOT NULL,      -- JSON: the VQGAN codes the decoder drew
    created REAL NOT NULL,
    UNIQUE (prompt, input_mode, settings, seed)
);
CREATE INDEX IF NOT EXISTS images_sha ON images (sha256);
CREATE TABLE IF NOT EXISTS labels (
    sha256 TEXT NOT NULL, instrument TEXT NOT NULL, attribute TEXT NOT NULL, label TEXT NOT NULL,
    PRIMARY KEY (sha256, instrument, attribute)
);
CREATE TABLE IF NOT EXISTS features (
    sha256 TEXT NOT NULL, extractor TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (sha256, extractor)
);
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL);
""".replace("{sampler_columns}", "\n".join(  # one column per SamplingSettings field, so a new knob is stored
    f"    {f.name} {'INTEGER' if sampler_type(f) is int else 'REAL'} NOT NULL," for f in sampler_fields()))


def settings_key(*values: float | int, **named: float | int) -> str:
    """Canonical JSON of sampler settings (every `SamplingSettings` field, as its declared type, positionally
    in field order or by name), so 10 and 10.0 are the same configuration. Not validated: a key only names
    settings that were validated when drawn."""
    given = {**dict(zip(sampler_names(), values, strict=False)), **named}
    if len(values) > len(sampler_names()) or set(given) != set(sampler_names()):
        raise TypeError(f"settings_key needs exactly the sampler settings {sampler_names()} (got {sorted(given)})")
    return json.dumps(canonical(given), sort_keys=True)


@dataclass
class ImageRecord:
    """One probed image: everything needed to explain and reproduce it."""

    prompt: str
    input_mode: str
    family: str
    normalized: str
    token_ids: list[int]
    uncond_ids: list[int]
    sampler: dict[str, float | int]  # every SamplingSettings field (stored as one column each)
    seed: int
    image_index: int
    model_hash: str
    sha256: str
    path: str
    image_tokens: list[int]

    @property
    def settings(self) -> str:
        """Canonical JSON of the sampler settings (part of the unique key)."""
        return settings_key(**self.sampler)

    @property
    def condition_scale(self) -> float:
        """The guidance scale: the lab's dose axis."""
        return float(self.sampler["condition_scale"])

    @property
    def prompt_key(self) -> str:
        """Same as PromptSpec.key: input mode and prompt."""
        return f"{self.input_mode}:{self.prompt}"

    @property
    def unique_key(self) -> tuple[str, str, str, int]:
        """(prompt, input mode, settings, seed): what makes a row unique."""
        return (self.prompt, self.input_mode, self.settings, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a flat dict (the sampler's knobs in place of `sampler`), in the table's column order."""
        data = asdict(self)
        sampler = data.pop("sampler")
        return {name: sampler[name] if name in sampler else data[name] for name in _COLUMNS}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ImageRecord:
        """The inverse of to_dict."""
        data = {k: v for k, v in row.items() if k not in sampler_names()}
        return cls(**data, sampler={name: row[name] for name in sampler_names()})


_JSON_FIELDS = {"token_ids", "uncond_ids", "image_tokens"}
_COLUMNS = [name for f in fields(ImageRecord) for name in (sampler_names() if f.name == "sampler" else [f.name])]


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding used for every stored image (deterministic for given pixels and Pillow version)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def content_path(sha: str) -> str:
    """Relative path of the PNG with this sha256: images/ab/cdef….png."""
    return f"{IMAGES_DIR}/{sha[:2]}/{sha[2:]}.png"


def write_png(folder: Path, image: Image.Image) -> tuple[str, str]:
    """Store an image content-addressed under `folder`; returns (sha256, relative path). Atomic and
    idempotent: an existing file with this hash is left alone (same bytes by construction)."""
    data = png_bytes(image)
    sha = hashlib.sha256(data).hexdigest()
    rel = content_path(sha)
    path = Path(folder) / rel
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # no fsync: a killed process loses nothing already written, and fsync per image would cost more than
        # drawing it
        with atomic_write(path) as tmp:
            tmp.write_bytes(data)
    return sha, rel


class RunStore:
    """The SQLite side of a run folder. Open with `RunStore.open(folder)` (existing run) or
    `RunStore.create(folder)` (new or existing run)."""

    def __init__(self, folder: Path, connection: sqlite3.Connection):
        self.folder = Path(folder)
        self.db = connection

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, folder: str | Path) -> RunStore:
        """Open a run folder for writing, creating it when absent. Refuses a non-empty folder that is not a
        run, so a typo in --out never writes into (or next to) someone's files."""

        return cls._connect(claim_output_folder(folder, RUN_KIND, DB_NAME))

    @classmethod
    def open(cls, folder: str | Path) -> RunStore:
        """Open an existing run folder."""
        folder = Path(folder)
        if not (folder / DB_NAME).exists():
            raise CrayonboxError(f"{folder} is not a lab run (no {DB_NAME}); make one with "
                                 f"`crayonbox lab probe --out {folder}`")
        return cls._connect(folder)

    @classmethod
    def _connect(cls, folder: Path) -> RunStore:
        path = folder / DB_NAME
        db = None
        try:
            db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
            # Check whose database this is before changing anything in it (WAL mode rewrites its header).
            version = _schema_version(db, path)
            if version is not None and version > SCHEMA_VERSION:
                raise CrayonboxError(f"{folder} was written by a newer crayonbox (lab schema {version}); upgrade")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if version is None:  # a new database: tables and marker commit together, never one without the other
                db.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nINSERT OR REPLACE INTO meta (key, value) "
                                 f"VALUES ('schema_version', '{SCHEMA_VERSION}');\nCOMMIT;")
            else:
                db.executescript(SCHEMA)  # tables added by later versions of the same schema
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            raise CrayonboxError(f"{path} is not a readable lab database ({e})") from None
        except CrayonboxError:
            db.close()
            raise
        return cls(folder, db)

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta and records
    def get_meta(self, key: str) -> str | None:
        """A run-level string (model hash, schema version…), or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Set a run-level string."""
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def bind_model(self, model_hash: str, text_hash: str, model_dir: str) -> None:
        """Record the run's model, or refuse when the run was made with another one (nothing is written)."""
        known = self.get_meta("model_hash")
        if known is None:
            with self.transaction():
                self.set_meta("model_hash", model_hash)
                self.set_meta("text_hash", text_hash)
                self.set_meta("model_dir", model_dir)
            return
        if known != model_hash or self.get_meta("text_hash") != text_hash:
            raise CrayonboxError(
                f"{self.folder} holds a run of another model ({self.get_meta('model_dir')}, hash "
                f"{known[:12]}…); this model ({model_dir}) hashes to {model_hash[:12]}…. Use a new --out "
                "folder: a run never mixes models, and nothing stored was changed")

    def put_record(self, key: str, value: Any) -> None:
        """Store a JSON value (validation matrices, reference counts, probe plans) under `key`."""
        self.db.execute("INSERT OR REPLACE INTO records (key, value, created) VALUES (?, ?, ?)",
                        (key, json.dumps(value, ensure_ascii=False), time.time()))

    def get_record(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under `key`, or `default`."""
        row = self.db.execute("SELECT value FROM records WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def record_keys(self, prefix: str) -> list[str]:
        """Keys of the records starting with `prefix`, sorted."""
        rows = self.db.execute("SELECT key FROM records WHERE key LIKE ? ORDER BY key", (prefix + "%",))
        return [r[0] for r in rows]

    def transaction(self) -> _Transaction:
        """`with store.transaction():` — all statements inside commit together or not at all."""
        return _Transaction(self.db)

    # ------------------------------------------------------------------ images
    def existing_keys(self) -> set[tuple[str, str, str, int]]:
        """(prompt, input_mode, settings, seed) of every stored image: what a resumed probe skips."""
        rows = self.db.execute("SELECT prompt, input_mode, settings, seed FROM images")
        return {(p, m, s, int(seed)) for p, m, s, seed in rows}

    def add_images(self, records: Iterable[ImageRecord]) -> int:
        """Insert rows in one transaction; a row that already exists is kept as it is. Returns rows added.
        Every PNG must already be on disk (write_png first)."""
        added = 0
        with self.transaction():
            for r in records:
                if not (self.folder / r.path).exists():
                    raise CrayonboxError(f"refusing to record {r.path}: the PNG is not on disk")
                values = [json.dumps(v) if k in _JSON_FIELDS else v for k, v in r.to_dict().items()]
                cur = self.db.execute(
                    f"INSERT OR IGNORE INTO images ({', '.join(_COLUMNS)}, settings, created) "
                    f"VALUES ({', '.join('?' * len(_COLUMNS))}, ?, ?)", [*values, r.settings, time.time()])
                added += cur.rowcount
        return added

    def drop_rows_without_png(self) -> int:
        """Delete rows whose PNG is missing (a power cut, a hand-deleted file) so the probe redraws them;
        returns how many. Rows with their PNG are never touched."""
        rows = self.db.execute("SELECT id, path FROM images").fetchall()
        broken = [(i,) for i, rel in rows if not (self.folder / rel).exists()]
        with self.transaction():
            self.db.executemany("DELETE FROM images WHERE id = ?", broken)
        return len(broken)

    def images(self) -> list[ImageRecord]:
        """Every image row, in insertion order."""
        rows = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM images ORDER BY id")
        return [ImageRecord.from_dict({k: json.loads(v) if k in _JSON_FIELDS else v
                                       for k, v in zip(_COLUMNS, row, strict=True)}) for row in rows]

    def count_images(self) -> int:
        """Number of image rows."""
        return int(self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def load_image(self, rel_path: str) -> Image.Image:
        """An image of the run as RGB PIL; a missing or unreadable file is an error naming it."""
        path = self.folder / rel_path
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, ValueError) as e:
            raise CrayonboxError(f"cannot read {path} ({e}); the run folder is damaged — re-run "
                                 "`crayonbox lab probe` with the same arguments to restore it") from None

    # ------------------------------------------------------------------ measurement caches
    def labels(self, instrument: str) -> dict[str, dict[str, str]]:
        """sha256 → {attribute: label} cached for this instrument (its name includes its version)."""
        out: dict[str, dict[str, str]] = {}
        for sha, attribute, label in self.db.execute(
                "SELECT sha256, attribute, label FROM labels WHERE instrument = ?", (instrument,)):
            out.setdefault(sha, {})[attribute] = label
        return out

    def add_labels(self, instrument: str, labels: dict[str, dict[str, str]]) -> None:
        """Cache labels (sha256 → {attribute: label}) of an instrument, in one transaction."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO labels (sha256, instrument, attribute, label) "
                                "VALUES (?, ?, ?, ?)",
                                [(sha, instrument, a, lab) for sha, d in labels.items()
                                 for a, lab in d.items()])

    def features(self, extractor: str) -> dict[str, np.ndarray]:
        """sha256 → float32 feature vector cached for this extractor."""
        rows = self.db.execute("SELECT sha256, vector FROM features WHERE extractor = ?", (extractor,))
        return {sha: np.frombuffer(blob, dtype=np.float32) for sha, blob in rows}

    def add_features(self, extractor: str, vectors: dict[str, np.ndarray]) -> None:
        """Cache feature vectors (sha256 → vector) of an extractor, in one transaction."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO features (sha256, extractor, vector) "
                                "VALUES (?, ?, ?)",
                                [(sha, extractor, np.asarray(v, dtype=np.float32).tobytes())
                                 for sha, v in vectors.items()])

    def iter_missing(self, shas: Iterable[str], have: dict[str, Any]) -> Iterator[str]:
        """Hashes in `shas` (deduplicated, in order) that `have` lacks."""
        seen: set[str] = set()
        for sha in shas:
            if sha not in have and sha not in seen:
                seen.add(sha)
                yield sha


def _schema_version(db: sqlite3.Connection, path: Path) -> int | None:
    """The lab schema version of the database, None when it is empty (new); an error for a database of
    something else, which must never get the lab's tables added to it."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables \
        else None
    try:
        return int(row[0]) if row else _not_ours(path)
    except (TypeError, ValueError):
        return _not_ours(path)


def _not_ours(path: Path) -> int:
    raise CrayonboxError(f"{path} is an SQLite database but not a crayonbox lab run (no lab schema marker); "
                         "nothing was changed: choose another --out folder")


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

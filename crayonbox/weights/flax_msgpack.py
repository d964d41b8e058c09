"""Read Flax's `flax_model.msgpack` (what `flax.serialization.to_bytes` writes) with `msgpack` alone.

The format (flax/serialization.py): the parameter tree is a msgpack map of maps; every array leaf is a
msgpack ExtType with code 1 whose payload is itself msgpack: `(shape, dtype name, raw C-order bytes)`.
Arrays over 1 GiB are split into a map `{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}`
because a msgpack object may not exceed 2 GiB. Numpy scalars use code 3, Python complex numbers code 2.

No jax or flax at run time: a user converting official weights needs neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np
from tqdm import tqdm

from crayonbox.errors import CrayonboxError

EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3
CHUNKED = "__msgpack_chunked_array__"


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 (not a numpy dtype) is the top half of a float32: widening it is exact."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _array_from_payload(payload: bytes) -> np.ndarray:
    shape, dtype_name, buffer = msgpack.unpackb(payload, raw=True)
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
    if name == "bfloat16":
        return _bfloat16_to_float32(np.frombuffer(buffer, dtype=np.uint16).reshape(shape))
    # copy(): frombuffer views the immutable payload, and torch wants writable arrays.
    return np.frombuffer(buffer, dtype=np.dtype(name)).reshape(shape).copy()


def _ext_hook(code: int, payload: bytes) -> Any:
    if code == EXT_NDARRAY:
        return _array_from_payload(payload)
    if code == EXT_NPSCALAR:
        return _array_from_payload(payload)[()]
    if code == EXT_COMPLEX:
        real, imag = msgpack.unpackb(payload)
        return complex(real, imag)
    raise ValueError(f"unknown msgpack extension type {code}")


def _unchunk(tree: Any) -> Any:
    """Reassemble arrays that flax split into chunks (only arrays over 1 GiB are ever split)."""
    if not isinstance(tree, dict):
        return tree
    if tree.get(CHUNKED):
        shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
        chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        return np.concatenate(chunks).reshape(shape)
    return {key: _unchunk(value) for key, value in tree.items()}


class _CountingReader:
    """A file wrapper that advances a progress bar as msgpack reads it."""

    def __init__(self, f: BinaryIO, bar: tqdm):
        self.f, self.bar = f, bar

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.bar.update(len(data))
        return data


def _has_more(unpacker: msgpack.Unpacker) -> bool:
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        return False
    except (ValueError, msgpack.UnpackException):
        return True
    return True


def read_flax_msgpack(path: str | Path) -> dict[str, Any]:
    """Load a Flax msgpack checkpoint as a nested dict of numpy arrays (bfloat16 widened to float32).

    The file is streamed: memory holds the arrays plus the one being decoded, not a copy of the whole file.
    """
    path = Path(path)
    if not path.is_file():
        raise CrayonboxError(f"missing file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CrayonboxError(f"{path} is empty: the download or copy did not finish; fetch it again")
    with (
        open(path, "rb") as f,
        tqdm(
            total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", disable=None, leave=False
        ) as bar,
    ):
        if f.read(64).startswith(b"version https://git-lfs"):
            raise CrayonboxError(
                f"{path} is a git-lfs pointer, not the weights: run `git lfs pull` in its repo"
            )
        f.seek(0)
        # max_buffer_size=0 lifts msgpack's 100 MiB per-object limit (flax chunks arrays at 1 GiB).
        unpacker = msgpack.Unpacker(
            _CountingReader(f, bar),
            ext_hook=_ext_hook,
            raw=False,
            strict_map_key=False,
            max_buffer_size=0,
            read_size=1 << 20,
        )
        try:
            tree = unpacker.unpack()
        except msgpack.OutOfData:
            raise CrayonboxError(
                f"{path} ends early (truncated at {size} bytes); download it again"
            ) from None
        except (ValueError, msgpack.UnpackException, TypeError) as e:
            raise CrayonboxError(
                f"{path} is not a readable Flax msgpack checkpoint ({e}); the file is "
                "corrupt: download it again"
            ) from None
        if _has_more(unpacker):
            raise CrayonboxError(f"{path} has data after the parameter tree; the file is corrupt")
    if not isinstance(tree, dict):
        raise CrayonboxError(f"{path} holds a {type(tree).__name__}, not a Flax parameter tree")
    return _unchunk(tree)


def flatten(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Yield (path, leaf) for every leaf of a nested dict, in file order."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value
